"""The linear datamodeling score (LDS): do attribution scores predict retrained models?

TRAK's evaluation (Park et al. 2023, section 2): draw M random subsets ``S_1..S_M`` of the
training set, each a fraction ``alpha`` of it; train a model on each and record its output
``f_m(z)`` on every test example ``z``. A method's scores ``tau(z, j)`` predict that output as
``sum_{j in S_m} tau(z, j)``. The LDS of ``z`` is the Spearman rank correlation between predicted
and measured outputs across the M subsets; the reported LDS is its mean over the test examples.

:func:`lds` runs it for a task: the M subset models and the ``ensemble`` full-data models whose
gradients the methods use are trained through the task's retraining protocol (the task function
takes ``train_subset=`` indices and ``model_seed=``; ``example_tasks.digits`` does), and
everything is kept in a cache folder (``lds_cache.py``) that every method, algorithm and D share.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["lds", "LDSResult", "linear_datamodeling_score", "subset_masks", "METHOD_KINDS"]

#: which store each method scores: TRAK stores (output-function gradients and out-to-loss
#: weights) or loss-gradient stores
METHOD_KINDS = {"trak": "trak", "gauss-newton": "loss", "dot": "loss", "cosine": "loss"}
ENSEMBLE_SEED = 0  # member k trains with model_seed = seed + k
SUBSET_SEED = 10_000  # subset model m trains with model_seed = seed + 10_000 + m


def subset_masks(subsets, num_train: int) -> np.ndarray:
    """Boolean (M, num_train) membership masks of a list of index arrays."""
    masks = np.zeros((len(subsets), num_train), dtype=bool)
    for m, idx in enumerate(subsets):
        masks[m, np.asarray(idx, dtype=np.int64)] = True
    return masks


def linear_datamodeling_score(scores, masks, outputs) -> np.ndarray:
    """LDS of every test example: the Spearman correlation, across the M subsets, between the
    predicted outputs ``masks @ scores.T`` and the measured ``outputs``.

    ``scores``: (m, n) attribution scores of m test examples against n train examples;
    ``masks``: (M, n) subset membership; ``outputs``: (M, m) measured outputs. Returns (m,); a
    test example whose predictions or outputs do not vary gets 0 (no rank information).
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    masks = np.asarray(masks, dtype=np.float64)
    outputs = np.asarray(outputs, dtype=np.float64)
    if scores.ndim != 2 or masks.ndim != 2 or scores.shape[1] != masks.shape[1]:
        raise ValueError(f"scores (m, n) and masks (M, n) must share n, got {scores.shape} and "
                         f"{masks.shape}.")
    if outputs.shape != (masks.shape[0], scores.shape[0]):
        raise ValueError(f"outputs must have shape (M, m) = {(masks.shape[0], scores.shape[0])}, "
                         f"got {outputs.shape}.")
    if masks.shape[0] < 3:
        raise ValueError(f"a rank correlation needs at least 3 subset models, got {masks.shape[0]}.")
    pred = rankdata(masks @ scores.T, axis=0)
    real = rankdata(outputs, axis=0)
    pred -= pred.mean(0)
    real -= real.mean(0)
    norm = np.sqrt((pred**2).sum(0) * (real**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pred * real).sum(0) / norm
    return np.where(norm > 0, r, 0.0)


@dataclass
class LDSResult:
    """LDS per method and algorithm: ``values[(method, algo)][log2 D] = mean LDS`` (exact
    features: algo ``"exact"``, key ``None``), with per-test values and times (seconds to build
    what was not cached and to score). ``masks`` (M, n) and ``outputs`` (M, m) are the ground
    truth the LDS compares against and ``members`` the ensemble's tasks (in memory only), so
    other attribution code can be scored against the same retrained models."""

    task: str
    num_params: int
    num_train: int
    num_test: int
    num_models: int
    alpha: float
    ensemble: int
    seed: int
    values: dict = field(default_factory=dict)
    per_test: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    masks: np.ndarray | None = field(default=None, repr=False)
    outputs: np.ndarray | None = field(default=None, repr=False)
    members: list = field(default_factory=list, repr=False)

    def format_table(self) -> str:
        dims = sorted({k for d in self.values.values() for k in d if k is not None})
        has_exact = any(None in d for d in self.values.values())
        lines = [f"LDS (mean Spearman over {self.num_test} test examples of predicted vs "
                 f"retrained outputs; {self.num_models} models on alpha={self.alpha} subsets of "
                 f"{self.num_train}; ensemble {self.ensemble}; N={self.num_params}; "
                 f"seed {self.seed})"]
        head = f"{'method/algo':<20}" + "".join(f"{'log2D=' + str(k):>10}" for k in dims)
        head += f"{'exact':>10}" if has_exact else ""
        lines += [head, "-" * len(head)]
        for (method, algo), d in self.values.items():
            if algo == "exact":
                continue
            row = f"{method + '/' + algo:<20}" + "".join(
                f"{d[k]:>10.3f}" if k in d else f"{'-':>10}" for k in dims)
            if has_exact:
                ex = self.values.get((method, "exact"), {}).get(None)
                row += f"{ex:>10.3f}" if ex is not None else f"{'-':>10}"
            lines.append(row)
        for (method, algo), d in self.values.items():
            if algo == "exact" and not any(m == method and a != "exact" for m, a in self.values):
                lines.append(f"{method + '/exact':<20}" + " " * 10 * len(dims)
                             + f"{d[None]:>10.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "task": self.task, "num_params": self.num_params, "num_train": self.num_train,
            "num_test": self.num_test, "num_models": self.num_models, "alpha": self.alpha,
            "ensemble": self.ensemble, "seed": self.seed, "train_seconds": self.train_seconds,
            "lds": {f"{m}/{a}": {("exact" if k is None else str(k)): v for k, v in d.items()}
                    for (m, a), d in self.values.items()},
            "seconds": {f"{m}/{a}": {("exact" if k is None else str(k)): v for k, v in d.items()}
                        for (m, a), d in self.seconds.items()},
        }

    def plot(self, path, title: str = "") -> None:
        """LDS against log2 D, one line per method/algorithm; exact features as dotted lines."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for (method, algo), d in self.values.items():
            if algo == "exact":
                continue
            ks = sorted(k for k in d if k is not None)
            ax.plot(ks, [d[k] for k in ks], "o-", label=f"{method}/{algo}")
        for (method, algo), d in self.values.items():
            if algo == "exact":
                ax.axhline(d[None], ls=":", color="gray")
                ax.annotate(f"{method}, exact ({d[None]:.3f})", (0.01, d[None]),
                            xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
        ax.set_xlabel("log2 D")
        ax.set_ylabel("LDS (mean Spearman)")
        ax.set_title(title or f"LDS vs sketch dimension ({self.task})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _task_function(task):
    """``(callable, name)`` of a task given as ``module:function`` / ``file.py:function`` or as
    the task function itself."""
    if callable(task):
        return task, f"{getattr(task, '__module__', '?')}:{getattr(task, '__qualname__', task)}"
    from .task_spec import _import_callable

    return _import_callable(task), str(task)


def _digest(data) -> str:
    from .fingerprint import InputFingerprint
    from .sources import as_source

    source = as_source(data)
    fp = InputFingerprint()
    for _r, batch in source.batches(0, source.num_examples, max(1, source.num_examples)):
        fp.update(batch)
    return fp.digest()[:16].hex()


def _retrain(fn, args, subset, model_seed: int):
    """The task with its model trained on ``subset`` of the training set with ``model_seed``."""
    from .task_spec import TDATask

    try:
        task = fn(**args, train_subset=subset, model_seed=int(model_seed))
    except TypeError as err:
        if "train_subset" in str(err) or "model_seed" in str(err):
            raise TypeError(f"the LDS retrains the task's model on subsets: its function must "
                            f"accept train_subset= (indices into the training set) and "
                            f"model_seed= (see sketchcore_tda.example_tasks.digits); {err}"
                            ) from None
        raise
    if not isinstance(task, TDATask):
        raise TypeError(f"the task function returned {type(task).__name__}, not a TDATask.")
    return task


def lds(task, task_args=None, *, methods=("trak",), algos=("affd",), log2_dims=(10,),
        exact: bool = False, num_models: int = 50, alpha: float = 0.5, ensemble: int = 1,
        n_test: int | None = None, cache="lds-cache", seed: int = 0, damping=None,
        relative_damping=None, soft_threshold=None, batch_size: int = 64, output=None,
        progress: bool = True) -> LDSResult:
    """The LDS of every method, algorithm and D on a task (see the module docstring).

    ``task``: ``"module:function"`` or the task function; it must accept ``train_subset=``
    (indices into its training set) and ``model_seed=``. ``methods``: of ``trak``,
    ``gauss-newton``, ``dot``, ``cosine``. ``algos`` x ``log2_dims``: the sketches; ``exact``
    adds unsketched features (D = N; for small models). ``ensemble``: full-data models whose
    scores are combined (averaged for trak, summed otherwise); member k has sketch seed
    ``seed + k``. ``n_test``: score the first n test examples (default all). ``output``: the
    model output function (default the task's ``info["trak_output"]``, else the margin), used
    for TRAK's features and as the measured output. ``cache``: the folder shared by runs.
    ``damping`` / ``relative_damping`` / ``soft_threshold``: as in ``scores.score_matrix``.
    """
    from .forward import is_torch_model, load_state, per_example_values, save_state
    from .lds_cache import LDSCache
    from .outputs import resolve_output
    from .scores import METHODS, score_matrix
    from .sources import as_source

    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown LDS method(s) {bad}; allowed: {', '.join(METHODS)}.")
    for name, v in (("num_models", num_models), ("ensemble", ensemble)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    if num_models < 3:
        raise ValueError(f"num_models must be >= 3 for a rank correlation, got {num_models}.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (the fraction of the training set per "
                         f"subset), got {alpha!r}.")
    args = dict(task_args or {})
    fn, task_name = _task_function(task)
    t0 = time.perf_counter()
    base = fn(**args)  # the data, the architecture and the forward; its model is not scored
    train, test = as_source(base.train), as_source(base.test)
    n = train.num_examples
    out_fn = resolve_output(output if output is not None
                            else (base.info or {}).get("trak_output", "margin"))
    cache = LDSCache(cache, {
        "task": task_name, "task_args": args, "num_train": n, "num_test": test.num_examples,
        "train_digest": _digest(train.arrays), "test_digest": _digest(test.arrays),
        "alpha": float(alpha), "seed": int(seed), "output": out_fn.name,
    })
    m_test = test.num_examples if n_test is None else min(int(n_test), test.num_examples)
    test_part = test.subset(0, m_test).arrays

    def measure(model, forward):
        return per_example_values(model, out_fn.values, test.arrays, forward=forward)

    # 1. subset models: train the missing ones, record their outputs
    subsets, outputs = [], []
    todo = [m for m in range(num_models) if cache.subset_outputs(m) is None]
    bar = _bar(progress, len(todo), "training subset models")
    for m in range(num_models):
        idx = cache.subset(m)
        got = cache.subset_outputs(m)
        if got is None:
            t = _retrain(fn, args, idx, seed + SUBSET_SEED + m)
            got = measure(t.model, t.forward)
            cache.save_subset_model(m, t.model, got)
            if bar is not None:
                bar.update(1)
        subsets.append(idx)
        outputs.append(got[:m_test])
    if bar is not None:
        bar.close()
    masks = subset_masks(subsets, n)
    outputs = np.stack(outputs)

    # 2. ensemble members: trained on the whole training set (state dicts cached for torch)
    members = []
    for k in range(ensemble):
        path = cache.ensemble_state(k)
        if path.is_file() and is_torch_model(base.model):
            task_k = copy.copy(base)
            task_k.model = copy.deepcopy(base.model)
            load_state(task_k.model, path)
        else:
            task_k = _retrain(fn, args, np.arange(n), seed + ENSEMBLE_SEED + k)
            save_state(task_k.model, path)
        members.append(task_k)
    train_seconds = time.perf_counter() - t0

    # 3. features and scores per kind, algorithm and D
    res = LDSResult(task=task_name, num_params=0, num_train=n, num_test=m_test,
                    num_models=num_models, alpha=float(alpha), ensemble=ensemble, seed=seed,
                    train_seconds=train_seconds, masks=masks, outputs=outputs, members=members)
    grid = [(algo, k) for algo in algos for k in log2_dims] + ([("exact", None)] if exact else [])
    kinds = list(dict.fromkeys(METHOD_KINDS[m] for m in methods))
    bar = _bar(progress, len(grid) * len(kinds) * ensemble, "features (stores)")
    for algo, log2_dim in grid:
        for kind in kinds:
            t1 = time.perf_counter()
            cps, num_params = _features(cache, members, kind, algo, log2_dim, seed, out_fn,
                                        train, test_part, m_test, batch_size, bar)
            res.num_params = num_params
            featurized = time.perf_counter() - t1
            for method in methods:
                if METHOD_KINDS[method] != kind:
                    continue
                t1 = time.perf_counter()
                _ids, scores = score_matrix(cps, method=method, damping=damping,
                                            relative_damping=relative_damping,
                                            soft_threshold=soft_threshold)
                per = linear_datamodeling_score(scores, masks, outputs)
                key = (method, algo)
                res.values.setdefault(key, {})[log2_dim] = float(per.mean())
                res.per_test.setdefault(key, {})[log2_dim] = per
                # features of every member (what was not cached) plus this method's scoring
                res.seconds.setdefault(key, {})[log2_dim] = (featurized
                                                             + time.perf_counter() - t1)
    if bar is not None:
        bar.close()
    return res


def _features(cache, members, kind, algo, log2_dim, seed, out_fn, train, test_part, m_test,
              batch_size, bar):
    """Checkpoint records (store + test sketches) of every ensemble member for one kind,
    algorithm and D, building what the cache lacks."""
    from .build import build_store
    from .query import sketch_data
    from .scores import Checkpoint
    from .store import SketchStore
    from .task_spec import make_sketcher
    from .trak import build_trak_store, trak_sketcher

    cps, num_params = [], 0
    for k, task_k in enumerate(members):
        sketch = None if log2_dim is None else {"algo": algo, "out_dim": 2 ** int(log2_dim),
                                                "seed": int(seed) + k}
        if kind == "trak":
            gs = trak_sketcher(task_k, sketch, output=out_fn)
        else:
            gs = make_sketcher(task_k, sketch)
        num_params = gs.num_params
        path = cache.store_path(kind, algo, log2_dim, k)
        bs = _recorded_batch_size(path) or batch_size  # a cached store resumes as it was built
        build = build_trak_store if kind == "trak" else build_store
        build(path, gs, train.arrays, batch_size=bs, progress=False)
        store = SketchStore.open(path, mode="r")
        t = cache.test_sketches(path, m_test, lambda: sketch_data(gs, test_part, batch_size=bs))
        cps.append(Checkpoint(store, t, 1.0))
        if bar is not None:
            bar.update(1)
    return cps, num_params


def _recorded_batch_size(path):
    """The batch size a cached store was built with (None if there is no such store yet)."""
    from .store import SketchStore

    if not (path / "zarr.json").is_file():
        return None
    try:
        bs = SketchStore.open(path, mode="r").metadata.get("batch_size")
    except Exception:  # noqa: BLE001 - not a valid store: the build reports it
        return None
    return bs if isinstance(bs, int) and bs > 0 else None


def _bar(enabled: bool, total: int, desc: str):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True)
