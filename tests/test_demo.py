"""The main job end to end in --quick mode: every section of the report is there, and each
section's numbers lie in the ranges their definitions allow (and beat chance where there is one)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(results.json, summary.md) of one quick run."""
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
    from sketchcore.cli import main

    out = tmp_path_factory.mktemp("demo") / "report"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    for png in ("attribution.png", "spectrum.png", "intrinsic_dimension.png"):
        assert (out / png).stat().st_size > 10_000, png
    return json.loads((out / "results.json").read_text()), (out / "summary.md").read_text()


def test_torch_threads_is_scoped_and_checked():
    import torch

    from sketchcore import InvalidOptionError
    from sketchcore_demo.threads import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None) as n:
        assert n == before
    with pytest.raises(InvalidOptionError, match="threads must be a positive integer"):
        with torch_threads(0):
            pass


def test_report_has_every_section_and_stage_times(demo):
    data, summary = demo
    for title in ("## Model", "## Training data attribution", "## Hessian spectrum",
                  "## Intrinsic dimension", "## Run"):
        assert title in summary
    assert not re.search(r"\bnan\b|TODO|placeholder", summary, re.I)
    assert data["config"]["threads"] == 1
    assert data["torch_threads"] == {"set": 1, "at_end": 1}
    stages = data["stage_seconds"]
    main = ("training", "training data attribution", "Hessian spectrum", "intrinsic dimension")
    assert all(0 < stages[s] for s in main)
    assert sum(stages[s] for s in main) <= data["seconds"]
    parts = ("full fine-tuning baseline", "subspace training (searches and D*/2 checks)")
    assert all(0 < stages[p] for p in parts)
    assert sum(stages[p] for p in parts) <= stages["intrinsic dimension"]
    for name in (*main, *parts):
        assert name in summary


def test_model_section(demo):
    data, _ = demo
    assert 0.8 < data["model"]["test_accuracy"] <= 1.0
    losses = data["model"]["train_loss"]
    assert all(math.isfinite(v) and v >= 0 for v in losses) and losses[-1] < losses[0]


def test_attribution_section(demo):
    data, _ = demo
    tda = data["tda"]
    att, n_train, classes = tda["attribution"], tda["num_train"], tda["num_classes"]
    k = att["k"]
    assert att["tests"] and n_train >= 2 * k
    for row in att["tests"]:
        pro = [p["score"] for p in row["proponents"]]
        opp = [o["score"] for o in row["opponents"]]
        ids = [p["train_id"] for p in row["proponents"] + row["opponents"]]
        assert len(pro) == len(opp) == k and all(math.isfinite(s) for s in pro + opp)
        # strongest first; the k largest scores are never below the k smallest
        assert pro == sorted(pro, reverse=True) and opp == sorted(opp) and pro[-1] >= opp[-1]
        assert len(set(ids)) == 2 * k and all(0 <= i < n_train for i in ids)
    # proponents carry the test label far more often than a random training example would
    assert 2 / classes <= tda["proponent_label_agreement"] <= 1.0
    # self-influence ranks the flipped labels first: chance would put 5% of them in the top 5%
    flipped = data["model"]["flipped"]
    assert all(1 <= r <= n_train for r in tda["flipped_ranks"])
    assert 0.75 * len(flipped) <= tda["flipped_in_top5pct"] <= len(flipped)


def test_spectrum_section(demo):
    data, _ = demo
    spec = data["spectrum"]
    top, bottom = np.asarray(spec["top"]), np.asarray(spec["bottom"])
    assert np.all(np.isfinite(top)) and np.all(np.isfinite(bottom))
    assert np.all(np.diff(top) <= 0) and np.all(np.diff(bottom) >= 0)
    lmax, lmin = spec["lambda_max"], spec["lambda_min"]
    assert lmax == top[0] > 0 and lmin == bottom[0] <= lmax
    assert spec["rneg"] == pytest.approx(max(-lmin, 0.0) / lmax)
    ratios = top / lmax
    np.testing.assert_allclose(spec["ratios"], ratios)
    assert spec["n_outliers"] == int(np.sum(ratios > spec["outlier_threshold"])) >= 1
    # the sketched operator keeps the top eigenvalue of H up to the sketch's distortion: with
    # E[Phi^T Phi] = I, |Phi v|^2 of the top eigenvector v has a standard deviation of about
    # sqrt(2/D) = 6% at D = 512, and the rest of H leaks in through small cross terms; a wrongly
    # scaled sketch or HVP would be off by factors like N/D = 19 or by orders of magnitude
    exact = spec["exact_lambda_max"]
    assert exact > 0 and 0.5 <= lmax / exact <= 2.0, (lmax, exact)


def test_intrinsic_dimension_section(demo):
    data, _ = demo
    rec, classes = data["intrinsic_dimension"], data["tda"]["num_classes"]
    base = rec["baseline"]
    assert 0.8 < base["metric"] <= 1.0 and base["metric"] > 1 / classes
    assert rec["target"] == pytest.approx(rec["target_fraction"] * base["metric"])
    d_start, d_max = rec["config"]["d_start"], rec["d_max"]
    for seed in rec["seeds"]:
        d = seed["dimension"]
        assert isinstance(d, int) and d_start <= d <= d_max, seed["error"]
        assert d in {d_start * 2**i for i in range(int(math.log2(d_max // d_start)) + 1)}
        assert seed["search"]["checks"][-1]["metric"] >= rec["target"]
        refined = seed["refined_dimension"]
        assert refined is None or 1 <= refined <= d
