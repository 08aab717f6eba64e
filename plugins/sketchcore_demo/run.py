"""The main job: train a small CNN on bundled digits (or the user's arrays), then run training
data attribution, the Hessian spectrum and the intrinsic-dimension search on it, and write a
report folder (summary.md, PNG figures, results.json, CSV tables)."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .report import Report, attribution_grid
from .threads import torch_threads

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """Every knob of the demo (the CLI exposes each as an option)."""

    out: str = "sketchcore-report"
    data: str | None = None  # None: scikit-learn digits; else an .npz with arrays x, y
    algo: str = "affd"
    out_dim: int = 2048
    seed: int = 0
    backend: str | None = None
    epochs: int = 30
    width: int = 8
    mislabeled: int = 12
    test_examples: int = 4
    top_k: int = 5
    eigenvalues: int = 10
    hessian_batches: int = 4
    id_d_max: int = 4096
    id_max_steps: int = 3000
    id_check_every: int = 25
    id_seeds: tuple[int, ...] = (0, 1, 2)
    threads: int | None = 1  # torch intra-op threads (None: torch's default), see threads.py
    progress: bool = True

    @classmethod
    def quick(cls, **overrides) -> DemoConfig:
        """A run of about 20 s on 2 cores: fewer epochs, smaller D, shorter searches."""
        base = dict(epochs=10, out_dim=512, eigenvalues=6, hessian_batches=2, id_d_max=2048,
                    id_max_steps=1500, id_check_every=20, id_seeds=(0,))
        return cls(**{**base, **overrides})


def _log(msg: str) -> None:
    print(f"[sketchcore demo] {msg}", flush=True)


@contextmanager
def _stage(times: dict, name: str):
    """Time a stage of the run into ``times[name]`` (seconds) and log it."""
    t0 = time.perf_counter()
    yield
    times[name] = time.perf_counter() - t0
    _log(f"{name}: {times[name]:.1f} s")


def _load() -> str:
    """The 1-minute load average and the core count, to read the timings by."""
    try:
        return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    except OSError:  # pragma: no cover - no getloadavg on this platform
        return f"{os.cpu_count()} cores"


def run_demo(cfg: DemoConfig) -> Path:
    """Run everything; returns the path of the report's summary.md."""
    with torch_threads(cfg.threads) as threads:
        return _run(cfg, threads)


def _run(cfg: DemoConfig, threads: int) -> Path:
    import torch

    from sketchcore.gradients import GradientSketcher
    from sketchcore_examples.digits import flip_labels

    from .data import load_dataset
    from .model import accuracy, cross_entropy, make_cnn, train

    t_start = time.perf_counter()
    load_start = _load()
    times: dict[str, float] = {}
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    report = Report(out, "sketchcore demo report")
    report.record("config", asdict(cfg))
    ds = load_dataset(cfg.data, seed=cfg.seed)

    # ---- a model with a few deliberately mislabeled training examples ------------------------
    y_train, flipped = flip_labels(ds.y_train, min(cfg.mislabeled, len(ds.y_train)),
                                   ds.num_classes, cfg.seed)
    _log(f"data: {ds.name}: {len(ds.x_train)} train / {len(ds.x_test)} test, "
         f"{ds.num_classes} classes, {len(flipped)} training labels flipped")
    model = make_cnn(ds.image_shape, ds.num_classes, seed=cfg.seed, width=cfg.width)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    with _stage(times, "training"):
        losses = train(model, ds.x_train, y_train, epochs=cfg.epochs, seed=cfg.seed,
                       progress=cfg.progress)
    model.eval()
    acc = accuracy(model, ds.x_test, ds.y_test)
    n_params = sum(p.numel() for p in model.parameters())
    _log(f"trained a CNN with {n_params} parameters: test accuracy {acc:.3f}")
    report.section(
        "Model",
        f"A CNN with {n_params} parameters trained for {cfg.epochs} epochs (Adam) on {ds.name} "
        f"({len(ds.x_train)} train / {len(ds.x_test)} test images, {ds.num_classes} classes), "
        f"with {len(flipped)} training labels deliberately flipped. Final training loss "
        f"{losses[-1]:.4f}; **test accuracy {acc:.3f}**.",
    )
    report.record("model", dict(num_params=n_params, test_accuracy=acc, train_loss=losses,
                                flipped=flipped.tolist()))
    sketch = dict(algo=cfg.algo, out_dim=cfg.out_dim, seed=cfg.seed)
    if cfg.backend is not None:  # a Sketch that applies with the named backend
        import sketchcore as sk

        sketch = sk.Sketch(in_dim=n_params, backend=cfg.backend, **sketch)
    gs = GradientSketcher(model, cross_entropy, sketch=sketch)

    with _stage(times, "training data attribution"):
        _tda(cfg, report, gs, ds, y_train, flipped, model)
    with _stage(times, "Hessian spectrum"):
        _spectrum(cfg, report, gs, ds, y_train)
    with _stage(times, "intrinsic dimension"):
        id_times = _intrinsic_dimension(cfg, report, ds, init_state)

    seconds = time.perf_counter() - t_start
    report.record("seconds", seconds)
    report.record("stage_seconds", {**times, **id_times})
    # what torch ran with: a library that resets the count (numba once did) shows up here
    report.record("torch_threads", {"set": threads, "at_end": torch.get_num_threads()})
    report.section("Run", f"Sketch: `{cfg.algo}`, D = {cfg.out_dim}, seed {cfg.seed}, backend "
                   f"{cfg.backend or 'automatic'}, torch intra-op threads {threads}. Total time "
                   f"{seconds:.0f} s ({load_start} at the start, {_load()} at the end). "
                   f"Regenerate with `sketchcore demo --out {cfg.out}`.")
    rows = [[name, round(t, 1)] for name, t in times.items()]
    rows += [[f"  of which {name}", round(t, 1)] for name, t in id_times.items()]
    report.table(["stage", "wall time (s)"], [*rows, ["total", round(seconds, 1)]])
    path = report.write()
    _log(f"report written to {path} ({seconds:.0f} s)")
    return path


