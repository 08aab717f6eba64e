"""The Hessian spectrum of a model: sketched HVPs of its mean loss over batches, then Lanczos.

``hessian_spectrum`` builds a ``GradientSketcher``; ``sketcher_spectrum`` uses an existing one;
both end in ``spectrum.operator_spectrum``. Its own module so that ``evolution`` (spectra over
training) and ``api`` (which only re-exports) both import it.
"""

from __future__ import annotations

import itertools

from .spectrum import SpectrumResult, operator_spectrum

__all__ = ["hessian_spectrum", "sketcher_spectrum", "take_batches"]


def take_batches(batches, num_batches: int | None) -> list:
    """The first ``num_batches`` batches of an iterable (all of them for ``None``), as a list."""
    from sketchcore import InvalidOptionError

    if num_batches is not None and (isinstance(num_batches, bool)
                                    or not isinstance(num_batches, int) or num_batches < 1):
        raise InvalidOptionError(f"num_batches must be None or a positive integer, got "
                                 f"{num_batches!r}.")
    out = list(batches if num_batches is None else itertools.islice(batches, num_batches))
    if not out:
        raise InvalidOptionError("no batches: pass a list (or iterable) with at least one batch.")
    return out


def sketcher_spectrum(gs, batches, *, k: int = 10, num_batches: int | None = None,
                      method: str = "lanczos", max_iter: int | None = None, tol: float = 1e-6,
                      seed: int = 0, outlier_threshold: float = 0.2, alignment: bool = True,
                      return_vectors: bool = False, converge_on: str = "both",
                      progress: bool = False, meta: dict | None = None) -> SpectrumResult:
    """``hessian_spectrum`` for an existing ``sketchcore.gradients.GradientSketcher``."""
    batches = take_batches(batches, num_batches)
    grad = gs.mean_gradient_sketch(batches) if alignment else None
    meta = {**_describe(gs), "num_batches": len(batches), "loss": gs.loss(batches),
            "seed": seed, **(meta or {})}
    return operator_spectrum(
        gs.hvp_operator(batches), gs.out_dim, k=min(k, gs.out_dim), method=method,
        max_iter=max_iter, tol=tol, seed=seed, outlier_threshold=outlier_threshold,
        gradient=grad, return_vectors=return_vectors, num_params=gs.num_params, meta=meta,
        converge_on=converge_on, progress=progress,
    )


def hessian_spectrum(model, loss_fn, batches, *, sketch=None, k: int = 10,
                     num_batches: int | None = None, method: str = "lanczos",
                     max_iter: int | None = None, tol: float = 1e-6, seed: int = 0,
                     outlier_threshold: float = 0.2, alignment: bool = True,
                     return_vectors: bool = False, params=None, layout: str = "flat",
                     mode: str = "explicit", forward=None, converge_on: str = "both",
                     progress: bool = False) -> SpectrumResult:
    """Top-k / bottom-k eigenvalues of the Hessian of the mean loss over ``batches``.

    ``sketch``: ``dict(algo=..., out_dim=..., seed=...)`` (default ``affd``, ``D = 1024``,
    ``seed``), a ``sketchcore.Sketch`` built for N, or the string ``"none"`` for the unsketched
    operator (``D = N``; the Krylov basis then costs ``m * N`` floats). ``num_batches`` limits
    how many batches of ``batches`` the loss averages over. ``seed`` seeds the Lanczos start
    vector (and the sketch, when the dict has no ``seed``). ``params``/``layout``/``mode``/
    ``forward`` go to ``GradientSketcher``. ``alignment`` computes the gradient-outlier alignment.
    """
    from sketchcore.gradients import GradientSketcher

    if sketch is None:
        sketch = {"algo": "affd", "out_dim": 1024}
    if isinstance(sketch, str):
        if sketch != "none":
            from sketchcore import InvalidOptionError

            raise InvalidOptionError(f"sketch must be a dict, a sketchcore.Sketch or 'none', "
                                     f"got {sketch!r}.")
        sketch = None
    elif isinstance(sketch, dict):
        sketch = {"seed": seed, **sketch}
    described = sketch.describe() if hasattr(sketch, "describe") else sketch
    gs = GradientSketcher(model, loss_fn, sketch=sketch, params=params, layout=layout, mode=mode,
                          forward=forward)
    return sketcher_spectrum(gs, batches, k=k, num_batches=num_batches, method=method,
                             max_iter=max_iter, tol=tol, seed=seed,
                             outlier_threshold=outlier_threshold, alignment=alignment,
                             return_vectors=return_vectors, converge_on=converge_on,
                             progress=progress, meta={"sketch": described})


def _describe(gs) -> dict:
    return {"sketcher": repr(gs), "out_dim": gs.out_dim, "num_params": gs.num_params}
