"""``sketchcore tda``: build a sketch store, score test examples, evaluate against exact, measure
the LDS, inspect.

Only argparse is imported here; each handler imports what it needs when it runs.
"""

from __future__ import annotations

__all__ = ["add_cli"]

TASK_HELP = ("the model and data: 'package.module:function' or 'file.py:function' returning a "
             "sketchcore_tda.TDATask (built in: sketchcore_tda.example_tasks:digits, "
             "sketchcore_tda.example_tasks:tiny_gpt2, sketchcore_tda.example_tasks:minilm)")


def _task_args(p, required: bool = True) -> None:
    p.add_argument("--task", required=required, help=TASK_HELP)
    p.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="argument of the task function (repeatable), e.g. --task-arg epochs=3")


def add_cli(subparsers) -> None:
    """Add ``tda`` and its subcommands to the ``sketchcore`` parser."""
    p = subparsers.add_parser("tda", help="training data attribution with gradient sketches",
                              description="Training data attribution with gradient sketches.")
    sub = p.add_subparsers(dest="tda_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    b = sub.add_parser("build", help="sketch every training example's gradient into a store")
    _task_args(b)
    b.add_argument("--store", required=True, help="directory of the zarr store to write")
    b.add_argument("--algo", default="affd", help="sketch algorithm (default affd)")
    b.add_argument("--dim", type=int, default=4096, help="sketch dimension D (default 4096)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--sketch-option", action="append", default=[], metavar="KEY=VALUE",
                   help="algorithm option, e.g. preconditioner=fft (repeatable)")
    b.add_argument("--layout", default="flat", choices=["flat", "blocks", "factored"])
    b.add_argument("--mode", default="explicit", choices=["explicit", "implicit"])
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--chunk-rows", type=int, default=None,
                   help="rows per store chunk (default: about 8 MiB per chunk)")
    b.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process (default); ray: shards as Ray tasks")
    b.add_argument("--workers", type=int, default=2, help="Ray workers (engine ray)")
    b.add_argument("--overwrite", action="store_true",
                   help="replace a store built with another sketch or model")
    b.add_argument("--trak", action="store_true",
                   help="a TRAK store: sketches of the gradients of the model output function "
                        "(the margin; a task may set info['trak_output']) and each example's "
                        "out-to-loss weight, for --method trak")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_build)

    s = sub.add_parser("scores", help="top-k proponents/opponents of test examples")
    s.add_argument("--store", action="append", required=True,
                   help="train store (repeat once per checkpoint: TracIn sums them)")
    s.add_argument("--weight", action="append", type=float, default=None,
                   help="TracIn weight per --store (e.g. learning rate); default 1")
    _task_args(s, required=False)
    s.add_argument("--use-recorded-task", action="store_true",
                   help="import and run the task function recorded in the store's metadata, "
                        "with its recorded arguments, instead of naming it with --task. That runs "
                        "code chosen by whoever built the store: use it only for stores you "
                        "built or trust. Without --task or this flag, scores stops and prints "
                        "the recorded task and the command to run")
    s.add_argument("--method", default="dot", choices=["dot", "cosine", "gauss-newton", "trak"],
                   help="trak: TRAK, on stores built with --trak (ensemble: one --store per "
                        "model, averaged); gauss-newton: (S^T S + lambda I)^-1 on loss gradients "
                        "(called trak before)")
    s.add_argument("--damping", type=float, default=None,
                   help="gauss-newton/trak: lambda in (S^T S + lambda I)^-1 (default: "
                        "gauss-newton 1e-3 x mean diagonal of S^T S, trak --relative-damping 1)")
    s.add_argument("--relative-damping", type=float, default=None,
                   help="lambda = this x tr(S^T S) / min(n, D), the mean nonzero eigenvalue")
    s.add_argument("--soft-threshold", type=float, default=None,
                   help="TRAK's soft-thresholding: scores become sign(x) max(|x| - this, 0)")
    s.add_argument("-k", "--top-k", type=int, default=5)
    s.add_argument("--self-influence", action="store_true",
                   help="rank train examples by self-influence instead of scoring test examples")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--json", help="write the results as JSON here")
    s.add_argument("--csv", help="write the results as CSV here")
    s.add_argument("--max-print", type=int, default=10, help="test examples printed (default 10)")
    s.set_defaults(func=_scores)

    e = sub.add_parser("evaluate", help="r of sketched vs exact gradient inner products")
    _task_args(e)
    e.add_argument("--algos", default="fjl,affd,afjl,qk,ffd")
    e.add_argument("--log2-dims", default="6,8,10,12", help="comma-separated log2 D values")
    e.add_argument("--n-train", type=int, default=64)
    e.add_argument("--n-test", type=int, default=64)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--seeds", type=int, default=1,
                   help="sketch seeds to average over: seed, seed+1, ... (default 1)")
    e.add_argument("--no-reference", action="store_true",
                   help="skip the simulated ideal Gaussian sketch beside the algorithms")
    e.add_argument("--layers", default="module", choices=["module", "tensor", "none"])
    e.add_argument("--out", default="tda-eval", help="folder for table.txt, results.json, plot")
    e.set_defaults(func=_evaluate)

    d = sub.add_parser(
        "lds", help="linear datamodeling score: do the scores predict retrained models?",
        description="Train models on random alpha-subsets of the task's training set (cached), "
        "record their outputs on the test examples, and report per method, algorithm and D the "
        "mean Spearman correlation between the outputs the scores predict and the measured ones. "
        "The task function must accept train_subset= and model_seed= (tasks:digits does).")
    _task_args(d)
    d.add_argument("--methods", default="trak",
                   help="comma-separated of trak, gauss-newton, dot, cosine (default trak)")
    d.add_argument("--algos", default="affd", help="comma-separated sketch algorithms")
    d.add_argument("--log2-dims", default="9,10,11", help="comma-separated log2 D values")
    d.add_argument("--exact", action="store_true",
                   help="also unsketched features (D = N; small models only)")
    d.add_argument("--num-models", type=int, default=50, help="subset models M (default 50)")
    d.add_argument("--alpha", type=float, default=0.5, help="subset fraction (default 0.5)")
    d.add_argument("--ensemble", type=int, default=1,
                   help="full-data models whose scores are averaged (default 1)")
    d.add_argument("--n-test", type=int, default=None, help="score the first N test examples")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--damping", type=float, default=None)
    d.add_argument("--relative-damping", type=float, default=None)
    d.add_argument("--soft-threshold", type=float, default=None)
    d.add_argument("--batch-size", type=int, default=64)
    d.add_argument("--cache", default="lds-cache",
                   help="folder of subsets, models, outputs and stores (shared; resumable)")
    d.add_argument("--out", default="tda-lds", help="folder for table.txt, results.json, plot")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_lds)

    i = sub.add_parser("info", help="a store's metadata and completeness")
    i.add_argument("--store", required=True)
    i.set_defaults(func=_info)

    v = sub.add_parser("verify", help="check every chunk of a store against its checksums",
                       description="Read every row chunk of a store and check it against the "
                       "checksums recorded when it was written. Lists missing, damaged and "
                       "unreadable chunks with their rows; exits 1 if there are any. Running "
                       "the same build again rewrites them.")
    v.add_argument("--store", required=True)
    v.add_argument("--json", help="write the problems found as JSON here")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=_verify)


