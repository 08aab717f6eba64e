"""The demo's report folder: figures (PNG), raw results (JSON/CSV) and a markdown summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

__all__ = ["Report", "attribution_grid"]


class Report:
    """Collects sections of markdown and writes files into one folder."""

    def __init__(self, folder: str | Path, title: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lines = [f"# {title}", ""]
        self.data: dict = {}

    def section(self, title: str, *paragraphs: str) -> None:
        self.lines += [f"## {title}", ""]
        for p in paragraphs:
            self.lines += [p, ""]

    def table(self, header: list[str], rows: list[list]) -> None:
        def fmt(v):
            return f"{v:.4g}" if isinstance(v, float) else str(v)

        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "---|" * len(header))
        for r in rows:
            self.lines.append("| " + " | ".join(fmt(v) for v in r) + " |")
        self.lines.append("")

    def image(self, name: str, caption: str) -> None:
        self.lines += [f"![{caption}]({name})", ""]

    def csv(self, name: str, header: list[str], rows: list[list]) -> Path:
        path = self.folder / name
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        return path

    def record(self, key: str, value) -> None:
        self.data[key] = value

    def write(self) -> Path:
        (self.folder / "results.json").write_text(json.dumps(self.data, indent=2, default=_plain))
        path = self.folder / "summary.md"
        path.write_text("\n".join(self.lines))
        return path


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def attribution_grid(path, test_images, test_labels, test_preds, rows, train_images, train_labels,
                     *, k: int) -> None:
    """One row per test example: the test image, its top-k proponents, its top-k opponents,
    each titled with its label (and score); ``rows[i] = (proponent ids, scores, opponent ids,
    scores)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    cols = 1 + 2 * k
    fig, axes = plt.subplots(n, cols, figsize=(1.25 * cols, 1.5 * n), squeeze=False)
    for i, (pid, pscore, oid, oscore) in enumerate(rows):
        ax = axes[i, 0]
        ax.imshow(test_images[i].squeeze(), cmap="gray_r")
        ax.set_title(f"test y={test_labels[i]}\npred {test_preds[i]}", fontsize=7, color="C0")
        for j in range(k):
            for col, ids, scores, color in ((1 + j, pid, pscore, "C2"), (1 + k + j, oid, oscore, "C3")):
                a = axes[i, col]
                if j < len(ids):
                    a.imshow(train_images[ids[j]].squeeze(), cmap="gray_r")
                    a.set_title(f"#{ids[j]} y={train_labels[ids[j]]}\n{scores[j]:+.2g}", fontsize=6,
                                color=color)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"test example | top-{k} proponents (green) | top-{k} opponents (red)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
