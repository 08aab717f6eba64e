"""``sketchcore demo [options]``."""

from __future__ import annotations

__all__ = ["add_parser"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train a small model on bundled data and run all three analyses (report folder)",
        description="Train a small CNN on scikit-learn's bundled digits (or your own .npz), then "
        "run training data attribution (proponents/opponents, mislabeled examples), the Hessian "
        "spectrum (top eigenvalues, RNEG, outliers) and the intrinsic-dimension search, and "
        "write a report folder with summary.md, PNG plots and JSON/CSV results. Nothing is "
        "downloaded; about 45 s on 2 CPU cores shared with other work (--quick: about 20 s).",
    )
    p.add_argument("--out", default="sketchcore-report", help="report folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a ~20 s run (fewer epochs, smaller D)")
    p.add_argument("--data", default=None, metavar="NPZ",
                   help="your own data: an .npz with arrays x (images or feature vectors) and y "
                   "(integer labels); default: scikit-learn's digits")
    p.add_argument("--algo", default="affd", help="sketch algorithm (see `sketchcore info`; "
                   "default: %(default)s)")
    p.add_argument("--dim", type=int, default=None, dest="out_dim",
                   help="sketch dimension D (default 2048; 512 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="seed of data split, model and sketches")
    p.add_argument("--backend", default=None, help="backend that applies the sketch to the model's gradients (torch tensors: 'torch' "
                   "or the reference 'generic' path; default: the best for torch tensors)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 30; 10 quick)")
    p.add_argument("--mislabeled", type=int, default=12,
                   help="training labels to flip, to see attribution find them (default 12)")
    p.add_argument("--id-seeds", type=int, nargs="+", default=None,
                   help="seeds of the intrinsic-dimension search (default: 0 1 2; 0 with --quick)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the model is small, and a second "
                   "thread makes every op wait when another process holds a core; 0: torch's "
                   "default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from .run import DemoConfig, run_demo

    given = dict(out=args.out, data=args.data, algo=args.algo, seed=args.seed,
                 backend=args.backend, mislabeled=args.mislabeled, progress=not args.no_progress,
                 threads=args.threads or None)
    if args.id_seeds is not None:
        given["id_seeds"] = tuple(args.id_seeds)
    if args.out_dim is not None:
        given["out_dim"] = args.out_dim
    if args.epochs is not None:
        given["epochs"] = args.epochs
    cfg = DemoConfig.quick(**given) if args.quick else DemoConfig(**given)
    run_demo(cfg)
    return 0