def _sketch_options(pairs) -> dict:
    from .task_spec import parse_task_args

    return parse_task_args(pairs)


def _build(args) -> int:
    from .build import build_store
    from .task_spec import load_task, make_sketcher, parse_task_args

    task_args = parse_task_args(args.task_arg)
    task = load_task(args.task, task_args)
    build = build_store
    sketch = {"algo": args.algo, "out_dim": args.dim, "seed": args.seed,
              **_sketch_options(args.sketch_option)}
    if args.trak:
        from .trak import build_trak_store, trak_sketcher

        gs = trak_sketcher(task, sketch, layout=args.layout, mode=args.mode)
        build = build_trak_store
    else:
        gs = make_sketcher(task, sketch, layout=args.layout, mode=args.mode)
    summary = build(
        args.store, gs, task.train, ids=task.train_ids, batch_size=args.batch_size,
        chunk_rows=args.chunk_rows, engine=args.engine, num_workers=args.workers,
        progress=not args.no_progress, overwrite=args.overwrite,
        extra={"task": {"spec": args.task, "args": task_args}},
    )
    print(summary.format())
    return 0


def _scores(args) -> int:
    import numpy as np

    from .query import check_sketcher, sketch_data, sketch_spec
    from .scores import Checkpoint, self_influence, top_k
    from .store import SketchStore
    from .task_spec import load_task, make_sketcher
    from .trak import trak_sketcher

    stores = [SketchStore.open(p, mode="r") for p in args.store]
    weights = args.weight or [1.0] * len(stores)
    if len(weights) != len(stores):
        raise SystemExit(f"got {len(weights)} --weight values for {len(stores)} --store values.")
    if args.self_influence:
        ids, vals = self_influence(stores, method=args.method, damping=args.damping,
                                   weights=weights, relative_damping=args.relative_damping)
        order = np.argsort(-vals, kind="stable")
        print(f"train examples with the highest self-influence ({args.method}):")
        print(f"{'rank':>5}  {'train id':>9}  {'self-influence':>15}")
        for r, j in enumerate(order[:args.top_k], start=1):
            print(f"{r:>5}  {int(ids[j]):>9}  {vals[j]:>15.6g}")
        rows = [{"train_id": int(ids[j]), "self_influence": float(vals[j])} for j in order]
        _write_rows(rows, args.json, args.csv)
        return 0
    cps, test_ids = [], None
    for store, w in zip(stores, weights):
        spec, targs = _task_for(store, args)
        task = load_task(spec, targs)
        maker = trak_sketcher if store.train_weights_record is not None else make_sketcher
        gs = maker(task, sketch_spec(store), layout=store.metadata["layout"],
                   mode=store.metadata["mode"])
        check_sketcher(store, gs)
        cps.append(Checkpoint(store, sketch_data(gs, task.test, batch_size=args.batch_size), w))
        test_ids = task.test_ids
    result = top_k(cps, k=args.top_k, method=args.method, damping=args.damping,
                   test_ids=test_ids, relative_damping=args.relative_damping,
                   soft_threshold=args.soft_threshold)
    print(result.format_table(max_tests=args.max_print))
    if args.json:
        result.to_json(args.json)
    if args.csv:
        result.to_csv(args.csv)
    return 0


