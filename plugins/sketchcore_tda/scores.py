"""Attribution scores from stored train sketches and test sketches (numpy; streamed by chunk).

Methods, for a train sketch ``s = Phi g_train`` and a test sketch ``t = Phi g_test``:

- ``dot``: ``<t, s>``, the gradient inner product (TracIn at one checkpoint; the paper's score).
- ``cosine``: ``<t, s> / (|t| |s|)``.
- ``trak``: ``t^T (S^T S + lam I)^{-1} s`` with ``S`` the (num_train, D) matrix of stored train
  sketches: the sketched Gauss-Newton/Fisher preconditioner ``(Phi G^T G Phi^T + lam I)^{-1}``,
  a D x D matrix factored once (Cholesky) in sketch space. ``lam`` defaults to ``1e-3`` times the
  mean diagonal of ``S^T S`` (``damping=`` sets it; it must be > 0 when D exceeds num_train).

Several checkpoints (one store and one set of test sketches per checkpoint) are summed, with
optional weights (learning rates), as in TracIn-CP. Everything reads the store chunk by chunk, so
the train set never has to fit in memory for top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "METHODS",
    "Checkpoint",
    "Preconditioner",
    "score_matrix",
    "self_influence",
    "top_k",
    "Attribution",
]

METHODS = ("dot", "cosine", "trak")
DEFAULT_RELATIVE_DAMPING = 1e-3


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown score method {method!r}; allowed: {', '.join(METHODS)}.")
    return method


class Preconditioner:
    """``(S^T S + lam I)^{-1}`` for the train sketches of one store, factored once (Cholesky)."""

    def __init__(self, store, damping: float | None = None) -> None:
        from scipy.linalg import cho_factor

        d = store.out_dim
        gram = np.zeros((d, d), dtype=np.float64)
        for _ids, s in store.iter_chunks():
            s = np.asarray(s, dtype=np.float64)
            gram += s.T @ s
        if damping is None:
            damping = DEFAULT_RELATIVE_DAMPING * float(np.trace(gram)) / d
            if damping <= 0:
                damping = 1.0  # all-zero sketches: any positive damping gives the (zero) answer
        if not damping > 0:
            raise ValueError(f"damping must be > 0 (it makes S^T S + damping*I invertible), "
                             f"got {damping!r}.")
        self.damping = float(damping)
        gram[np.diag_indices(d)] += self.damping
        self._factor = cho_factor(gram, lower=True, check_finite=True)

    def solve(self, t):
        """``(S^T S + lam I)^{-1} t`` for t of shape (m, D) -> (m, D)."""
        from scipy.linalg import cho_solve

        return cho_solve(self._factor, np.asarray(t, dtype=np.float64).T).T


@dataclass
class Checkpoint:
    """One checkpoint's train store and test sketches (m, D), with its TracIn weight."""

    store: object
    test_sketches: np.ndarray
    weight: float = 1.0


def _as_checkpoints(store, test_sketches) -> list[Checkpoint]:
    if isinstance(store, (list, tuple)):
        if test_sketches is not None:
            raise ValueError("pass either (store, test_sketches) or a list of Checkpoint, not both.")
        cps = list(store)
        if not cps or not all(isinstance(c, Checkpoint) for c in cps):
            raise ValueError("a list of checkpoints must hold sketchcore_tda.Checkpoint records.")
    else:
        cps = [Checkpoint(store, test_sketches)]
    ref_ids = None
    for k, cp in enumerate(cps):
        t = np.asarray(cp.test_sketches, dtype=np.float32)
        if t.ndim != 2 or t.shape[1] != cp.store.out_dim:
            raise ValueError(
                f"checkpoint {k}: test sketches must have shape (m, {cp.store.out_dim}) to match "
                f"the store's D, got {t.shape}."
            )
        cp.test_sketches = t
        ids = cp.store.ids()
        if ref_ids is None:
            ref_ids = ids
        elif ids.shape != ref_ids.shape or not np.array_equal(ids, ref_ids):
            raise ValueError(
                f"checkpoint {k}: its store holds other train examples (ids) than checkpoint 0; "
                "every checkpoint's store must be built from the same training set."
            )
    if len({cp.test_sketches.shape[0] for cp in cps}) != 1:
        raise ValueError("every checkpoint needs sketches of the same test examples.")
    return cps


def _blocks(cps, method: str, damping):
    """Yield (train ids, score block (m, rows)) per row chunk, summed over checkpoints."""
    prepared = []
    for cp in cps:
        t = cp.test_sketches.astype(np.float64)
        if method == "trak":
            t = Preconditioner(cp.store, damping).solve(t)
        elif method == "cosine":
            t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-30)
        prepared.append((cp, t))
    first = cps[0].store
    for c in range(first.num_chunks):
        start, stop = first.chunk_range(c)  # other checkpoints' stores may chunk differently
        block = None
        ids = None
        for cp, t in prepared:
            ids, s = cp.store.read_rows(start, stop)
            s = np.asarray(s, dtype=np.float64)
            if method == "cosine":
                s = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-30)
            part = cp.weight * (t @ s.T)
            block = part if block is None else block + part
        yield ids, block


def score_matrix(store, test_sketches=None, *, method: str = "dot", damping=None):
    """All scores: ``(train_ids (n,), scores (m, n))`` for a store and test sketches (m, D), or
    for a list of :class:`Checkpoint` (summed, TracIn-CP)."""
    _check_method(method)
    cps = _as_checkpoints(store, test_sketches)
    for cp in cps:
        cp.store.require_complete()
    ids, blocks = [], []
    for i, b in _blocks(cps, method, damping):
        ids.append(i)
        blocks.append(b)
    return np.concatenate(ids), np.concatenate(blocks, axis=1)