def _tda(cfg, report, gs, ds, y_train, flipped, model) -> None:
    import torch

    from sketchcore_tda.api import SketchStore, attribute, build_store, self_influence

    store_path = Path(cfg.out) / "train_sketches.zarr"
    summary = build_store(store_path, gs, (ds.x_train, y_train), overwrite=True,
                          progress=cfg.progress)
    _log(summary.format().splitlines()[0] if summary.format() else "store built")
    store = SketchStore.open(store_path)
    pick = _pick_tests(model, ds, cfg.test_examples)
    m = len(pick)
    x_t, y_t = ds.x_test[pick], ds.y_test[pick]
    att = attribute(store, gs, (x_t, y_t), k=cfg.top_k, test_ids=pick)
    att.to_json(Path(cfg.out) / "attribution.json")
    att.to_csv(Path(cfg.out) / "attribution.csv")
    with torch.no_grad():
        preds = model(torch.from_numpy(x_t)).argmax(-1).numpy()
    rows = [(att.proponent_ids[i], att.proponent_scores[i], att.opponent_ids[i],
             att.opponent_scores[i]) for i in range(m)]
    attribution_grid(Path(cfg.out) / "attribution.png", x_t, y_t, preds, rows, ds.x_train,
                     y_train, k=cfg.top_k)
    agree = float(np.mean([np.mean(y_train[att.proponent_ids[i]] == y_t[i]) for i in range(m)]))
    ids, infl = self_influence(store)
    order = ids[np.argsort(-infl)]
    rank = {int(t): r for r, t in enumerate(order.tolist())}
    flipped_ranks = sorted(rank[int(f)] + 1 for f in flipped)
    top = max(1, int(0.05 * len(order)))
    found = sum(r <= top for r in flipped_ranks)
    report.section(
        "Training data attribution",
        f"Per-example gradient sketches of all {len(order)} training examples "
        f"({summary.examples_per_second:.0f} examples/s) were stored in `train_sketches.zarr`; "
        f"scores are sketched gradient inner products (TracIn at the final checkpoint). "
        f"Each row of the figure: a test image, its top-{cfg.top_k} proponents (green) and "
        f"opponents (red) among the training images, with their labels and scores.",
    )
    report.image("attribution.png", "proponents and opponents")
    report.lines.append("Top proponents / opponents (train ids):\n")
    report.table(["test id", "label", "pred", "proponents", "opponents"],
                 [[int(att.test_ids[i]), int(y_t[i]), int(preds[i]),
                   " ".join(map(str, att.proponent_ids[i].tolist())),
                   " ".join(map(str, att.opponent_ids[i].tolist()))] for i in range(m)])
    report.lines.append(
        f"The top-{cfg.top_k} proponents carry the test example's label in {agree:.0%} of cases "
        f"(chance: 1/{ds.num_classes} = {1 / ds.num_classes:.0%}).\n")
    report.lines.append(
        f"**Mislabeled examples.** Ranked by self-influence `|Φ∇L(z)|²`, {found} of the "
        f"{len(flipped)} flipped training examples are in the top 5% ({top} of {len(order)}); "
        f"their ranks: {', '.join(map(str, flipped_ranks))}.\n")
    report.csv("self_influence.csv", ["train_id", "self_influence", "flipped"],
               [[int(i), float(v), int(i) in set(flipped.tolist())] for i, v in zip(ids, infl)])
    report.record("tda", dict(attribution=att.to_dict(), flipped_ranks=flipped_ranks,
                              proponent_label_agreement=agree, num_classes=ds.num_classes,
                              num_train=len(order),
                              flipped_in_top5pct=found, store_examples_per_second=summary.examples_per_second))