def _task_for(store, args) -> tuple[str, dict]:
    """The task to load for a store: the one named with --task; the one recorded in the store
    only with --use-recorded-task (a store's metadata is someone else's data: naming code in it
    must never make this command run that code); else stop and say what to run."""
    from .errors import StoreMismatchError
    from .task_spec import parse_task_args

    if args.task:
        return args.task, parse_task_args(args.task_arg)
    recorded = store.metadata.get("task")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("spec"), str):
        raise StoreMismatchError(f"the store at {str(store.path)!r} records no task; name the "
                                 "model and data with --task module:function.")
    spec, targs = recorded["spec"], recorded.get("args") or {}
    if not isinstance(targs, dict):
        raise StoreMismatchError(f"the store at {str(store.path)!r} records task arguments that "
                                 f"are not a record ({type(targs).__name__}); pass --task.")
    if args.use_recorded_task:
        return spec, dict(targs)
    import shlex

    cmd = ["sketchcore", "tda", "scores", *(f"--store={p}" for p in args.store),
           f"--task={spec}", *(f"--task-arg={k}={v!r}" for k, v in targs.items())]
    raise StoreMismatchError(
        f"the store at {str(store.path)!r} was built with the task {_shown(spec)} and arguments "
        f"{_shown(targs)}. A store does not choose the code that scores run: if you trust that "
        f"task, name it:\n  {_shown(' '.join(shlex.quote(c) for c in cmd), 600)}\n"
        "or add --use-recorded-task to run the recorded one."
    )


def _shown(value, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape").decode("ascii")  # no control characters to the terminal
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more chars)"


