"""evaluate_gradients beside an ideal Gaussian sketch: an algorithm blind to the data's
structure shows itself as an outlier, a Gaussian-like one does not.

The planted gradients put most of their energy at positions 3 and 77 modulo 128. AFJL keeps the
first D rows of a Kronecker product of permuted Hadamard factors (N = 2^14: factors 128 x 128),
so for D <= 128 every kept row shares the first factor's row and the input is folded by position
modulo 128 before anything random mixes it: the planted energy lands in two buckets. AFFD's
second transform mixes before the truncation; the dense sketch is the ideal itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from sketchcore_tda.evaluate import equivalent_log2_dim, evaluate_gradients

N = 2**14


def _planted(n, rng):
    g = 0.05 * rng.standard_normal((n, N))
    cols = np.arange(N)
    hot = (cols % 128 == 3) | (cols % 128 == 77)
    g[:, hot] += rng.standard_normal(hot.sum()) + 0.7 * rng.standard_normal((n, hot.sum()))
    return g.astype(np.float32)


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    tr, te = _planted(32, rng), _planted(32, rng)
    return evaluate_gradients(tr, te, algos=["dense", "affd", "afjl"], log2_dims=[6, 7],
                              seeds=(0, 1, 2), progress=False)


def test_structured_input_makes_afjl_an_outlier(planted):
    ideal = planted.ideal_r[7.0][0]
    assert planted.sketch_r["afjl"][7][0] < 0.3 < 0.45 < ideal
    assert planted.sketch_r["affd"][7][0] > ideal - 3 * planted.ideal_r[7.0][1]
    flagged = {(a, k) for a, k, _m, _d in planted.outliers()}
    assert ("afjl", 7) in flagged and not any(a in ("dense", "affd") for a, _k in flagged)
    factor, side = planted.measured_factor("dense", 7)
    assert side == "=" and 0.3 < factor < 3.0  # the dense sketch is the ideal, up to noise


def test_report_table_json_and_plot(planted, tmp_path):
    text = planted.format_table()
    assert "gauss*" in text and "mean over seeds 0, 1, 2" in text and "layer selection" not in text
    assert "'!' = more than twice the declared factor" in text and "36." not in text.split("gauss*")[0]
    d = planted.to_dict()
    assert d["seeds"] == [0, 1, 2] and len(d["sketch"]["afjl"]["7"]["pearson_per_seed"]) == 3
    assert d["sketch"]["afjl"]["7"]["declared_factor"] == 12.0
    assert d["ideal_gaussian"]["7.0"]["pearson_sd"] > 0
    planted.plot(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_equivalent_log2_dim_interpolates_and_bounds():
    curve = {4.0: (0.5, 0.0), 5.0: (0.7, 0.0), 6.0: (0.65, 0.0), 7.0: (0.9, 0.0)}
    assert equivalent_log2_dim(0.6, curve) == pytest.approx((4.5, "="))
    assert equivalent_log2_dim(0.8, curve) == pytest.approx((6.5, "="))  # 6.0 is lifted to 0.7
    assert equivalent_log2_dim(0.4, curve) == (4.0, "<")
    assert equivalent_log2_dim(0.95, curve) == (7.0, ">")


def test_variants_and_bad_names():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((8, 256)).astype(np.float32)
    res = evaluate_gradients(g, g, algos=[("sjlt s=2", "sjlt", {"nnz_per_col": 2}), "qk"],
                             log2_dims=[5], reference=False, progress=False)
    assert set(res.sketch_r) == {"sjlt s=2", "qk"} and not res.ideal_r
    with pytest.raises(ValueError, match="unknown algorithms"):
        evaluate_gradients(g, g, algos=["nope"], log2_dims=[5], progress=False)