def _pick_tests(model, ds, m: int) -> np.ndarray:
    """Test examples worth looking at: the first misclassified one (if any), then the first of
    each class in turn, so the grid shows different digits."""
    import torch

    with torch.no_grad():
        pred = model(torch.from_numpy(ds.x_test)).argmax(-1).numpy()
    wrong = np.flatnonzero(pred != ds.y_test)
    chosen = [int(wrong[0])] if len(wrong) else []
    for c in range(ds.num_classes):
        if len(chosen) >= m:
            break
        first = np.flatnonzero((ds.y_test == c) & (pred == ds.y_test))
        if len(first) and int(first[0]) not in chosen:
            chosen.append(int(first[0]))
    return np.asarray(sorted(chosen[:m]), dtype=np.int64)


def _spectrum(cfg, report, gs, ds, y_train) -> None:
    from sketchcore_spectrum.api import reference_spectrum, sketcher_spectrum

    bs = 256
    batches = [(ds.x_train[i : i + bs], y_train[i : i + bs])
               for i in range(0, min(len(ds.x_train), bs * cfg.hessian_batches), bs)]
    batches = [tuple(_torch(a) for a in b) for b in batches]
    res = sketcher_spectrum(gs, batches, k=cfg.eigenvalues, seed=cfg.seed, progress=cfg.progress)
    # the top eigenvalue of the unsketched H (Lanczos on exact HVPs in R^N): a check of the sketch
    exact = reference_spectrum(gs, batches, 1, method="lanczos", tol=1e-6, seed=cfg.seed,
                               converge_on="top")
    exact_max = float(exact["top"][0])
    _log(f"spectrum: lambda_max {res.lambda_max:.4g} (unsketched {exact_max:.4g}), lambda_min "
         f"{res.lambda_min:.4g}, RNEG {res.rneg:.3g}, {res.n_outliers} outliers")
    _plot_spectrum(Path(cfg.out) / "spectrum.png", res)
    report.section(
        "Hessian spectrum",
        f"Lanczos with full re-orthogonalization on the sketched HVP operator `v -> Φ H Φᵀ v` in "
        f"R^{res.dim} (loss averaged over {len(batches)} batches of {bs}); the Krylov space held "
        f"{res.krylov_nbytes / 2**20:.2f} MiB (unsketched, in R^{res.num_params}: "
        f"{(res.unsketched_krylov_nbytes or 0) / 2**20:.2f} MiB).",
    )
    report.table(["", "value"], [
        ["λ_max", res.lambda_max],
        [f"λ_max of the unsketched H (Lanczos on exact HVPs in R^{gs.num_params}, "
         f"{exact['num_iter']} iterations)", exact_max],
        ["λ_min", res.lambda_min], ["RNEG = |λ_min|/λ_max", res.rneg],
        [f"outliers (λ_n/λ_1 > {res.outlier_threshold})", res.n_outliers],
        ["gradient-outlier alignment", res.alignment if res.alignment is not None else "-"],
        ["Lanczos iterations", res.num_iter], ["converged", res.converged]])
    report.table(["n", "top λ_n", "R_n = λ_n/λ_1", "bottom λ_n"],
                 [[i + 1, float(t), float(r), float(b)] for i, (t, r, b) in
                  enumerate(zip(res.top, res.ratios, res.bottom))])
    report.image("spectrum.png", "top and bottom Hessian eigenvalues")
    report.record("spectrum", {**res.to_dict(), "exact_lambda_max": exact_max,
                               "exact_num_iter": exact["num_iter"]})


