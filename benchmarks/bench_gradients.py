"""Throughput of per-example gradients alone vs gradients + sketch, explicit vs implicit.

A GPT-2 built from a transformers config (random weights, eager attention, >= 1M parameters) on
CPU. For each sequence length, algorithm (affd, afjl, qk), D (2^12, 2^16), layout (flat, blocks)
and mode (explicit, implicit) it measures examples/s of ``GradientSketcher.sketch_batch`` against
``full_gradients`` with no sketch (per-example gradients plus their (B, N) copy to numpy) on the
same batch. The cost of a per-example gradient grows with the tokens per example while the cost
of sketching it depends only on N, so the overhead is reported per sequence length.
The machine is shared and its load drifts, so the three are timed in interleaved rounds
(gradients, explicit, implicit, gradients, ...) per configuration and compared by the fastest of
the same rounds (on a busy machine the minimum estimates the uncontended time; pass --stat median
on a quiet one): the overhead of sketching ((t_sketch - t_grad) / t_grad; the goal is <= 20%) and
implicit / explicit time. ``--host-kernels off`` keeps CPU tensors on torch's own ops instead of
the numba kernels (``SKETCHCORE_TORCH_HOST_KERNELS=0``). Writes a markdown table and a bar plot
to --out.

    python benchmarks/bench_gradients.py                 # full grid
    python benchmarks/bench_gradients.py --quick         # D = 2^12, flat layout, 32 tokens
"""

from __future__ import annotations

