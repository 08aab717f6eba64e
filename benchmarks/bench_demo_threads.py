"""The demo's small CNN with torch's default intra-op threads against one thread, side by side:
steps/s of full fine-tuning (the intrinsic-dimension baseline) and of subspace training, and the
time of one exact Hessian-vector product (the spectrum's unit of work).

    python benchmarks/bench_demo_threads.py              # ~1-3 min, depending on the load
    python benchmarks/bench_demo_threads.py --rounds 2   # shorter

The settings alternate in short windows (each trainer keeps its state across windows), so both
see the same load; the table gives medians over the windows and the load average around them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="windows per setting")
    ap.add_argument("--steps", type=int, default=100, help="training steps per window")
    ap.add_argument("--hvps", type=int, default=3, help="HVPs per window")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from sketchcore.gradients import GradientSketcher
    from sketchcore_demo.data import load_dataset
    from sketchcore_demo.model import accuracy, cross_entropy, make_cnn
    from sketchcore_demo.run import DemoConfig
    from sketchcore_intrinsic_dim.api import make_full_trainer, make_subspace_trainer

    cfg = DemoConfig()
    default = torch.get_num_threads()
    settings = {f"torch default ({default})": default, "one thread": 1}
    ds = load_dataset(None, seed=0)
    model = make_cnn(ds.image_shape, ds.num_classes, seed=0, width=cfg.width)
    data = (ds.x_train, ds.y_train)

    def metric(m):
        return accuracy(m, ds.x_test, ds.y_test)

    work = {}
    for name in settings:
        sub = make_subspace_trainer(model, cross_entropy, data, metric, d_max=cfg.id_d_max,
                                    sketch={"algo": cfg.algo, "seed": 0}, seed=0)
        sub.set_dim(256)
        work[name] = {"full": make_full_trainer(model, cross_entropy, data, metric, seed=0),
                      "subspace": sub}
    gs = GradientSketcher(model, cross_entropy, sketch=None)
    batches = [(torch.from_numpy(ds.x_train[i:i + 256]), torch.from_numpy(ds.y_train[i:i + 256]))
               for i in range(0, 256 * cfg.hessian_batches, 256)]
    hvp = gs.hvp_full_operator(batches)
    v = np.random.default_rng(0).standard_normal(gs.num_params)

    rates = {(n, k): [] for n in settings for k in ("full", "subspace", "hvp")}
    load_before = os.getloadavg()[0]
    t_all = time.perf_counter()
    for _ in range(args.rounds):
        for name, threads in settings.items():
            torch.set_num_threads(threads)
            for kind, trainer in work[name].items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    trainer.step()
                rates[name, kind].append(args.steps / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for _ in range(args.hvps):
                hvp(v)
            rates[name, "hvp"].append((time.perf_counter() - t0) / args.hvps * 1e3)
    torch.set_num_threads(default)
    print(f"# demo CNN, N={gs.num_params}; {os.cpu_count()} cores; load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; {args.rounds} windows of "
          f"{args.steps} steps per setting; {time.perf_counter() - t_all:.0f} s")
    print(f"{'threads':<22} {'full FT steps/s':>16} {'subspace steps/s':>17} "
          f"{'exact HVP ms':>13}   (medians; min-max)")
    for name in settings:
        cells = []
        for kind in ("full", "subspace", "hvp"):
            xs = rates[name, kind]
            cells.append(f"{statistics.median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})")
        print(f"{name:<22} {cells[0]:>16} {cells[1]:>17} {cells[2]:>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