def _torch(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def _plot_spectrum(path, res) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    n = np.arange(1, len(res.top) + 1)
    ax.bar(n - 0.2, res.top, width=0.4, label="top (largest)")
    ax.bar(n + 0.2, res.bottom, width=0.4, label="bottom (smallest)")
    ax.axhline(res.outlier_threshold * res.lambda_max, ls="--", c="gray", lw=0.8,
               label=f"outlier threshold ({res.outlier_threshold} λ_max)")
    ax.set_xlabel("n")
    ax.set_ylabel("eigenvalue")
    ax.set_title(f"sketched Hessian spectrum (D={res.dim}): RNEG={res.rneg:.3g}, "
                 f"{res.n_outliers} outliers", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _intrinsic_dimension(cfg, report, ds, init_state) -> None:
    from sketchcore_intrinsic_dim.api import intrinsic_dimension, plot_report

    from .model import accuracy, cross_entropy, make_cnn

    model = make_cnn(ds.image_shape, ds.num_classes, seed=cfg.seed, width=cfg.width)
    model.load_state_dict(init_state)  # theta0: the same initialization, correct labels

    def metric(m):
        return accuracy(m, ds.x_test, ds.y_test)

    res = intrinsic_dimension(
        model, cross_entropy, (ds.x_train, ds.y_train), metric, d_max=cfg.id_d_max,
        seeds=list(cfg.id_seeds), sketch=dict(algo=cfg.algo, seed=cfg.seed),
        max_steps=cfg.id_max_steps, check_every=cfg.id_check_every, progress=cfg.progress)
    plot_report(res, Path(cfg.out) / "intrinsic_dimension.png")
    res.to_json(Path(cfg.out) / "intrinsic_dimension.json")
    dims = res.dimensions
    refined = [s.refined_dimension for s in res.seeds]
    runs = [r for s in res.seeds for r in (s.search, *s.verifications) if r is not None]
    sub_steps, sub_seconds = sum(r.steps for r in runs), sum(r.seconds for r in runs)
    times = {"full fine-tuning baseline": res.baseline.seconds,
             "subspace training (searches and D*/2 checks)": sub_seconds}
    _log(f"intrinsic dimension: D* = {dims}, refined {refined} (target {res.target:.3f})")
    base = res.baseline.metric if res.baseline is not None else float("nan")
    report.section(
        "Intrinsic dimension",
        f"Training only ω in θ = θ0 + Φᵀω from the initial weights θ0 (N = {res.num_params}), "
        f"with `{cfg.algo}` as Φ, in one run: the first d coordinates of ω are trained and d "
        f"doubles whenever the test accuracy stalls; the target is 90% of full training's "
        f"accuracy ({base:.3f} → target {res.target:.3f}); D*/2 is then trained alone to check "
        f"that it stays below the target (when it does not, D*/4, ... follow, and 'refined D*' "
        f"is the smallest d that reached the target).",
    )
    report.lines.append(
        f"Full fine-tuning (the baseline): {res.baseline.steps} steps in "
        f"{res.baseline.seconds:.1f} s ({res.baseline.steps / res.baseline.seconds:.0f} steps/s); "
        f"subspace training (searches and D*/2 checks): {sub_steps} steps in {sub_seconds:.1f} s "
        f"({sub_steps / max(sub_seconds, 1e-9):.0f} steps/s), both with evaluations every "
        f"{cfg.id_check_every} steps.\n")
    report.lines.append("```\n" + res.table() + "\n```\n")
    report.image("intrinsic_dimension.png", "metric vs step with the doublings of d")
    report.record("intrinsic_dimension", res.to_dict())
    return times
