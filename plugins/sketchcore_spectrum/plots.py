"""matplotlib figures (Agg) of spectra: at chosen steps, over training, and accuracy vs D."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["plot_spectra_at_steps", "plot_evolution", "plot_accuracy"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _spread(steps, count=4):
    if len(steps) <= count:
        return list(steps)
    idx = sorted({round(i * (len(steps) - 1) / (count - 1)) for i in range(count)})
    return [steps[i] for i in idx]


def plot_spectra_at_steps(evolution, path, *, steps=None) -> Path:
    """Top (descending) and bottom (ascending) eigenvalues against their rank, one line per step
    (symmetric-log y axis so negative and outlier eigenvalues are both readable)."""
    plt = _pyplot()
    by_step = dict(zip(evolution.steps, evolution.results))
    steps = _spread(sorted(by_step)) if steps is None else list(steps)
    unknown = [s for s in steps if s not in by_step]
    if unknown:
        raise ValueError(f"no spectrum at steps {unknown}; available: {sorted(by_step)}.")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    cmap = plt.get_cmap("viridis")
    for i, s in enumerate(steps):
        r = by_step[s]
        color = cmap(i / max(len(steps) - 1, 1))
        ax.plot(np.arange(1, r.top.size + 1), r.top, "o-", color=color, label=f"step {s}")
        ax.plot(-np.arange(1, r.bottom.size + 1), r.bottom, "s--", color=color)
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_xlabel("rank n (positive: top lambda_n; negative: bottom, -n)")
    ax.set_ylabel("eigenvalue (sketched)")
    ax.set_title("Hessian extreme eigenvalues during training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_evolution(evolution, path) -> Path:
    """RNEG, outlier count (R_n > threshold) and lambda_max against the training step."""
    plt = _pyplot()
    rows = sorted(evolution.rows(), key=lambda r: r["step"])
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].plot(steps, [r["rneg"] for r in rows], "o-")
    axes[0].set_title("RNEG = |lambda_min| / lambda_max")
    axes[1].plot(steps, [r["n_outliers"] for r in rows], "o-", color="C1")
    sat = [(s, r["n_outliers"]) for s, r in zip(steps, rows) if r["outliers_saturated"]]
    if sat:
        axes[1].plot(*zip(*sat), "^", color="C3", label="all returned are outliers (>=)")
        axes[1].legend(fontsize=8)
    thr = evolution.results[0].outlier_threshold if evolution.results else 0.2
    axes[1].set_title(f"outliers (R_n > {thr})")
    axes[2].plot(steps, [r["lambda_max"] for r in rows], "o-", color="C2")
    axes[2].set_yscale("log" if all(r["lambda_max"] > 0 for r in rows) else "linear")
    axes[2].set_title("lambda_max")
    for ax in axes:
        ax.set_xlabel("training step")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy(study, path) -> Path:
    """Relative top-k error against log2 D per algorithm, with the layer baselines dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for algo, by_dim in study.errors().items():
        ax.plot([math.log2(d) for d in by_dim], list(by_dim.values()), "o-", label=algo)
    for i, r in enumerate(study.layer_rows):
        ax.axhline(r["rel_error"], ls="--", lw=0.8, color=f"C{(i + 4) % 10}",
                   label=f"layer {r['layer']}")
    for t in (0.2, 0.1, 0.05):
        ax.axhline(t, color="grey", lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("log2 D")
    ax.set_ylabel(f"relative error, top-{study.k} eigenvalues")
    ax.set_title(f"sketched Hessian eigenvalues vs {study.reference['method']} "
                 f"(N={study.num_params})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
