"""``SpectrumResult`` and ``operator_spectrum``: extreme eigenvalues of an operator plus the
derived quantities (RNEG, outliers, gradient-outlier alignment), independent of any framework."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from sketchcore import InvalidOptionError, ShapeError

from .derived import count_outliers, gradient_alignment, outlier_ratios, rneg
from .lanczos import extreme_eigenpairs

__all__ = ["SpectrumResult", "operator_spectrum", "sketched_operator"]


@dataclass
class SpectrumResult:
    """Extreme Hessian eigenvalues (sketched or exact) and what the paper derives from them.

    ``top`` descending, ``bottom`` ascending; ``ratios[n] = top[n] / top[0]``; ``n_outliers``
    counts ``ratios > outlier_threshold`` (``outliers_saturated``: every returned top eigenvalue
    is an outlier, so ask for a larger ``k`` to see them all); ``alignment`` is the fraction of
    the (sketched) gradient's squared norm in the span of the outlier eigenvectors.
    ``krylov_nbytes`` is what the Krylov space held (``krylov_vectors`` float64 rows of length
    ``dim`` plus the small projected matrix); ``unsketched_krylov_nbytes`` what the same number
    of vectors would take in ``R^N``.
    """

    top: np.ndarray
    bottom: np.ndarray
    top_residuals: np.ndarray
    bottom_residuals: np.ndarray
    rneg: float
    ratios: np.ndarray
    n_outliers: int
    outlier_threshold: float
    outliers_saturated: bool
    alignment: float | None
    num_iter: int
    converged: bool
    method: str
    dim: int
    num_params: int | None
    krylov_nbytes: int
    krylov_vectors: int
    seconds: float
    meta: dict = field(default_factory=dict)
    top_vectors: np.ndarray | None = field(default=None, repr=False)
    bottom_vectors: np.ndarray | None = field(default=None, repr=False)

    @property
    def lambda_max(self) -> float:
        return float(self.top[0])

    @property
    def lambda_min(self) -> float:
        return float(self.bottom[0])

    @property
    def unsketched_krylov_nbytes(self) -> int | None:
        """Bytes of a float64 Krylov basis of the same size in parameter space (``R^N``)."""
        if self.num_params is None:
            return None
        return self.krylov_vectors * self.num_params * 8

    def to_dict(self) -> dict:
        """A JSON-ready record (no eigenvectors)."""
        d = asdict(self)
        d.pop("top_vectors")
        d.pop("bottom_vectors")
        for key, val in list(d.items()):
            if isinstance(val, np.ndarray):
                d[key] = [None if not math.isfinite(x) else float(x) for x in val.tolist()]
            elif isinstance(val, float) and not math.isfinite(val):
                d[key] = None
        d["lambda_max"] = self.lambda_max
        d["lambda_min"] = self.lambda_min
        d["unsketched_krylov_nbytes"] = self.unsketched_krylov_nbytes
        return d

    def summary(self) -> str:
        """A few human-readable lines."""
        fmt = lambda a: ", ".join(f"{x:.4g}" for x in a)  # noqa: E731
        lines = [
            f"top eigenvalues:    {fmt(self.top)}",
            f"bottom eigenvalues: {fmt(self.bottom)}",
            f"max Ritz residual:  {max(self.top_residuals.max(), self.bottom_residuals.max()):.3g}"
            f" ({self.method}, {self.num_iter} iterations, "
            f"{'converged' if self.converged else 'not converged'})",
            f"RNEG = {self.rneg:.4g}; outliers (R_n > {self.outlier_threshold}): {self.n_outliers}"
            + (" (all returned; raise k)" if self.outliers_saturated else ""),
        ]
        if self.alignment is not None:
            lines.append(f"gradient-outlier alignment: {self.alignment:.4g}")
        kb = self.krylov_nbytes / 2**20
        line = f"Krylov memory: {kb:.3g} MiB in R^{self.dim}"
        if self.unsketched_krylov_nbytes is not None and self.num_params != self.dim:
            mib = self.unsketched_krylov_nbytes / 2**20
            line += f" (unsketched, R^{self.num_params}: {mib:.3g} MiB)"
        lines.append(line)
        return "\n".join(lines)


def sketched_operator(hvp: Callable[[np.ndarray], np.ndarray], sketch) -> Callable:
    """``v -> Phi (H (Phi^T v))`` for an ``R^N`` operator ``hvp`` and a ``sketchcore.Sketch``.

    The ``N``-vectors exist only inside one call; nothing of length ``N`` is kept.
    """
    def matvec(v):
        x = np.asarray(sketch.transpose(np.asarray(v, dtype=np.float64)), dtype=np.float64)
        return np.asarray(sketch.apply(np.asarray(hvp(x), dtype=np.float64)), dtype=np.float64)

    return matvec


def operator_spectrum(
    matvec: Callable[[np.ndarray], np.ndarray],
    dim: int,
    *,
    k: int = 10,
    method: str = "lanczos",
    max_iter: int | None = None,
    tol: float = 1e-6,
    seed: int = 0,
    converge_on: str = "both",
    outlier_threshold: float = 0.2,
    gradient: np.ndarray | None = None,
    return_vectors: bool = False,
    num_params: int | None = None,
    meta: dict | None = None,
    progress: bool = False,
) -> SpectrumResult:
    """Top-k / bottom-k eigenvalues of a symmetric operator on ``R^dim`` and derived quantities.

    ``gradient`` (a ``(dim,)`` vector in the operator's space, e.g. the sketched mean gradient)
    turns on the gradient-outlier alignment. ``num_params`` (``N``) is recorded for the memory
    comparison when ``dim`` is a sketch dimension.
    """
    if not 0 < outlier_threshold < 1:
        raise InvalidOptionError(
            f"outlier_threshold must be in (0, 1), got {outlier_threshold!r}; the paper uses 0.2."
        )
    if gradient is not None:
        gradient = np.asarray(gradient, dtype=np.float64).reshape(-1)
        if gradient.size != dim:
            raise ShapeError(f"gradient has {gradient.size} entries; the operator acts on R^{dim}.")
    t0 = time.perf_counter()
    res = extreme_eigenpairs(
        matvec, dim, k, method=method, max_iter=max_iter, tol=tol, seed=seed,
        return_vectors=return_vectors or gradient is not None, converge_on=converge_on,
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    ratios = outlier_ratios(res.top)
    n_out = count_outliers(res.top, outlier_threshold)
    alignment = None
    if gradient is not None:
        alignment = gradient_alignment(gradient, res.top_vectors[:n_out])
    return SpectrumResult(
        top=res.top,
        bottom=res.bottom,
        top_residuals=res.top_residuals,
        bottom_residuals=res.bottom_residuals,
        rneg=rneg(res.top[0], res.bottom[0]),
        ratios=ratios,
        n_outliers=n_out,
        outlier_threshold=float(outlier_threshold),
        outliers_saturated=bool(n_out == res.top.size and res.top.size < dim),
        alignment=alignment,
        num_iter=res.num_iter,
        converged=res.converged,
        method=method,
        dim=int(dim),
        num_params=None if num_params is None else int(num_params),
        krylov_nbytes=res.krylov_nbytes,
        krylov_vectors=res.krylov_vectors,
        seconds=seconds,
        meta=dict(meta or {}),
        top_vectors=res.top_vectors if return_vectors else None,
        bottom_vectors=res.bottom_vectors if return_vectors else None,
    )
