"""Metric vs step for each seed, with the d doublings marked, the target and the baseline."""

from __future__ import annotations

__all__ = ["plot_report", "plot_reports"]


def _draw(ax, report, title):
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(report.seeds):
        c = colors[i % len(colors)]
        steps = [k.step for k in s.search.checks]
        metrics = [k.metric for k in s.search.checks]
        label = f"seed {s.seed}: D*={s.dimension}" if s.dimension else f"seed {s.seed}: failed"
        if s.dimension and s.refined_dimension != s.dimension:
            label += f", refined {s.refined_dimension}"
        ax.plot(steps, metrics, "-o", ms=3, color=c, label=label)
        for step, d in s.search.doublings:
            ax.axvline(step, color=c, ls=":", lw=0.8)
            ax.annotate(f"d={d}", (step, metrics[steps.index(step)]), fontsize=7, color=c,
                        xytext=(2, -10), textcoords="offset points")
        for j, v in enumerate(s.verifications):
            ax.plot([k.step for k in v.checks], [k.metric for k in v.checks], "--", color=c,
                    lw=0.9, alpha=0.7 / (1 + j),
                    label=f"seed {s.seed}: d={v.d} check ({'reached' if v.reached else 'below'})")
    ax.axhline(report.target, color="k", lw=1, label=f"target {report.target:.3f}")
    if report.baseline is not None:
        ax.axhline(report.baseline.metric, color="gray", lw=1, ls="--",
                   label=f"full fine-tuning {report.baseline.metric:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("metric")
    ax.set_title(title or f"{report.sketch.get('algo')} subspace, N={report.num_params}")
    ax.legend(fontsize=7)


def plot_report(report, path, *, title=None):
    """Write one figure for one report to ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    _draw(ax, report, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reports(reports, path, *, titles=None):
    """Several reports side by side (e.g. one per sketch algorithm)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(reports)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.5), squeeze=False)
    for i, (ax, rep) in enumerate(zip(axes[0], reports)):
        _draw(ax, rep, titles[i] if titles else None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