def self_influence(store, *, method: str = "dot", damping=None, weights=None):
    """Self-influence of every train example, ``score(z, z)``: ``(ids (n,), values (n,))``.

    ``store`` is one store or a list of stores (checkpoints, summed with ``weights``). ``dot``
    gives ``|Phi g|^2``; ``trak`` gives ``s^T (S^T S + lam I)^{-1} s``; ``cosine`` is always 1
    and is refused.
    """
    _check_method(method)
    if method == "cosine":
        raise ValueError("self-influence with method='cosine' is 1 for every example; use "
                         "method='dot' or 'trak'.")
    stores = list(store) if isinstance(store, (list, tuple)) else [store]
    weights = [1.0] * len(stores) if weights is None else list(weights)
    if len(weights) != len(stores):
        raise ValueError(f"got {len(weights)} weights for {len(stores)} stores.")
    total, ids0 = None, None
    for st, w in zip(stores, weights):
        st.require_complete()
        pre = Preconditioner(st, damping) if method == "trak" else None
        vals, ids = [], []
        for i, s in st.iter_chunks():
            s = np.asarray(s, dtype=np.float64)
            right = pre.solve(s) if pre is not None else s
            vals.append(np.einsum("ij,ij->i", s, right))
            ids.append(i)
        ids, vals = np.concatenate(ids), np.concatenate(vals)
        if ids0 is None:
            ids0 = ids
        elif not np.array_equal(ids, ids0):
            raise ValueError("every store must hold the same train examples (ids) in the same order.")
        total = w * vals if total is None else total + w * vals
    return ids0, total


@dataclass
class Attribution:
    """Top-k proponents (highest scores) and opponents (lowest) per test example."""

    method: str
    test_ids: np.ndarray          # (m,)
    proponent_ids: np.ndarray     # (m, k) train ids, best first
    proponent_scores: np.ndarray  # (m, k)
    opponent_ids: np.ndarray      # (m, k) train ids, most negative first
    opponent_scores: np.ndarray   # (m, k)

    def to_dict(self) -> dict:
        rows = []
        for i, tid in enumerate(self.test_ids.tolist()):
            rows.append({
                "test_id": int(tid),
                "proponents": [{"train_id": int(a), "score": float(b)} for a, b in
                               zip(self.proponent_ids[i], self.proponent_scores[i])],
                "opponents": [{"train_id": int(a), "score": float(b)} for a, b in
                              zip(self.opponent_ids[i], self.opponent_scores[i])],
            })
        return {"method": self.method, "k": int(self.proponent_ids.shape[1]), "tests": rows}

    def to_json(self, path) -> None:
        import json

        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    def to_csv(self, path) -> None:
        import csv

        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["test_id", "kind", "rank", "train_id", "score"])
            for i, tid in enumerate(self.test_ids.tolist()):
                for kind, ids, sc in (("proponent", self.proponent_ids, self.proponent_scores),
                                      ("opponent", self.opponent_ids, self.opponent_scores)):
                    for r, (a, b) in enumerate(zip(ids[i], sc[i]), start=1):
                        w.writerow([tid, kind, r, int(a), repr(float(b))])

    def format_table(self, max_tests: int | None = 20) -> str:
        k = self.proponent_ids.shape[1]
        lines = [f"top-{k} proponents / opponents by {self.method} score",
                 f"{'test':>6}  {'proponents (train id: score)':<44}  opponents (train id: score)"]
        m = len(self.test_ids) if max_tests is None else min(max_tests, len(self.test_ids))
        for i in range(m):
            for r in range(k):
                p = f"{int(self.proponent_ids[i, r])}: {self.proponent_scores[i, r]:+.4g}"
                o = f"{int(self.opponent_ids[i, r])}: {self.opponent_scores[i, r]:+.4g}"
                head = f"{int(self.test_ids[i]):>6}" if r == 0 else " " * 6
                lines.append(f"{head}  {p:<44}  {o}")
        if m < len(self.test_ids):
            lines.append(f"... {len(self.test_ids) - m} more test examples (see the JSON/CSV output)")
        return "\n".join(lines)


def top_k(store, test_sketches=None, *, k: int = 10, method: str = "dot", damping=None,
          test_ids=None) -> Attribution:
    """Top-``k`` proponents and opponents per test example, streamed over the store's chunks.

    ``store`` with ``test_sketches`` (m, D), or a list of :class:`Checkpoint` (TracIn-CP sum).
    """
    _check_method(method)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    cps = _as_checkpoints(store, test_sketches)
    for cp in cps:
        cp.store.require_complete()
    m = cps[0].test_sketches.shape[0]
    k = min(k, cps[0].store.num_examples)
    best_s = np.full((m, 0), -np.inf)
    best_i = np.zeros((m, 0), dtype=np.int64)
    worst_s = np.full((m, 0), np.inf)
    worst_i = np.zeros((m, 0), dtype=np.int64)
    for ids, block in _blocks(cps, method, damping):
        ids_b = np.broadcast_to(ids, block.shape)
        best_s, best_i = _keep(np.concatenate([best_s, block], 1),
                               np.concatenate([best_i, ids_b], 1), k, largest=True)
        worst_s, worst_i = _keep(np.concatenate([worst_s, block], 1),
                                 np.concatenate([worst_i, ids_b], 1), k, largest=False)
    tids = np.arange(m) if test_ids is None else np.asarray(test_ids)
    return Attribution(method, tids, best_i, best_s, worst_i, worst_s)


def _keep(scores, ids, k, largest: bool):
    """The k largest (or smallest) scores per row, sorted, with their ids (ties: lower id first)."""
    key = -scores if largest else scores
    order = np.lexsort((ids, key), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
