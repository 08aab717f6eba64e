"""TRAK side by side with traker: agreement, wall time and the linear datamodeling score (LDS).

One run, one machine, the same models, data, D and damping for both libraries. Parts
(``--parts``, comma-separated; default all):

- ``agree``: one model (a digits MLP), D = 2^11: top-k overlap and Spearman of sketchcore's TRAK
  scores (AFFD), traker's (0.3.2, BasicProjector, CPU, fp32) and the exact TRAK formula
  (unsketched gradients) against each other, and wall time of each. Also the loss-gradient
  ``gauss-newton`` score (what ``method="trak"`` computed before) against exact TRAK.
- ``lds``: LDS of sketchcore's TRAK and traker's at D = 2^9..2^13 and ensembles of 1, 5 and 10
  models, next to exact TRAK; time per model. M models retrained on alpha = 0.5 subsets.
- ``algos``: LDS against log2 D for affd, afjl, qk and fjl (one model), and a damping sweep.
- ``minilm`` (not in the default run): LDS against log2 D on the MiniLM task
  (``sketchcore_tda.example_tasks:minilm``, fine-tuning the pooler and head), with fewer retrained
  models: one fine-tuning takes about a minute on 2 CPU cores, so M = 50 would take an hour.

Damping: both libraries use ``lam = c tr(X^T X) / min(n, D)`` of their own features (c = 1,
sketchcore's TRAK default): the same lam relative to each kernel (traker's features are scaled
by sqrt(D / N) relative to sketchcore's, so one absolute lam would not be the same
regularization). The subset models, ensemble members and stores live in ``--out``/cache
(shared by the parts; the stores are rebuilt each run so that their time is measured).

    python benchmarks/bench_trak.py --out bench-out/trak
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

TASK = "sketchcore_tda.example_tasks:digits"


def topk_overlap(a, b, k: int) -> float:
    """Mean over test examples of |top-k(a) & top-k(b)| / k (rows: test examples)."""
    ta = np.argsort(-a, axis=1)[:, :k]
    tb = np.argsort(-b, axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)]))


def mean_spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(np.mean([spearmanr(x, y)[0] for x, y in zip(a, b)]))


# ---- traker ------------------------------------------------------------------------------------
class Traker:
    """traker 0.3.2 driven as its documentation shows (load_checkpoint, featurize,
    finalize_features, start_scoring_checkpoint, score, finalize_scores), on CPU in fp32 with
    its BasicProjector; lam = c tr(X^T X) / min(n, D) of its own features per model."""

    def __init__(self, base_model, n_train: int, dim: int, c: float, batch_size: int) -> None:
        import torch
        from trak import TRAKer
        from trak.projectors import BasicProjector, ProjectionType

        n_params = sum(p.numel() for p in base_model.parameters())
        self.dir = tempfile.mkdtemp(prefix="traker-")
        proj = BasicProjector(grad_dim=n_params, proj_dim=dim, seed=0,
                              proj_type=ProjectionType.normal, device="cpu",
                              dtype=torch.float32)
        self.tr = TRAKer(model=copy.deepcopy(base_model), task="image_classification",
                         train_set_size=n_train, projector=proj, proj_dim=dim, device="cpu",
                         use_half_precision=False, save_dir=self.dir, lambda_reg=0.0,
                         logging_level=logging.ERROR)
        self.n, self.dim, self.c, self.bs = n_train, dim, c, batch_size
        self.seconds = []

    def add_model(self, model_id: int, model, train, test) -> None:
        t0 = time.perf_counter()
        tr = self.tr
        state = model.state_dict()
        tr.load_checkpoint(state, model_id=model_id)
        x, y = train
        for i in range(0, len(y), self.bs):
            tr.featurize(batch=(x[i:i + self.bs], y[i:i + self.bs]),
                         num_samples=len(y[i:i + self.bs]))
        grads = np.asarray(tr.saver.current_store["grads"], dtype=np.float64)
        tr.score_computer.lambda_reg = self.c * float((grads**2).sum()) / min(self.n, self.dim)
        tr.finalize_features(model_ids=[model_id])
        xt, yt = test
        tr.start_scoring_checkpoint(exp_name="test", checkpoint=state, model_id=model_id,
                                    num_targets=len(yt))
        for i in range(0, len(yt), self.bs):
            tr.score(batch=(xt[i:i + self.bs], yt[i:i + self.bs]),
                     num_samples=len(yt[i:i + self.bs]))
        self.seconds.append(time.perf_counter() - t0)

    def scores(self, members: int) -> np.ndarray:
        """finalize_scores over the first ``members`` models: (m, n)."""
        out = self.tr.finalize_scores(exp_name="test", model_ids=list(range(members)))
        return np.asarray(out, dtype=np.float64).T

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- sketchcore --------------------------------------------------------------------------------
def sk_trak_scores(task, sketch, train, test, workdir: Path, batch_size: int, kind="trak"):
    """Build a fresh store for one model and score ``test``: (scores (m, n), seconds)."""
    from sketchcore_tda.api import (
        SketchStore,
        build_store,
        build_trak_store,
        make_sketcher,
        score_checkpoints,
        trak_sketcher,
    )

    t0 = time.perf_counter()
    path = workdir / f"{kind}-{time.monotonic_ns()}.zarr"
    if kind == "trak":
        gs = trak_sketcher(task, sketch)
        build_trak_store(path, gs, train, batch_size=batch_size, progress=False)
        method = "trak"
    else:
        gs = make_sketcher(task, sketch)
        build_store(path, gs, train, batch_size=batch_size, progress=False)
        method = "gauss-newton"
    _ids, scores = score_checkpoints([(SketchStore.open(path), gs)], test, method=method,
                                     batch_size=batch_size)
    return scores, time.perf_counter() - t0


# ---- parts -------------------------------------------------------------------------------------
def groundwork(args, ensemble: int):
    """Subset models, their outputs and the ensemble members (cached), via sketchcore_tda.lds."""
    from sketchcore_tda.api import lds

    t0 = time.perf_counter()
    res = lds(TASK, args.task_args, methods=("trak",), algos=(), num_models=args.num_models,
              ensemble=ensemble, cache=args.cache, progress=False)  # no stores: parts time them
    return res, time.perf_counter() - t0


def traker_once(model, train, test, dim: int, batch_size: int):
    """traker on one model: (scores (m, n), seconds from TRAKer() to finalize_scores)."""
    t0 = time.perf_counter()
    tk = Traker(model, len(train[1]), dim, 1.0, batch_size)
    try:
        tk.add_model(0, model, train, test)
        scores = tk.scores(1)
    finally:
        tk.close()
    return scores, time.perf_counter() - t0


def part_agree(args, ground, out: dict) -> None:
    from sketchcore_tda.sources import as_source

    member = ground.members[0]
    train = member.train
    test = as_source(member.test).subset(0, args.n_test).arrays
    dim = 2**args.agree_log2_dim
    sketch = dict(algo="affd", out_dim=dim, seed=0)
    bs = args.batch_size
    work = Path(tempfile.mkdtemp(prefix="agree-"))
    runs = {
        "sketchcore TRAK, affd": lambda: sk_trak_scores(member, sketch, train, test, work, bs),
        "traker, BasicProjector fp32": lambda: traker_once(member.model, train, test, dim, bs),
        "sketchcore exact TRAK (no sketch, D = N)":
            lambda: sk_trak_scores(member, None, train, test, work, bs),
        "sketchcore gauss-newton, affd":
            lambda: sk_trak_scores(member, sketch, train, test, work, bs, kind="loss"),
    }
    times: dict = {name: [] for name in runs}
    scores = {}
    try:
        for name, fn in runs.items():  # warm-up: kernels compile and load once per process
            fn()
        for _ in range(args.repeats):  # interleaved, so that load on the machine hits all alike
            for name, fn in runs.items():
                scores[name], t = fn()
                times[name].append(t)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sk, trs = scores["sketchcore TRAK, affd"], scores["traker, BasicProjector fp32"]
    ex = scores["sketchcore exact TRAK (no sketch, D = N)"]
    gn = scores["sketchcore gauss-newton, affd"]
    n, m = len(train[1]), test[1].shape[0]
    lines = [f"(a) agreement at D = 2^{args.agree_log2_dim}, one model ({n} train x {m} test, "
             f"N = {sum(p.numel() for p in member.model.parameters())}; lam = 1.0 x mean "
             "nonzero eigenvalue of each kernel)",
             f"{'pair':<44}{'top-5':>8}{'top-10':>8}{'Spearman':>10}"]
    pairs = [("sketchcore TRAK (affd) vs traker", sk, trs),
             ("sketchcore TRAK (affd) vs exact TRAK", sk, ex),
             ("traker vs exact TRAK", trs, ex),
             ("gauss-newton (the old 'trak') vs exact TRAK", gn, ex)]
    rows = {}
    for name, a, b in pairs:
        row = (topk_overlap(a, b, 5), topk_overlap(a, b, 10), mean_spearman(a, b))
        rows[name] = row
        lines.append(f"{name:<44}{row[0]:>8.3f}{row[1]:>8.3f}{row[2]:>10.3f}")
    lines += ["", f"wall time, build/featurize + score, s (median of {args.repeats} interleaved "
              "runs after a warm-up; min-max)"]
    for name, ts in times.items():
        lines.append(f"  {name:<42}{np.median(ts):>8.2f}   ({min(ts):.2f}-{max(ts):.2f})")
    print("\n".join(lines), flush=True)
    out["agree"] = {"pairs": rows, "seconds": times}


def part_lds(args, ground, out: dict) -> None:
    from sketchcore_tda.api import lds, linear_datamodeling_score
    from sketchcore_tda.sources import as_source

    dims, ensembles = args.log2_dims, args.ensembles
    e_max = max(ensembles)
    sk = {}
    t0 = time.perf_counter()
    full = lds(TASK, args.task_args, methods=("trak",), algos=("affd",), log2_dims=dims,
               exact=True, num_models=args.num_models, ensemble=e_max, n_test=args.n_test,
               cache=args.cache, batch_size=args.batch_size, progress=False)
    sk_total = time.perf_counter() - t0
    per_model_sk = {k: full.seconds[("trak", "affd")][k] / e_max for k in dims}
    for e in ensembles:
        res = full if e == e_max else lds(
            TASK, args.task_args, methods=("trak",), algos=("affd",), log2_dims=dims,
            exact=True, num_models=args.num_models, ensemble=e, n_test=args.n_test,
            cache=args.cache, batch_size=args.batch_size, progress=False)
        sk[e] = res.values
    masks, outputs = full.masks, full.outputs
    members = full.members
    train = members[0].train
    test = as_source(members[0].test).subset(0, args.n_test).arrays
    tk_lds, tk_time = {}, {}
    for k in dims:
        e_here = [e for e in ensembles if k <= args.traker_full_max_log2_dim or e == 1]
        tk = Traker(members[0].model, len(train[1]), 2**k, 1.0, args.batch_size)
        try:
            for j in range(max(e_here)):
                tk.add_model(j, members[j].model, train, test)
            for e in e_here:
                tk_lds[(k, e)] = float(linear_datamodeling_score(tk.scores(e), masks,
                                                                 outputs).mean())
            tk_time[k] = float(np.median(tk.seconds))
        finally:
            tk.close()
        print(f"  traker D=2^{k}: {len(tk.seconds)} models, {tk_time[k]:.1f} s per model",
              flush=True)
    lines = [f"(b) LDS (mean Spearman over {args.n_test} test examples; {args.num_models} models "
             f"retrained on alpha=0.5 subsets of {len(train[1])}; digits MLP, N = "
             f"{full.num_params})",
             f"{'ensemble':>8}  {'library':<22}" + "".join(f"{'2^' + str(k):>8}" for k in dims)
             + f"{'exact':>8}"]
    for e in ensembles:
        ex = sk[e][("trak", "exact")][None]
        lines.append(f"{e:>8}  {'sketchcore (affd)':<22}"
                     + "".join(f"{sk[e][('trak', 'affd')][k]:>8.3f}" for k in dims)
                     + f"{ex:>8.3f}")
        lines.append(f"{'':>8}  {'traker (BasicProjector)':<22}"
                     + "".join(f"{tk_lds[(k, e)]:>8.3f}" if (k, e) in tk_lds else f"{'-':>8}"
                               for k in dims))
    lines += ["", f"{'time per model, s':<32}" + "".join(f"{'2^' + str(k):>8}" for k in dims),
              f"{'sketchcore (build + score)':<32}"
              + "".join(f"{per_model_sk[k]:>8.2f}" for k in dims),
              f"{'traker (featurize..score)':<32}" + "".join(f"{tk_time[k]:>8.2f}" for k in dims)]
    skipped = [k for k in dims if k > args.traker_full_max_log2_dim]
    if skipped:
        lines.append(f"(traker at D = {', '.join('2^' + str(k) for k in skipped)}: ensemble 1 "
                     f"only, to keep the run within its time budget; its D x D inverse costs "
                     f"{tk_time[skipped[-1]]:.0f} s per model there)")
    lines.append(f"(sketchcore: {sk_total:.0f} s for the whole grid incl. exact features)")
    print("\n".join(lines), flush=True)
    out["lds"] = {"sketchcore": {str(e): {f"{m}/{a}": {str(k): v for k, v in d.items()}
                                          for (m, a), d in sk[e].items()} for e in ensembles},
                  "traker": {f"{k}/{e}": v for (k, e), v in tk_lds.items()},
                  "seconds_per_model": {"sketchcore": per_model_sk, "traker": tk_time}}
    plot_lds(Path(args.out) / "lds_trak_vs_traker.png", dims, ensembles, sk, tk_lds)


def plot_lds(path, dims, ensembles, sk, tk):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for e in ensembles:
        line, = ax.plot(dims, [sk[e][("trak", "affd")][k] for k in dims], "o-",
                        label=f"sketchcore affd, {e} model(s)")
        ks = [k for k in dims if (k, e) in tk]
        ax.plot(ks, [tk[(k, e)] for k in ks], "x--", color=line.get_color(),
                label=f"traker, {e} model(s)")
        ax.axhline(sk[e][("trak", "exact")][None], color=line.get_color(), ls=":", alpha=0.6)
    ax.set_xlabel("log2 D")
    ax.set_ylabel("LDS")
    ax.set_title("TRAK on digits: sketchcore vs traker (dotted: exact TRAK)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def part_algos(args, out: dict) -> None:
    from sketchcore_tda.api import lds

    res = lds(TASK, args.task_args, methods=("trak",), algos=("affd", "afjl", "qk", "fjl"),
              log2_dims=args.log2_dims, exact=True, num_models=args.num_models, ensemble=1,
              n_test=args.n_test, cache=args.cache, batch_size=args.batch_size, progress=False)
    print("(c) " + res.format_table(), flush=True)
    res.plot(Path(args.out) / "lds_algos_digits.png", title="TRAK LDS vs log2 D, digits MLP")
    lines = ["", "damping sweep (affd, D = 2^11): lam = c x mean nonzero eigenvalue of S^T S",
             f"{'c':>8}" + "".join(f"{'ens ' + str(e):>10}" for e in (1, max(args.ensembles)))]
    sweep = {}
    for c in (1e-3, 1e-2, 1e-1, 1.0, 10.0):
        row = []
        for e in (1, max(args.ensembles)):
            r = lds(TASK, args.task_args, methods=("trak",), algos=("affd",), log2_dims=(11,),
                    num_models=args.num_models, ensemble=e, n_test=args.n_test,
                    cache=args.cache, batch_size=args.batch_size, relative_damping=c,
                    progress=False)
            row.append(r.values[("trak", "affd")][11])
        sweep[c] = row
        lines.append(f"{c:>8g}" + "".join(f"{v:>10.3f}" for v in row))
    print("\n".join(lines), flush=True)
    out["algos"] = res.to_dict()
    out["damping"] = {str(c): v for c, v in sweep.items()}


def part_minilm(args, out: dict) -> None:
    from sketchcore_tda.api import lds

    task_args = {"params": ["bert.pooler.*", "classifier.*"], "steps": args.minilm_steps,
                 "n_train": 128, "n_test": 32}
    t0 = time.perf_counter()
    res = lds("sketchcore_tda.example_tasks:minilm", task_args, methods=("trak",),
              algos=("affd", "afjl", "qk", "fjl"), log2_dims=args.minilm_log2_dims,
              num_models=args.minilm_models, ensemble=1, cache=Path(args.out) / "cache-minilm",
              batch_size=32, progress=False)
    print(f"(d) MiniLM head task (pooler + classifier, fine-tuned on alpha-subsets of 128 "
          f"sentences, {args.minilm_steps} steps; {time.perf_counter() - t0:.0f} s)\n"
          + res.format_table(), flush=True)
    res.plot(Path(args.out) / "lds_algos_minilm.png", title="TRAK LDS vs log2 D, MiniLM head")
    out["minilm"] = res.to_dict()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-trak")
    p.add_argument("--parts", default="agree,lds,algos", help="agree,lds,algos,minilm")
    p.add_argument("--num-models", type=int, default=50, help="LDS subset models M")
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--n-test", type=int, default=200, help="test examples scored")
    p.add_argument("--log2-dims", default="9,10,11,12,13")
    p.add_argument("--ensembles", default="1,5,10")
    p.add_argument("--agree-log2-dim", type=int, default=11)
    p.add_argument("--traker-full-max-log2-dim", type=int, default=12,
                   help="above this log2 D traker runs ensemble 1 only (time budget)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of part agree")
    p.add_argument("--minilm-models", type=int, default=20)
    p.add_argument("--minilm-steps", type=int, default=40)
    p.add_argument("--minilm-log2-dims", default="8,10,12,14")
    p.add_argument("--keep-stores", action="store_true",
                   help="reuse the cached stores (their build time is then not measured)")
    args = p.parse_args(argv)
    args.log2_dims = [int(k) for k in args.log2_dims.split(",")]
    args.minilm_log2_dims = [int(k) for k in args.minilm_log2_dims.split(",")]
    args.ensembles = [int(e) for e in args.ensembles.split(",")]
    args.task_args = {"arch": "mlp", "hidden": 128, "n_train": args.n_train,
                      "n_test": args.n_test, "epochs": 6}
    parts = [x for x in args.parts.split(",") if x]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    args.cache = out_dir / "cache"
    if not args.keep_stores:
        shutil.rmtree(args.cache / "stores", ignore_errors=True)
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("TRAK").setLevel(logging.ERROR)
    import torch
    import trak

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"# bench_trak: torch {torch.__version__}, traker {getattr(trak, '__version__', '0.3.2')}"
          f", {os.cpu_count()} CPU threads; digits MLP 64-128-10, {args.n_train} train, "
          f"{args.n_test} test, M = {args.num_models}, alpha = 0.5", flush=True)
    t0 = time.perf_counter()
    ground, t_ground = groundwork(args, max(args.ensembles))
    print(f"(retrained {args.num_models} subset models and {max(args.ensembles)} ensemble "
          f"members, or read them from the cache: {t_ground:.0f} s)\n", flush=True)
    results: dict = {}
    if "agree" in parts:
        part_agree(args, ground, results)
        print(flush=True)
    if "lds" in parts:
        part_lds(args, ground, results)
        print(flush=True)
    if "algos" in parts:
        part_algos(args, results)
        print(flush=True)
    if "minilm" in parts:
        part_minilm(args, results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
