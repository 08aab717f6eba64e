"""``ParamCache``: an operator's numpy parameters, their digest, and each array library's copy.

An operator draws its parameters once on the host; ``ParamCache`` moves them into a namespace and
device the first time a kernel asks and keeps them there, except for arrays that live inside a
trace, which only the backend owning them can recognize (``Backend.is_traced``).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .array_namespace import device_of, from_host
from .registry import registry

__all__ = ["ParamCache", "arrays_sha256", "host_memory_bytes"]


def host_memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def arrays_sha256(arrays: dict) -> str:
    """sha256 over named numpy arrays: for each name in sorted order, the name, the dtype (with
    its byte order), the shape and the raw bytes (C order). Equal digests: bit-identical arrays."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{len(name)}:{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _key(xp, like, dtype) -> tuple:
    return (id(xp), str(device_of(like)), str(dtype))


class ParamCache:
    """An operator's host (numpy) parameters, materialized per (namespace, device, dtype) once."""

    def __init__(self) -> None:
        self.host: dict[str, np.ndarray] = {}
        #: names of arrays computed from others (transposes, inverse permutations): kept, but not
        #: part of the map's identity, so building them later does not change ``sha256()``
        self.derived: set[str] = set()
        self._cache: dict[tuple, dict[str, object]] = {}
        self._sha256: str | None = None

    def add(self, name: str, array: np.ndarray, *, derived: bool = False) -> None:
        self.host[name] = array
        if derived:
            self.derived.add(name)
        else:
            self._sha256 = None

    def sha256(self) -> str:
        """Digest of the primary (not derived) host arrays (see ``arrays_sha256``); computed on
        first use and cached."""
        if self._sha256 is None:
            self._sha256 = arrays_sha256(
                {k: v for k, v in self.host.items() if k not in self.derived})
        return self._sha256

    def get(self, xp, like, name: str, *, index: bool = False):
        """``name`` as an array of ``xp`` on ``like``'s device; floats get ``like``'s dtype."""
        dtype = None if index else like.dtype
        return self.cached(
            xp, like, name,
            lambda: from_host(xp, self.host[name], device=device_of(like), dtype=dtype),
            dtype=dtype,
        )

    def cached(self, xp, like, name: str, build, *, dtype=...):
        """A derived array cached like a parameter; ``build()`` makes it on first use.

        Nothing is cached when ``like`` lives inside a trace (``jax.jit``/``grad`` tracers,
        ``torch.func`` transforms): what ``build()`` returns there belongs to that trace and must
        not leak into the next one. It is rebuilt per trace instead; entries cached outside a
        trace are used inside it as constants.
        """
        key = _key(xp, like, like.dtype if dtype is ... else dtype)
        slot = self._cache.get(key)
        if slot is not None and name in slot:
            return slot[name]
        value = build()
        if not registry().backend_for(like).is_traced(like):
            self._cache.setdefault(key, {})[name] = value
        return value

    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.host.values())
