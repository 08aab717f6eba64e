"""``sketchcore intrinsic-dim``: run the search on a built-in task or on ``--task-factory``."""

from __future__ import annotations

import argparse

__all__ = ["add_cli", "run_cli"]


def _parse_options(items):
    """``key=value`` sketch options; values parsed as int, then float, else kept as text."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--sketch-option expects key=value, got {item!r}")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        out[key] = value
    return out


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "intrinsic-dim",
        help="find the intrinsic dimension D* (one-run nested-subspace search)",
        description="Train only omega in theta = theta0 + Phi^T omega inside nested subspaces, "
                    "doubling d when progress stalls, until the metric reaches the target "
                    "(default 90%% of full fine-tuning); then check D*/2 stays below it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--task", default="digits", choices=["planted", "digits", "minilm"],
                     help="built-in task")
    src.add_argument("--task-factory", metavar="MODULE:FUNCTION",
                     help="a function returning a sketchcore_intrinsic_dim.tasks.Task")
    p.add_argument("--algo", default="afjl", help="sketch algorithm (see `sketchcore info`)")
    p.add_argument("--sketch-option", action="append", metavar="KEY=VALUE",
                   help="sketch option, repeatable (afjl defaults to preconditioner=fft)")
    p.add_argument("--d-max", type=int, default=4096)
    p.add_argument("--d-start", type=int, default=16)
    p.add_argument("--check-every", type=int, default=50, help="steps between evaluations")
    p.add_argument("--max-steps", type=int, default=2000, help="step budget of the search")
    p.add_argument("--delta", type=float, default=None,
                   help="a check that beats the best metric by less is stale "
                        "(default: 1%% of the gap to the target)")
    p.add_argument("--patience", type=int, default=2,
                   help="stale checks in a row before d doubles (1 = the paper's rule)")
    tg = p.add_mutually_exclusive_group()
    tg.add_argument("--target", type=float, default=None, help="metric to reach (skips baseline)")
    tg.add_argument("--target-fraction", type=float, default=0.9,
                    help="fraction of the full fine-tuning metric to reach")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate for omega")
    p.add_argument("--baseline-lr", type=float, default=1e-3, help="Adam lr, full fine-tuning")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-verify", action="store_true", help="skip the D*/2 run")
    p.add_argument("--no-refine", action="store_true",
                   help="stop after the D*/2 run even when it reaches the target")
    p.add_argument("--bisect", action="store_true", help="also run a bisection over D")
    p.add_argument("--num-params", type=int, default=1024, help="planted task: N")
    p.add_argument("--rank", type=int, default=24, help="planted task: planted rank k")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (1 is fastest for small models on few cores)")
    p.add_argument("--out", default=None, help="folder for intrinsic_dim.json and .png")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_cli)


def _load_task(args):
    from . import tasks

    if args.task_factory:
        import importlib

        mod, sep, fn = args.task_factory.partition(":")
        if not sep:
            raise SystemExit(f"--task-factory expects MODULE:FUNCTION, got {args.task_factory!r}")
        return getattr(importlib.import_module(mod), fn)()
    if args.task == "planted":
        return tasks.planted_task(num_params=args.num_params, rank=args.rank)
    if args.task == "minilm":
        return tasks.minilm_task(progress=not args.no_progress)
    return tasks.digits_task()


def run_cli(args) -> int:
    from pathlib import Path

    from .api import intrinsic_dimension, plot_report

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sketch = {"algo": args.algo, **_parse_options(args.sketch_option)}
    if args.algo == "afjl":
        sketch.setdefault("preconditioner", "fft")
    task = _load_task(args)
    report = intrinsic_dimension(
        task.model, task.loss_fn, task.train_data, task.metric, d_max=args.d_max,
        d_start=args.d_start, seeds=args.seeds, sketch=sketch, target=args.target,
        target_fraction=args.target_fraction, check_every=args.check_every,
        max_steps=args.max_steps, delta=args.delta, patience=args.patience, lr=args.lr,
        baseline_lr=args.baseline_lr, batch_size=args.batch_size, verify=not args.no_verify,
        refine=not args.no_refine, bisect=args.bisect,
        progress=not args.no_progress)
    print(f"task {task.name}: {task.info}")
    print(report.table())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report.to_json(out / "intrinsic_dim.json")
        plot_report(report, out / "intrinsic_dim.png", title=f"{task.name}: {args.algo}")
        print(f"wrote {out / 'intrinsic_dim.json'} and {out / 'intrinsic_dim.png'}")
    return 0 if all(s.dimension is not None for s in report.seeds) else 1