import argparse
import gc
import json
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
    ap.add_argument("--seq-lens", default="32,128,512", help="tokens per example, a list")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--stat", choices=("min", "median"), default="min",
                    help="how the interleaved rounds are summarized")
    ap.add_argument("--algos", default="affd,afjl,qk")
    ap.add_argument("--log-d", default="12,16")
    ap.add_argument("--layouts", default="flat,blocks")
    ap.add_argument("--host-kernels", choices=("on", "off"), default="on",
                    help="CPU tensors through the numba kernels (on) or torch's own ops (off)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--replot", metavar="JSON", default=None,
                    help="only redraw the plot of a saved run (bench_gradients.json) next to it")
    ap.add_argument("--out", default="bench-out/gradients")
    args = ap.parse_args(argv)
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        print(plot_rows(saved["rows"], saved["seq_lens"], saved["route"], saved["n_params"],
                        Path(args.replot).with_suffix(".png")))
        return
    if args.quick:
        args.log_d, args.layouts, args.repeat, args.seq_lens = "12", "flat", 2, "32"
    import os

    os.environ["SKETCHCORE_TORCH_HOST_KERNELS"] = "1" if args.host_kernels == "on" else "0"
    seq_lens = [int(v) for v in args.seq_lens.split(",")]

    import torch
    from tqdm import tqdm

    import models
    import sketchcore as sk
    from sketchcore.gradients import GradientSketcher

    warnings.simplefilter("ignore", UserWarning)
    models.ensure_gradients_backend("torch")
    model = models.tiny_gpt2(n_layer=4, n_embd=128, n_head=4, vocab_size=2048,
                             n_positions=max(512, *seq_lens))
    n_params = sum(p.numel() for p in model.parameters())
    from sketchcore_torch import host

    backend = sk.resolve_backend(None, torch.zeros(1)).name
    hb = host.host_backend()
    route = (f"backend {backend!r}, CPU tensors through the {hb.name!r} host kernels" if hb
             else f"backend {backend!r} (torch ops)")
    print(f"GPT-2 config model: {n_params:,} parameters, batch {args.batch}, sequence lengths "
          f"{seq_lens}, torch {torch.__version__}, {torch.get_num_threads()} threads; sketches "
          f"of torch tensors: {route}")

    plain = GradientSketcher(model, models.causal_lm_loss, sketch=None)
    rows = []
    grid = [(t, a, int(d), lay) for t in seq_lens for a in args.algos.split(",")
            for d in args.log_d.split(",") for lay in args.layouts.split(",")]
    batches = {t: models.token_batch(args.batch, seq_len=t, vocab_size=2048) for t in seq_lens}
    for t in seq_lens:
        plain.full_gradients(batches[t])  # warm-up
    for seq, algo, log_d, layout in tqdm(grid, desc="configs"):
        batch = batches[seq]
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
            rows.append(dict(seq=seq, algo=algo, log_d=log_d, layout=layout, mode=mode,
                             t=med[mode], t_grad=med["grad"], ex_s=args.batch / med[mode],
                             overhead=(med[mode] - med["grad"]) / med["grad"],
                             vs_explicit=med[mode] / med["explicit"]))
    lines = [f"# Per-example gradient sketches of a {n_params:,}-parameter GPT-2 (CPU; {route})",
             "", "gradients alone (fastest round), batch of " + str(args.batch) + ": " +
             ", ".join(f"{t} tokens {args.batch / min(r['t_grad'] for r in rows if r['seq'] == t):.1f} ex/s"
                       for t in seq_lens), "",
             f"| tokens | algo | log2 D | layout | mode | ms / batch ({args.stat}) | gradients alone, "
             "same rounds (ms) | ex/s | sketch overhead | implicit / explicit time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['vs_explicit']:.2f}" if r["mode"] == "implicit" else ""
        lines.append(f"| {r['seq']} | {r['algo']} | {r['log_d']} | {r['layout']} | {r['mode']} | "
                     f"{r['t'] * 1e3:.0f} | {r['t_grad'] * 1e3:.0f} | {r['ex_s']:.1f} | "
                     f"{r['overhead'] * 100:+.0f}% | {ratio} |")
    lines += ["", "median sketch overhead per sequence length (all algorithms, D, layouts):"]
    for t in seq_lens:
        for mode in ("explicit", "implicit"):
            ov = sorted(r["overhead"] for r in rows if r["seq"] == t and r["mode"] == mode)
            lines.append(f"  {t:>4} tokens {mode:<8}: median {100 * statistics.median(ov):+.0f}%, "
                         f"best {100 * ov[0]:+.0f}%, worst {100 * ov[-1]:+.0f}%; "
                         f"{sum(o <= 0.2 for o in ov)}/{len(ov)} configurations within 20%")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gradients.md").write_text(table + "\n")

    (out / "bench_gradients.json").write_text(json.dumps(
        {"rows": rows, "seq_lens": seq_lens, "route": route, "n_params": n_params}, indent=1))
    plot_rows(rows, seq_lens, route, n_params, out / "bench_gradients.png")
    print(f"wrote {out / 'bench_gradients.md'}, .json and .png")


def plot_rows(rows, seq_lens, route, n_params, path):
    """One bar panel per sequence length: % of gradient time added by each configuration
    (blue explicit, orange implicit), the 20% goal dotted. ``python bench_gradients.py
    --replot bench_gradients.json`` redraws it from a saved run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = max(len([r for r in rows if r["seq"] == t]) for t in seq_lens)
    fig, axes = plt.subplots(len(seq_lens), 1, figsize=(max(6, 0.45 * per), 3.6 * len(seq_lens)),
                             squeeze=False)
    for ax, t in zip(axes[:, 0], seq_lens):
        sub = [r for r in rows if r["seq"] == t]
        labels = [f"{r['algo']} 2^{r['log_d']} {r['layout']} {r['mode'][:3]}" for r in sub]
        ax.bar(range(len(sub)), [100 * r["overhead"] for r in sub], color=[
            "tab:blue" if r["mode"] == "explicit" else "tab:orange" for r in sub])
        ax.axhline(20, color="gray", ls=":", label="goal: 20% overhead")
        ax.set_xticks(range(len(sub)), labels, fontsize=7, rotation=50, ha="right")
        ax.set_ylabel("% added to gradients")
        ax.set_title(f"{t} tokens per example (blue: explicit, orange: implicit)", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"GPT-2 ({n_params / 1e6:.2f}M params) per-example sketches; {route}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
