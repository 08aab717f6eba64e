"""Extreme eigenvalues of a linear operator by Lanczos or Arnoldi with full re-orthogonalization.

The operator is any callable ``v -> A v`` on ``R^dim``. Only ``dim``-length vectors are kept: the
Krylov basis is one ``(m + 1, dim)`` float64 array, the projected matrix is ``m x m``. Run on the
sketched HVP ``v -> Phi H Phi^T v`` in ``R^D``, a Krylov space of ``m`` vectors costs ``m * D``
floats, never ``m * N``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sketchcore import InvalidOptionError, ShapeError

__all__ = ["KrylovResult", "KrylovState", "extreme_eigenpairs", "METHODS"]

METHODS = ("lanczos", "arnoldi")
ENDS = ("both", "top", "bottom")


@dataclass
class KrylovState:
    """Everything the iteration keeps between matvecs (all arrays of length ``dim`` or ``m``).

    ``basis[: m + 1]`` holds the orthonormal Krylov vectors, ``projected[:m, :m]`` the projected
    matrix (tridiagonal for Lanczos, upper Hessenberg for Arnoldi, with the subdiagonal in
    ``projected[m, m - 1]``).
    """

    basis: np.ndarray  # (max_iter + 1, dim)
    projected: np.ndarray  # (max_iter + 1, max_iter)
    m: int = 0  # number of completed steps

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays held between iterations (for memory accounting and tests)."""
        return {"basis": self.basis, "projected": self.projected}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())


@dataclass(frozen=True)
class KrylovResult:
    """Top-k (largest algebraic, descending) and bottom-k (smallest, ascending) Ritz pairs.

    Residuals are the Ritz residual norms ``||A y - theta y||`` (from the last projected
    coefficient, exact up to rounding under full re-orthogonalization). Vectors, when requested,
    are ``(k, dim)`` unit rows.
    """

    top: np.ndarray
    bottom: np.ndarray
    top_residuals: np.ndarray
    bottom_residuals: np.ndarray
    num_iter: int
    converged: bool
    method: str
    dim: int
    krylov_nbytes: int
    krylov_vectors: int  # rows of the Krylov basis held (max_iter + 1)
    top_vectors: np.ndarray | None = None
    bottom_vectors: np.ndarray | None = None
    ritz_values: np.ndarray = field(default=None, repr=False)  # all m Ritz values, ascending


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
        high is not None and value > high
    ):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise InvalidOptionError(f"{name} must be an integer in {rng}, got {value!r}.")
    return int(value)


def _ritz(state: KrylovState, method: str):
    """Ritz values (ascending), eigenvectors of the projected matrix, and residual norms."""
    m = state.m
    T = state.projected[:m, :m]
    beta = state.projected[m, m - 1] if m < state.projected.shape[0] else 0.0
    if method == "lanczos":
        theta, S = np.linalg.eigh(T)
    else:
        theta, S = np.linalg.eig(T)
        order = np.argsort(theta.real)
        # A symmetric operator has real Ritz values; rounding leaves tiny imaginary parts.
        theta, S = theta.real[order], S[:, order]
        S = S.real
        S = S / np.linalg.norm(S, axis=0, keepdims=True)
    resid = np.abs(beta * S[m - 1, :])
    return theta, S, resid


