"""Attribution scores from stored train sketches and test sketches (numpy; streamed by chunk).

Methods, for a train sketch ``s = Phi g_train`` and a test sketch ``t = Phi g_test``:

- ``dot``: ``<t, s>``, the gradient inner product (TracIn at one checkpoint; the paper's score).
- ``cosine``: ``<t, s> / (|t| |s|)``.
- ``gauss-newton``: ``t^T (S^T S + lam I)^{-1} s`` with ``S`` the (num_train, D) matrix of stored
  train sketches: the sketched Gauss-Newton/Fisher preconditioner of loss gradients. (Before
  TRAK proper arrived this score was called ``trak``.)
- ``trak``: TRAK (Park et al. 2023) on a TRAK store (``trak.py``: sketches of the gradients of a
  model output function, with out-to-loss weights ``Q``): ``t^T (S^T S + lam I)^{-1} s_j Q_j``.
  Several stores (an ensemble of models or checkpoints) are averaged as TRAK does: the mean of the
  kernel scores times the mean of ``Q``. Optional soft-thresholding ``sign(x) max(|x| - c, 0)``.

The kernel ``(S^T S + lam I)`` is factored once per store (Cholesky) in the cheaper of its two
forms: the D x D matrix itself when D <= num_train, else the num_train x num_train kernel
``S S^T + lam I`` (Woodbury), which is what makes exact, unsketched features (D = N) usable.
``damping=`` sets ``lam``; ``relative_damping=c`` sets ``lam = c tr(S^T S) / min(n, D)``, ``c``
times the mean nonzero eigenvalue of ``S^T S`` (scale-free, so one ``c`` serves every D and every
model of an ensemble). Defaults: ``gauss-newton``: ``1e-3`` times the mean diagonal of ``S^T S``
(``tr(S^T S) / D``); ``trak``: ``c = 1``, the best of ``c = 0.001 ... 10`` for the LDS on the
digits task (``benchmarks/bench_trak.py``). ``lam`` must be > 0 when D exceeds num_train.

Several checkpoints (one store and one set of test sketches per checkpoint) are summed for
``dot``, ``cosine`` and ``gauss-newton``, with optional weights (learning rates), as in
TracIn-CP; for ``trak`` the weights are ensemble weights (normalized). Everything reads the store
chunk by chunk, so the train set never has to fit in memory for top-k.
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
    "soft_threshold",
    "top_k",
    "Attribution",
]

METHODS = ("dot", "cosine", "gauss-newton", "trak")
#: methods that precondition with the kernel (S^T S + lam I)^{-1}
KERNEL_METHODS = ("gauss-newton", "trak")
DEFAULT_RELATIVE_DAMPING = 1e-3  # gauss-newton: lam = 1e-3 tr(S^T S) / D
DEFAULT_TRAK_RELATIVE_DAMPING = 1.0  # trak: lam = 1.0 tr(S^T S) / min(n, D)
FORMS = ("auto", "primal", "dual")


def _check_method(method: str) -> str:
    if method not in METHODS:
        hint = (" (the loss-gradient score that was called 'trak' before is 'gauss-newton')"
                if method in ("gauss_newton", "gn") else "")
        raise ValueError(f"unknown score method {method!r}; allowed: {', '.join(METHODS)}{hint}.")
    return method


def soft_threshold(scores, threshold):
    """TRAK's soft-thresholding ``sign(x) max(|x| - threshold, 0)``: scores within
    ``threshold`` of 0 become 0, the others move toward 0 by ``threshold`` (ranks kept)."""
    threshold = float(threshold)
    if not threshold >= 0:
        raise ValueError(f"soft_threshold must be a number >= 0 (0: no thresholding), got "
                         f"{threshold!r}.")
    scores = np.asarray(scores)
    return np.sign(scores) * np.maximum(np.abs(scores) - threshold, 0.0)


class Preconditioner:
    """``(S^T S + lam I)^{-1}`` for the train sketches of one store, factored once (Cholesky).

    ``form``: ``"primal"`` factors the D x D matrix ``S^T S + lam I``; ``"dual"`` factors the
    n x n kernel ``S S^T + lam I`` and applies Woodbury,
    ``(S^T S + lam I)^{-1} = (I - S^T (S S^T + lam I)^{-1} S) / lam`` (two passes over the
    store per solve); ``"auto"`` (default) picks the smaller.

    ``damping``: ``lam`` itself; ``relative_damping``: ``c`` in ``lam = c tr(S^T S) / min(n, D)``;
    with neither, the default of ``method`` (see the module docstring).
    """

    def __init__(self, store, damping: float | None = None, *, relative_damping=None,
                 method: str = "gauss-newton", form: str = "auto") -> None:
        from scipy.linalg import cho_factor

        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; allowed: {', '.join(FORMS)}.")
        if damping is not None and relative_damping is not None:
            raise ValueError(f"pass damping (lam itself) or relative_damping (a multiple of the "
                             f"mean nonzero eigenvalue of S^T S), not both; got {damping!r} and "
                             f"{relative_damping!r}.")
        d, n = store.out_dim, store.num_examples
        self.form = ("primal" if d <= n else "dual") if form == "auto" else form
        self.store = store
        gram = self._gram_primal(store) if self.form == "primal" else self._gram_dual(store)
        trace = float(np.trace(gram))
        if damping is None:
            if relative_damping is None and method != "trak":
                damping = DEFAULT_RELATIVE_DAMPING * trace / d
            else:
                c = DEFAULT_TRAK_RELATIVE_DAMPING if relative_damping is None else relative_damping
                if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0:
                    raise ValueError(f"relative_damping must be a number > 0, got {c!r}.")
                damping = float(c) * trace / min(n, d)
            if damping <= 0:
                damping = 1.0  # all-zero sketches: any positive damping gives the (zero) answer
        if not damping > 0:
            raise ValueError(f"damping must be > 0 (it makes S^T S + damping*I invertible), "
                             f"got {damping!r}.")
        self.damping = float(damping)
        gram[np.diag_indices(gram.shape[0])] += self.damping
        self._factor = cho_factor(gram, lower=True, check_finite=True)

    @staticmethod
    def _gram_primal(store):
        d = store.out_dim
        gram = np.zeros((d, d), dtype=np.float64)
        for _ids, s in store.iter_chunks():
            s = np.asarray(s, dtype=np.float64)
            gram += s.T @ s
        return gram

    @staticmethod
    def _gram_dual(store):
        n = store.num_examples
        gram = np.zeros((n, n), dtype=np.float64)
        for i in range(store.num_chunks):
            a, b = store.chunk_range(i)
            si = np.asarray(store.read_chunk(i)[1], dtype=np.float64)
            for j in range(i + 1):
                c, e = store.chunk_range(j)
                sj = si if j == i else np.asarray(store.read_chunk(j)[1], dtype=np.float64)
                block = si @ sj.T
                gram[a:b, c:e] = block
                gram[c:e, a:b] = block.T
        return gram

    def solve(self, t):
        """``(S^T S + lam I)^{-1} t`` for t of shape (m, D) -> (m, D)."""
        from scipy.linalg import cho_solve

        t = np.asarray(t, dtype=np.float64)
        if self.form == "primal":
            return cho_solve(self._factor, t.T).T
        st = np.concatenate([np.asarray(s, np.float64) @ t.T
                             for _i, s in self.store.iter_chunks()], axis=0)  # (n, m)
        v = cho_solve(self._factor, st)
        back = np.zeros_like(t)
        for c, (_i, s) in enumerate(self.store.iter_chunks()):
            a, b = self.store.chunk_range(c)
            back += (np.asarray(s, np.float64).T @ v[a:b]).T
        return (t - back) / self.damping


@dataclass
class Checkpoint:
    """One checkpoint's train store and test sketches (m, D), with its weight (TracIn weight;
    for ``trak``, its weight in the ensemble average)."""

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


def _require_trak_stores(stores) -> None:
    """``trak`` needs TRAK stores (output-function sketches with out-to-loss weights), all of one
    output function."""
    outputs = set()
    for k, st in enumerate(stores):
        rec = st.train_weights_record
        if rec is None:
            raise ValueError(
                f"method='trak' needs TRAK stores (sketches of a model output function's "
                f"gradients with out-to-loss weights), but store {k} at {str(st.path)!r} holds "
                "loss-gradient sketches. Build one with sketchcore_tda.api.build_trak_store (CLI: "
                "sketchcore tda build --trak), or score this store with method='gauss-newton' "
                "(the loss-gradient score formerly called 'trak').")
        outputs.add(rec.get("output"))
    if len(outputs) > 1:
        raise ValueError(f"the stores of one TRAK ensemble must share their output function, "
                         f"got {sorted(outputs)}.")


def _ensemble_weights(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
        raise ValueError(f"TRAK ensemble weights must be >= 0 with a positive sum, got "
                         f"{w.tolist()}.")
    return w / w.sum()


def _blocks(cps, method: str, damping, relative_damping=None):
    """Yield (train ids, score block (m, rows)) per row chunk, combined over checkpoints."""
    prepared = []
    q = None
    if method == "trak":
        _require_trak_stores([cp.store for cp in cps])
        shares = _ensemble_weights([cp.weight for cp in cps])
    else:
        shares = [cp.weight for cp in cps]
    for cp, share in zip(cps, shares):
        t = cp.test_sketches.astype(np.float64)
        if method in KERNEL_METHODS:
            t = Preconditioner(cp.store, damping, relative_damping=relative_damping,
                               method=method).solve(t)
        elif method == "cosine":
            t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-30)
        if method == "trak":
            part = share * np.asarray(cp.store.train_weights(), dtype=np.float64)
            q = part if q is None else q + part
        prepared.append((cp, share * t))
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
            part = t @ s.T
            block = part if block is None else block + part
        if q is not None:
            block = block * q[start:stop][None, :]
        yield ids, block


def _thresholded(blocks, threshold):
    for ids, block in blocks:
        yield ids, (block if threshold is None else soft_threshold(block, threshold))


def score_matrix(store, test_sketches=None, *, method: str = "dot", damping=None,
                 relative_damping=None, soft_threshold=None):
    """All scores: ``(train_ids (n,), scores (m, n))`` for a store and test sketches (m, D), or
    for a list of :class:`Checkpoint` (summed, TracIn-CP; averaged as an ensemble for ``trak``).
    ``soft_threshold``: a threshold ``c >= 0`` applied as ``sign(x) max(|x| - c, 0)``."""
    _check_method(method)
    cps = _as_checkpoints(store, test_sketches)
    for cp in cps:
        cp.store.require_complete()
    ids, blocks = [], []
    for i, b in _thresholded(_blocks(cps, method, damping, relative_damping), soft_threshold):
        ids.append(i)
        blocks.append(b)
    return np.concatenate(ids), np.concatenate(blocks, axis=1)


def self_influence(store, *, method: str = "dot", damping=None, weights=None,
                   relative_damping=None):
    """Self-influence of every train example, ``score(z, z)``: ``(ids (n,), values (n,))``.

    ``store`` is one store or a list of stores (checkpoints, summed with ``weights``; an
    ensemble, averaged, for ``trak``). ``dot`` gives ``|Phi g|^2``; ``gauss-newton`` gives
    ``s^T (S^T S + lam I)^{-1} s``; ``trak`` that times ``Q``; ``cosine`` is always 1 and is
    refused.
    """
    _check_method(method)
    if method == "cosine":
        raise ValueError("self-influence with method='cosine' is 1 for every example; use "
                         "method='dot', 'gauss-newton' or 'trak'.")
    stores = list(store) if isinstance(store, (list, tuple)) else [store]
    weights = [1.0] * len(stores) if weights is None else list(weights)
    if len(weights) != len(stores):
        raise ValueError(f"got {len(weights)} weights for {len(stores)} stores.")
    if method == "trak":
        _require_trak_stores(stores)
        weights = _ensemble_weights(weights)
    total, ids0, q = None, None, None
    for st, w in zip(stores, weights):
        st.require_complete()
        pre = (Preconditioner(st, damping, relative_damping=relative_damping, method=method)
               if method in KERNEL_METHODS else None)
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
        if method == "trak":
            part = w * np.asarray(st.train_weights(), dtype=np.float64)
            q = part if q is None else q + part
    return ids0, (total if q is None else total * q)


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
          test_ids=None, soft_threshold=None, relative_damping=None) -> Attribution:
    """Top-``k`` proponents and opponents per test example, streamed over the store's chunks.

    ``store`` with ``test_sketches`` (m, D), or a list of :class:`Checkpoint` (TracIn-CP sum;
    an ensemble average for ``trak``). ``soft_threshold``: see :func:`score_matrix`.
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
    for ids, block in _thresholded(_blocks(cps, method, damping, relative_damping),
                                   soft_threshold):
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
