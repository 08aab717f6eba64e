"""Hessian spectrum benchmark: Table-7-style accuracy on a >= 1M-parameter transformer, the
memory of sketched vs unsketched Krylov spaces, and one evolution plot over a short training run.

    python benchmarks/bench_spectrum.py                      # full run (~10-15 min on 2 idle CPUs)
    python benchmarks/bench_spectrum.py --quick              # log2 D in {8, 10, 12}, fewer steps
    python benchmarks/bench_spectrum.py --only evolution     # just the evolution plot

Model: the GPT-2-config transformer of ``sketchcore_spectrum.tasks.gpt2_text`` (6 layers, width
128, ASCII tokens, ~1.21M parameters), trained ``--train-steps`` Adam steps on standard-library
source text. Reference: unsketched Lanczos with full re-orthogonalization on exact HVPs. The
loss is averaged over ``--hessian-batches`` batches. Memory: one sketched and one unsketched
Lanczos run with the same Krylov size, each in a fresh process, compared by the rise of the
resident-set high-water mark. Results (JSON, CSV, PNG) go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path


def _ensure_torch_gradients():
    """Fail early, with the fix, if the torch backend does not serve model gradients."""
    from sketchcore.registry import registry

    if not any(getattr(b, "gradients_module", None) == "sketchcore_torch.gradients"
               for b in registry().backends.values()):
        raise SystemExit("the torch backend is not registered for gradients; run "
                         "`pip install -e .[torch]` from the repository root.")


def _mib(x):
    return "-" if x is None else f"{x / 2**20:,.1f}"


#: the paper's Table 7: min log2 D for relative error < 0.2 / 0.1 / 0.05 on the top-10 eigenvalues
PAPER_TABLE7 = {"affd": (9, 10, 10), "afjl": (12, 12, 12), "qk": (13, 13, 13)}


def accuracy(args, out: Path) -> None:
    from sketchcore_spectrum.accuracy import accuracy_study
    from sketchcore_spectrum.tasks import gpt2_text

    t0 = time.perf_counter()
    task = gpt2_text(seq_len=args.seq_len, batch_size=args.batch_size,
                     hessian_batches=args.hessian_batches, train_steps=0)
    task.train(args.train_steps, progress=True)
    batches = task.hessian_batches
    n = sum(p.numel() for p in task.model.parameters())
    print(f"\nmodel: GPT-2 config, {n:,} parameters; trained {args.train_steps} steps "
          f"({time.perf_counter() - t0:.0f} s); Hessian of the mean loss over {len(batches)} "
          f"batches of {args.batch_size}x{args.seq_len} tokens; loss {_loss(task):.3f}")
    study = accuracy_study(task.model, task.loss_fn, batches, algos=args.algos, dims=args.dims,
                           k=args.k, sketch_seeds=range(args.sketch_seeds), reference="lanczos",
                           reference_max_iter=args.reference_iter, max_iter=args.max_iter,
                           tol=args.tol, layers=args.layers, measure_memory=True, progress=True)
    print()
    print(study.table())
    print("paper (Table 7, GPT-2), min log2 D for err < 0.2 / 0.1 / 0.05: " +
          ", ".join(f"{a} {'/'.join(map(str, v))}" for a, v in PAPER_TABLE7.items()))
    ref = study.reference
    print(f"\nreference: {ref['method']}, {ref['num_iter']} iterations, max Ritz residual "
          f"{ref['max_residual']:.2e}, {ref['seconds']:.0f} s")

    print("\nmemory (host, tracemalloc peak: numpy/Python allocations incl. the Krylov basis and "
          "N-vectors in flight; torch's own tensors are not traced)")
    print(f"{'run':<18}{'Krylov vecs':>12}{'basis MiB':>11}{'unsketched basis MiB':>22}"
          f"{'peak traced MiB':>17}{'s':>7}")
    print(f"{'reference (R^N)':<18}{ref['krylov_vectors']:>12}{_mib(ref['krylov_nbytes']):>11}"
          f"{_mib(ref['krylov_nbytes']):>22}{_mib(ref.get('peak_traced_bytes')):>17}"
          f"{ref['seconds']:>7.0f}")
    for r in study.rows:
        uns = r["krylov_vectors"] * n * 8
        name = f"{r['algo']} 2^{r['dim'].bit_length() - 1}"
        print(f"{name:<18}{r['krylov_vectors']:>12}{_mib(r['krylov_nbytes']):>11}{_mib(uns):>22}"
              f"{_mib(r['peak_traced_bytes']):>17}{r['seconds']:>7.0f}")
    study.write_json(out / "spectrum_accuracy.json")
    study.plot(out / "spectrum_accuracy.png")
    print(f"\nwrote {out / 'spectrum_accuracy.json'} and {out / 'spectrum_accuracy.png'}")


def _loss(task) -> float:
    import torch

    with torch.no_grad():
        vals = [float(task.loss_fn(task.model(b[0]), b)) for b in task.hessian_batches]
    return sum(vals) / len(vals)


def _vm_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_child(args) -> None:
    """One Lanczos run of exactly ``--memory-iter`` steps in a fresh process; prints JSON with the
    rise of the resident-set high-water mark during the run (model and batches already built)."""
    import numpy as np

    from sketchcore.gradients import GradientSketcher
    from sketchcore_spectrum.lanczos import extreme_eigenpairs
    from sketchcore_spectrum.tasks import gpt2_text

    task = gpt2_text(seq_len=args.seq_len, batch_size=args.batch_size,
                     hessian_batches=args.hessian_batches, train_steps=0)
    sketch = None if args.memory_child == "unsketched" else \
        {"algo": "affd", "out_dim": args.memory_dim, "seed": 0}
    gs = GradientSketcher(task.model, task.loss_fn, sketch=sketch)
    op = gs.hvp_full_operator(task.hessian_batches) if sketch is None else \
        gs.hvp_operator(task.hessian_batches)
    op(np.ones(gs.out_dim))  # warm up: autodiff graphs, sketch parameters
    try:  # reset the high-water mark (Linux >= 4.0); else report the rise over the old one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before = _vm_kib("VmHWM")
    t0 = time.perf_counter()
    res = extreme_eigenpairs(op, gs.out_dim, args.k, max_iter=args.memory_iter, tol=1e-300)
    print(json.dumps({"mode": args.memory_child, "dim": gs.out_dim, "num_params": gs.num_params,
                      "num_iter": res.num_iter, "krylov_nbytes": res.krylov_nbytes,
                      "hwm_before_kib": before, "hwm_after_kib": _vm_kib("VmHWM"),
                      "seconds": time.perf_counter() - t0}))


def memory(args, out: Path) -> None:
    """Peak resident memory of a sketched and an unsketched Lanczos run of the same Krylov size,
    each in a fresh process."""
    import subprocess

    rows = []
    for mode in ("sketched", "unsketched"):
        cmd = [sys.executable, __file__, "--memory-child", mode, "--memory-iter",
               str(args.memory_iter), "--memory-dim", str(args.memory_dim), "--k", str(args.k),
               "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
               "--hessian-batches", str(args.hessian_batches),
               "--torch-threads", str(args.torch_threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"\npeak memory, Lanczos with {args.memory_iter} Krylov vectors (fresh process each; "
          "rise of the resident high-water mark during the run, model already built)")
    print(f"{'run':<22}{'D':>10}{'Krylov basis MiB':>18}{'peak RSS rise MiB':>19}{'s':>7}")
    for r in rows:
        rise = (r["hwm_after_kib"] - r["hwm_before_kib"]) / 1024
        name = "sketched affd" if r["mode"] == "sketched" else "unsketched (exact HVP)"
        print(f"{name:<22}{r['dim']:>10}{r['krylov_nbytes'] / 2**20:>18.1f}{rise:>19.1f}"
              f"{r['seconds']:>7.0f}")
    (out / "spectrum_memory.json").write_text(json.dumps(rows, indent=1))


def evolution(args, out: Path) -> None:
    from sketchcore_spectrum.evolution import SpectrumCallback
    from sketchcore_spectrum.tasks import load_task

    task = load_task(args.evolution_task, train_steps=0)
    cb = SpectrumCallback(task.loss_fn, task.hessian_batches, every=args.evolution_every,
                          sketch=dict(algo="affd", out_dim=args.evolution_dim, seed=0), k=10,
                          forward=task.forward)
    t0 = time.perf_counter()
    task.train(args.evolution_steps, callback=cb, progress=True)
    evo = cb.evolution
    print(f"\nevolution: {task.name}, affd D={args.evolution_dim}, {len(evo.steps)} spectra in "
          f"{time.perf_counter() - t0:.0f} s")
    print(evo.table())
    paths = [evo.write_csv(out / "spectrum_evolution.csv"),
             evo.write_json(out / "spectrum_evolution.json"), *evo.plot(out)]
    print("wrote " + ", ".join(str(p) for p in paths))
    print("same with the CLI: sketchcore spectrum evolution --task "
          f"{args.evolution_task} --task-arg train_steps=0 --train-steps {args.evolution_steps} "
          f"--every {args.evolution_every} --dim {args.evolution_dim} --out {out}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out/spectrum")
    p.add_argument("--only", choices=("accuracy", "memory", "evolution"), default=None)
    p.add_argument("--memory-iter", type=int, default=40, help="Krylov size of the memory runs")
    p.add_argument("--memory-dim", type=int, default=1024, help="D of the sketched memory run")
    p.add_argument("--memory-child", choices=("sketched", "unsketched"), default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="smaller grid and fewer steps")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--algos", default="affd,afjl,qk")
    p.add_argument("--log2-dims", default="8,9,10,11,12,13,14",
                   help="log2 D values: a comma list or a LO:HI range")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--sketch-seeds", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--hessian-batches", type=int, default=2)
    p.add_argument("--max-iter", type=int, default=30)
    p.add_argument("--reference-iter", type=int, default=60)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--layers", default="transformer.wte.,transformer.h.0.mlp.",
                   help="comma list of parameter-name prefixes for the layer baseline")
    p.add_argument("--evolution-task", default="digits-mlp")
    p.add_argument("--evolution-steps", type=int, default=300)
    p.add_argument("--evolution-every", type=int, default=25)
    p.add_argument("--evolution-dim", type=int, default=1024)
    args = p.parse_args(argv)
    if ":" in args.log2_dims:
        lo, hi = (int(x) for x in args.log2_dims.split(":"))
        args.dims = [2**e for e in range(lo, hi + 1)]
    else:
        args.dims = [2**int(e) for e in args.log2_dims.split(",")]
    args.algos = args.algos.split(",")
    args.layers = [x for x in args.layers.split(",") if x]
    if args.quick:
        args.dims = [d for d in args.dims if d in (2**8, 2**10, 2**12)]
        args.train_steps, args.evolution_steps = min(args.train_steps, 60), 150
        args.max_iter, args.reference_iter = min(args.max_iter, 25), min(args.reference_iter, 40)
        args.memory_iter = min(args.memory_iter, 20)

    import torch

    torch.set_num_threads(args.torch_threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    _ensure_torch_gradients()
    if args.memory_child:
        memory_child(args)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.only in (None, "accuracy"):
        accuracy(args, out)
    if args.only in (None, "memory"):
        memory(args, out)
    if args.only in (None, "evolution"):
        evolution(args, out)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    (out / "command.json").write_text(json.dumps({"argv": sys.argv}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
