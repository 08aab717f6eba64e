"""The one seam to array-api-compat: which namespace an array belongs to, its device, and moving
host (numpy) parameters into a namespace. No module of the core asks which library it is using;
what only a library knows (e.g. whether an array lives inside a trace) is a ``Backend`` method."""

from __future__ import annotations

__all__ = ["namespace_of", "device_of", "from_host", "default_float"]


def namespace_of(x):
    """The array-API namespace of ``x`` (array-api-compat wrapper or a native namespace)."""
    import array_api_compat

    try:
        return array_api_compat.array_namespace(x)
    except TypeError as err:
        raise TypeError(
            f"expected an array of an array-API library (numpy, torch, jax, cupy, ...), got "
            f"{type(x).__module__}.{type(x).__qualname__}; convert it with numpy.asarray first."
        ) from err


def device_of(x):
    """The device of ``x``, or None where the library cannot tell (e.g. inside a jax trace)."""
    import array_api_compat

    try:
        return array_api_compat.device(x)
    except Exception:  # noqa: BLE001 - tracers and lazy arrays have no concrete device
        return None


def from_host(xp, host, *, device=None, dtype=None):
    """Move a numpy array into namespace ``xp`` on ``device``, cast to ``dtype`` if given.

    The dtype is passed to ``asarray`` itself rather than cast afterwards: jax caches the
    conversion of a numpy array by identity, so a float64 parameter first converted while 64-bit
    types were off would otherwise come back float32-rounded once they are on."""
    kw = {} if dtype is None else {"dtype": dtype}
    a = xp.asarray(host, device=device, **kw) if device is not None else xp.asarray(host, **kw)
    if dtype is not None and a.dtype != dtype:
        a = xp.astype(a, dtype)
    return a


def default_float(xp):
    """The namespace's default real floating dtype (numpy: float64, torch and jax: float32)."""
    try:
        return xp.__array_namespace_info__().default_dtypes()["real floating"]
    except Exception:  # noqa: BLE001 - older namespaces
        return xp.asarray(0.0).dtype