def _write_rows(rows, json_path, csv_path) -> None:
    if json_path:
        import json

        with open(json_path, "w") as f:
            json.dump(rows, f, indent=1)
    if csv_path and rows:
        import csv

        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def _evaluate(args) -> int:
    from .evaluate import evaluate
    from .sources import as_source
    from .task_spec import load_task, make_sketcher, parse_task_args

    task = load_task(args.task, parse_task_args(args.task_arg))
    gs = make_sketcher(task, None)
    train = as_source(task.train).subset(0, args.n_train).arrays
    test = as_source(task.test).subset(0, args.n_test).arrays
    res = evaluate(gs, train, test, algos=[a for a in args.algos.split(",") if a],
                   log2_dims=[int(k) for k in args.log2_dims.split(",") if k], seed=args.seed,
                   seeds=range(args.seed, args.seed + max(1, args.seeds)),
                   reference=not args.no_reference,
                   layers=None if args.layers == "none" else args.layers)
    return _write_report(res, args.out, "r_vs_log2D.png",
                         f"{args.task}: sketched vs exact inner products")


def _write_report(res, folder, plot_name: str, title: str) -> int:
    """Print ``res``'s table; write it, its JSON and its plot into ``folder``."""
    import json
    from pathlib import Path

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    table = res.format_table()
    print(table)
    (out / "table.txt").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(res.to_dict(), indent=1))
    res.plot(out / plot_name, title=title)
    print(f"\nwrote {out / 'table.txt'}, {out / 'results.json'}, {out / plot_name}")
    return 0


def _lds(args) -> int:
    from .lds import lds
    from .task_spec import parse_task_args

    def names(text):
        return [x.strip() for x in text.split(",") if x.strip()]

    res = lds(args.task, parse_task_args(args.task_arg), methods=names(args.methods),
              algos=names(args.algos), log2_dims=[int(k) for k in names(args.log2_dims)],
              exact=args.exact, num_models=args.num_models, alpha=args.alpha,
              ensemble=args.ensemble, n_test=args.n_test, cache=args.cache, seed=args.seed,
              damping=args.damping, relative_damping=args.relative_damping,
              soft_threshold=args.soft_threshold, batch_size=args.batch_size,
              progress=not args.no_progress)
    return _write_report(res, args.out, "lds_vs_log2D.png", f"{args.task}: LDS vs sketch dimension")


def _info(args) -> int:
    import json

    from .store import SketchStore

    store = SketchStore.open(args.store, mode="r")
    missing = store.missing_chunks()
    print(json.dumps(store.metadata, indent=1, ensure_ascii=True))
    print(f"chunks complete: {store.num_chunks - len(missing)}/{store.num_chunks}"
          + (f" (missing: {missing[:10]}{' ...' if len(missing) > 10 else ''})" if missing else ""))
    print(f"size on disk: {store.nbytes_on_disk() / 2**20:.2f} MiB")
    print(f"(completion markers only; `sketchcore tda verify --store {args.store}` checks every "
          "chunk's bytes)")
    return 0


def _verify(args) -> int:
    import json

    from .store import SketchStore

    store = SketchStore.open(args.store, mode="r")
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=store.num_examples, unit="ex", desc="verifying", dynamic_ncols=True)
    try:
        problems = store.verify(progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    if store.train_weights_record is not None:  # a TRAK store: its out-to-loss weights too
        problems += store.verify_train_weights()
    if args.json:
        with open(args.json, "w") as f:
            json.dump([p.__dict__ for p in problems], f, indent=1)
    if not problems:
        print(f"ok: all {store.num_chunks} chunks ({store.num_examples} rows) of {args.store} "
              "match their checksums")
        return 0
    rows = sum(p.stop - p.start for p in problems)
    print(f"{len(problems)} of {store.num_chunks} chunks ({rows} rows) of {args.store} cannot be "
          "served:")
    for p in problems[:50]:
        print(f"  {p.format()}")
    if len(problems) > 50:
        print(f"  ... {len(problems) - 50} more (see --json)")
    print("Run the same `sketchcore tda build` command again: it rewrites exactly these chunks.")
    return 1
