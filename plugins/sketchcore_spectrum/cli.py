"""``sketchcore spectrum run | evolution | accuracy``: handlers import what they need."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_cli"]


def _dims(text: str) -> list[int]:
    """``"8:12"`` -> 2^8..2^12; ``"256,1024"`` -> those sizes."""
    try:
        if ":" in text:
            lo, hi = (int(x) for x in text.split(":"))
            return [2**e for e in range(lo, hi + 1)]
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"dims must be 'LO:HI' (log2 range, e.g. 8:12) or a comma list (e.g. 256,1024), "
            f"got {text!r}.") from None


def _task_kwargs(args) -> dict:
    kw = {}
    for item in args.task_arg or []:
        key, sep, val = item.partition("=")
        if not sep:
            raise SystemExit(f"--task-arg expects KEY=VALUE, got {item!r}.")
        try:
            kw[key] = json.loads(val)
        except json.JSONDecodeError:
            kw[key] = val
    return kw


def _setup(args):
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    from .tasks import load_task

    return load_task(args.task, **_task_kwargs(args))


def _sketch(args) -> dict | str:
    if args.algo == "none":
        return "none"
    return {"algo": args.algo, "out_dim": args.dim, "seed": args.sketch_seed}


def _run(args) -> int:
    from pathlib import Path

    from .api import hessian_spectrum

    task = _setup(args)
    res = hessian_spectrum(task.model, task.loss_fn, task.hessian_batches, sketch=_sketch(args),
                           k=args.k, num_batches=args.num_batches, method=args.method,
                           max_iter=args.max_iter, tol=args.tol, seed=args.seed,
                           outlier_threshold=args.outlier_threshold, forward=task.forward,
                           progress=True)
    print(res.summary())
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res.to_dict(), indent=1, default=str))
        print(f"wrote {out}")
    return 0


def _evolution(args) -> int:
    from pathlib import Path

    from .evolution import SpectrumCallback, spectrum_evolution

    task = _setup(args)
    opts = dict(k=args.k, method=args.method, max_iter=args.max_iter, tol=args.tol,
                seed=args.seed, outlier_threshold=args.outlier_threshold, forward=task.forward)
    if args.checkpoints:
        evo = spectrum_evolution(task.model, task.loss_fn, args.checkpoints, task.hessian_batches,
                                 sketch=_sketch(args), num_batches=args.num_batches, **opts)
    else:
        cb = SpectrumCallback(task.loss_fn, task.hessian_batches, every=args.every,
                              sketch=_sketch(args), num_batches=args.num_batches, **opts)
        task.train(args.train_steps, callback=cb)
        evo = cb.evolution
    out = Path(args.out)
    print(evo.table())
    paths = [evo.write_csv(out / "spectrum_evolution.csv"),
             evo.write_json(out / "spectrum_evolution.json"),
             *evo.plot(out, steps=args.plot_steps)]
    for p in paths:
        print(f"wrote {p}")
    return 0


def _accuracy(args) -> int:
    from pathlib import Path

    from .accuracy import accuracy_study

    task = _setup(args)
    layers = None if args.layers is None else [x for x in args.layers.split(",") if x]
    study = accuracy_study(task.model, task.loss_fn, task.hessian_batches[: args.num_batches],
                           algos=args.algos.split(","), dims=args.dims, k=args.k,
                           sketch_seeds=list(range(args.sketch_seeds)), reference=args.reference,
                           layers=layers, max_iter=args.max_iter, tol=args.tol, seed=args.seed,
                           forward=task.forward)
    print(study.table())
    if args.out:
        out = Path(args.out)
        for p in (study.write_json(out / "spectrum_accuracy.json"),
                  study.plot(out / "spectrum_accuracy.png")):
            print(f"wrote {p}")
    return 0


def _common(p, *, dim_default=1024):
    p.add_argument("--task", default="digits-mlp",
                   help="built-in task (digits-mlp, gpt2-text) or module:function returning a "
                        "SpectrumTask (default: digits-mlp)")
    p.add_argument("--task-arg", action="append", metavar="KEY=VALUE",
                   help="keyword argument for the task builder (JSON value), repeatable, "
                        "e.g. --task-arg train_steps=0")
    p.add_argument("--k", type=int, default=10, help="eigenvalues at each end (default 10)")
    p.add_argument("--num-batches", type=int, default=None,
                   help="average the loss over this many of the task's Hessian batches")
    p.add_argument("--method", choices=("lanczos", "arnoldi"), default="lanczos")
    p.add_argument("--max-iter", type=int, default=None, help="Krylov dimension cap")
    p.add_argument("--tol", type=float, default=1e-6, help="relative Ritz residual tolerance")
    p.add_argument("--seed", type=int, default=0, help="Lanczos start-vector seed")
    p.add_argument("--outlier-threshold", type=float, default=0.2)
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads (1 is faster on a busy machine)")


def _sketch_args(p):
    p.add_argument("--algo", default="affd",
                   help="sketch algorithm (dense, fjl, ffd, affd, afjl, qk) or 'none' (exact)")
    p.add_argument("--dim", type=int, default=1024, help="sketch dimension D (default 1024)")
    p.add_argument("--sketch-seed", type=int, default=0)


def add_cli(subparsers) -> None:
    """Add ``sketchcore spectrum`` with its ``run``, ``evolution`` and ``accuracy`` commands."""
    p = subparsers.add_parser("spectrum", help="Hessian eigenvalues from sketched HVPs",
                              description="Top and bottom Hessian eigenvalues by Lanczos on the "
                                          "sketched HVP operator, RNEG, outliers, evolution over "
                                          "training, accuracy against exact eigenvalues.")
    sub = p.add_subparsers(dest="spectrum_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    r = sub.add_parser("run", help="spectrum of one model")
    _common(r)
    _sketch_args(r)
    r.add_argument("--out", default=None, help="write the result as JSON here")
    r.set_defaults(func=_run)

    e = sub.add_parser("evolution", help="spectra over training (checkpoints or a short run)")
    _common(e)
    _sketch_args(e)
    e.add_argument("--checkpoints", nargs="+", default=None,
                   help="paths of torch state_dicts (step = last number in the file name); "
                        "without them the task is trained and analysed every --every steps")
    e.add_argument("--train-steps", type=int, default=100)
    e.add_argument("--every", type=int, default=20)
    e.add_argument("--plot-steps", type=int, nargs="+", default=None)
    e.add_argument("--out", default="spectrum_evolution", help="output folder")
    e.set_defaults(func=_evolution)

    a = sub.add_parser("accuracy", help="sketched vs exact top-k eigenvalues (Table 7)")
    _common(a)
    a.add_argument("--algos", default="affd,afjl,qk")
    a.add_argument("--dims", type=_dims, default=_dims("8:11"),
                   help="log2 range LO:HI or comma list of D (default 8:11)")
    a.add_argument("--sketch-seeds", type=int, default=1, help="sketch seeds per (algo, D)")
    a.add_argument("--reference", choices=("auto", "eigh", "lanczos"), default="auto")
    a.add_argument("--layers", default=None,
                   help="comma list of parameter-name prefixes for the layer baseline "
                        "(default: first, middle, last module; empty string: none)")
    a.add_argument("--out", default=None, help="output folder for JSON and plot")
    a.set_defaults(func=_accuracy)
