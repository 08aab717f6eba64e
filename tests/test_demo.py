"""The main job end to end in --quick mode: every section of the report is there, with numbers."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("torch")
pytest.importorskip("zarr")


def test_demo_quick_writes_a_complete_report(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    from sketchcore.cli import main

    out = tmp_path / "report"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    summary = (out / "summary.md").read_text()
    for title in ("## Model", "## Training data attribution", "## Hessian spectrum",
                  "## Intrinsic dimension", "## Run"):
        assert title in summary
    for png in ("attribution.png", "spectrum.png", "intrinsic_dimension.png"):
        assert (out / png).stat().st_size > 10_000, png
    data = json.loads((out / "results.json").read_text())
    assert data["model"]["test_accuracy"] > 0.8
    # attribution: every test row has k proponents and opponents with finite scores
    rows = data["tda"]["attribution"]["tests"]
    k = data["tda"]["attribution"]["k"]
    assert rows and all(len(r["proponents"]) == k and len(r["opponents"]) == k for r in rows)
    assert all(r["proponents"][0]["score"] >= r["opponents"][0]["score"] for r in rows)
    assert data["tda"]["flipped_in_top5pct"] >= 0.75 * len(data["model"]["flipped"])
    spec = data["spectrum"]
    assert spec["lambda_max"] > 0 and spec["rneg"] >= 0 and spec["n_outliers"] >= 1
    dims = [s["dimension"] for s in data["intrinsic_dimension"]["seeds"]]
    assert all(isinstance(d, int) and d >= 1 for d in dims), dims
    assert not re.search(r"\bnan\b|TODO|placeholder", summary, re.I)
