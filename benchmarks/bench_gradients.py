"""Throughput of per-example gradients alone vs gradients + sketch, explicit vs implicit.

A GPT-2 built from a transformers config (random weights, eager attention, >= 1M parameters) on
CPU. For each algorithm (affd, afjl, qk), D (2^12, 2^16), layout (flat, blocks) and mode
(explicit, implicit) it measures examples/s of ``GradientSketcher.sketch_batch`` against
``full_gradients`` with no sketch (per-example gradients plus their (B, N) copy to numpy) on the
same batch. The machine is shared and its load drifts, so the three are timed in interleaved
rounds (gradients, explicit, implicit, gradients, ...) per configuration and compared by the
fastest of the same rounds (on a busy machine the minimum estimates the uncontended time; pass
--stat median on a quiet one): the overhead of sketching ((t_sketch - t_grad) / t_grad; the goal
is <= 20%) and implicit / explicit time.
It also names the backend that applied the sketches to torch tensors. Writes a markdown table and a
bar plot to --out.

    python benchmarks/bench_gradients.py                 # full grid
    python benchmarks/bench_gradients.py --quick         # D = 2^12 only, flat layout only
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--stat", choices=("min", "median"), default="min",
                    help="how the interleaved rounds are summarized")
    ap.add_argument("--algos", default="affd,afjl,qk")
    ap.add_argument("--log-d", default="12,16")
    ap.add_argument("--layouts", default="flat,blocks")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench-out/gradients")
    args = ap.parse_args(argv)
    if args.quick:
        args.log_d, args.layouts, args.repeat = "12", "flat", 2

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from tqdm import tqdm

    import models
    import sketchcore as sk
    from sketchcore.gradients import GradientSketcher

    warnings.simplefilter("ignore", UserWarning)
    models.ensure_gradients_backend("torch")
    model = models.tiny_gpt2(n_layer=4, n_embd=128, n_head=4, vocab_size=2048, n_positions=64)
    batch = models.token_batch(args.batch, seq_len=args.seq_len, vocab_size=2048)
    n_params = sum(p.numel() for p in model.parameters())
    backend = sk.resolve_backend(None, torch.zeros(1)).name
    print(f"GPT-2 config model: {n_params:,} parameters, batch {args.batch} x {args.seq_len} "
          f"tokens, torch {torch.__version__}, {torch.get_num_threads()} threads; sketches of "
          f"torch tensors run on backend {backend!r}")

    plain = GradientSketcher(model, models.causal_lm_loss, sketch=None)
    plain.full_gradients(batch)

    rows = []
    grid = [(a, int(d), lay) for a in args.algos.split(",") for d in args.log_d.split(",")
            for lay in args.layouts.split(",")]
    for algo, log_d, layout in tqdm(grid, desc="configs"):
        runs = {"grad": lambda: plain.full_gradients(batch)}
        for mode in ("explicit", "implicit"):
            gs = GradientSketcher(model, models.causal_lm_loss, layout=layout, mode=mode,
                                  sketch=dict(algo=algo, out_dim=2**log_d, seed=0))
            gs.sketch_batch(batch)  # warm-up: operators, caches
            runs[mode] = lambda gs=gs: gs.sketch_batch(batch)
        times = {k: [] for k in runs}
        for _ in range(args.repeat):
            for k, fn in runs.items():
                gc.collect()
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        pick = min if args.stat == "min" else statistics.median
        med = {k: pick(v) for k, v in times.items()}
        for mode in ("explicit", "implicit"):
            rows.append(dict(algo=algo, log_d=log_d, layout=layout, mode=mode, t=med[mode],
                             t_grad=med["grad"], ex_s=args.batch / med[mode],
                             overhead=(med[mode] - med["grad"]) / med["grad"],
                             vs_explicit=med[mode] / med["explicit"]))
    t_grad = min(r["t_grad"] for r in rows)

    lines = [f"# Per-example gradient sketches of a {n_params:,}-parameter GPT-2 (CPU, backend "
             f"{backend!r})", "",
             f"gradients alone (fastest round): {args.batch / t_grad:.1f} ex/s "
             f"({t_grad * 1e3:.0f} ms / batch of {args.batch})", "",
             f"| algo | log2 D | layout | mode | ms / batch ({args.stat}) | gradients alone, same rounds (ms) | "
             "ex/s | sketch overhead | implicit / explicit time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['vs_explicit']:.2f}" if r["mode"] == "implicit" else ""
        lines.append(f"| {r['algo']} | {r['log_d']} | {r['layout']} | {r['mode']} | "
                     f"{r['t'] * 1e3:.0f} | {r['t_grad'] * 1e3:.0f} | {r['ex_s']:.1f} | "
                     f"{r['overhead'] * 100:+.0f}% | {ratio} |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gradients.md").write_text(table + "\n")

    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows)), 4))
    labels = [f"{r['algo']} 2^{r['log_d']}\n{r['layout']} {r['mode'][:3]}" for r in rows]
    ax.bar(range(len(rows)), [100 * r["overhead"] for r in rows], color=[
        "tab:blue" if r["mode"] == "explicit" else "tab:orange" for r in rows])
    ax.axhline(20, color="gray", ls=":", label="goal: 20% overhead")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("time added by sketching (% of gradients alone)")
    ax.set_title(f"GPT-2 ({n_params / 1e6:.2f}M params) per-example sketches, backend {backend}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bench_gradients.png", dpi=120)
    print(f"wrote {out / 'bench_gradients.md'} and {out / 'bench_gradients.png'}")


if __name__ == "__main__":
    main()