def extreme_eigenpairs(
    matvec: Callable[[np.ndarray], np.ndarray],
    dim: int,
    k: int,
    *,
    method: str = "lanczos",
    max_iter: int | None = None,
    tol: float = 1e-6,
    seed: int = 0,
    return_vectors: bool = False,
    check_every: int = 5,
    converge_on: str = "both",
    callback: Callable[[KrylovState], None] | None = None,
    progress: bool = False,
) -> KrylovResult:
    """The ``k`` largest and ``k`` smallest algebraic eigenvalues of a symmetric operator.

    ``matvec`` maps a float64 ``(dim,)`` vector to ``(dim,)``. The start vector is a standard
    Gaussian from ``numpy.random.default_rng(seed)``, so runs are deterministic. Iteration stops
    after ``max_iter`` steps (default ``min(dim, 6k + 20)``) or when every wanted Ritz residual is
    below ``tol * max|theta|`` (checked every ``check_every`` steps; ``converge_on`` = "both",
    "top" or "bottom" says which end's k Ritz pairs must converge), or on an invariant subspace.
    ``callback(state)`` runs after every step.
    """
    if method not in METHODS:
        raise InvalidOptionError(f"method must be one of {METHODS}, got {method!r}.")
    dim = _check_int("dim", dim, 1)
    k = _check_int("k", k, 1, dim)
    if max_iter is None:
        max_iter = min(dim, 6 * k + 20)
    max_iter = _check_int("max_iter", max_iter, 1, dim)
    if max_iter < min(dim, 2 * k):
        raise InvalidOptionError(
            f"max_iter={max_iter} is too small for k={k} at both ends of the spectrum; "
            f"use max_iter >= {min(dim, 2 * k)} (a few times k converges better)."
        )
    if converge_on not in ENDS:
        raise InvalidOptionError(f"converge_on must be one of {ENDS}, got {converge_on!r}.")
    if not tol > 0:
        raise InvalidOptionError(f"tol must be > 0, got {tol!r}.")
    check_every = _check_int("check_every", check_every, 1)

    state = KrylovState(
        basis=np.zeros((max_iter + 1, dim), dtype=np.float64),
        projected=np.zeros((max_iter + 1, max_iter), dtype=np.float64),
    )
    q = np.random.default_rng(seed).standard_normal(dim)
    state.basis[0] = q / np.linalg.norm(q)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc=f"{method} (dim {dim})", unit="matvec")
    converged = False
    scale = 0.0
    try:
        for j in range(max_iter):
            w = np.asarray(matvec(state.basis[j]), dtype=np.float64).reshape(-1)
            if w.shape != (dim,):
                raise ShapeError(f"matvec returned shape {w.shape}; expected ({dim},).")
            Q = state.basis[: j + 1]
            # Classical Gram-Schmidt twice ("twice is enough") against the whole basis.
            h = Q @ w
            w -= Q.T @ h
            h2 = Q @ w
            w -= Q.T @ h2
            h += h2
            if method == "lanczos":
                # Symmetric: only alpha_j and beta_{j-1} are structurally non-zero.
                state.projected[j, j] = h[j]
                if j > 0:
                    state.projected[j - 1, j] = state.projected[j, j - 1]
            else:
                state.projected[: j + 1, j] = h
            beta = float(np.linalg.norm(w))
            state.projected[j + 1, j] = beta
            state.m = j + 1
            scale = max(scale, abs(h[j]), beta)
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(state)
            invariant = beta <= 1e-12 * max(scale, 1e-300)
            if invariant or state.m == dim:
                state.projected[j + 1, j] = 0.0
                converged = True
                break
            state.basis[j + 1] = w / beta
            if state.m >= 2 * k and (state.m % check_every == 0):
                theta, _, resid = _ritz(state, method)
                wanted = {"both": np.r_[resid[:k], resid[-k:]], "top": resid[-k:],
                          "bottom": resid[:k]}[converge_on]
                if np.all(wanted <= tol * max(np.max(np.abs(theta)), 1e-300)):
                    converged = True
                    break
    finally:
        if bar is not None:
            bar.close()

    theta, S, resid = _ritz(state, method)
    kk = min(k, state.m)
    top_idx = np.arange(state.m - 1, state.m - 1 - kk, -1)
    bot_idx = np.arange(kk)
    top_vecs = bot_vecs = None
    if return_vectors:
        Q = state.basis[: state.m]
        top_vecs = (Q.T @ S[:, top_idx]).T
        bot_vecs = (Q.T @ S[:, bot_idx]).T
    return KrylovResult(
        top=theta[top_idx].copy(),
        bottom=theta[bot_idx].copy(),
        top_residuals=resid[top_idx].copy(),
        bottom_residuals=resid[bot_idx].copy(),
        num_iter=state.m,
        converged=converged,
        method=method,
        dim=dim,
        krylov_nbytes=state.nbytes,
        krylov_vectors=state.basis.shape[0],
        top_vectors=top_vecs,
        bottom_vectors=bot_vecs,
        ritz_values=theta,
    )
