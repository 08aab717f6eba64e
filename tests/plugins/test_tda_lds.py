"""The linear datamodeling score: the Spearman it promises, near 1 for exact TRAK on a planted
linear model (where the influence of each training example is known in closed form), near 0 for
scores without information; the cache is shared, resumes and refuses another setup; the
``sketchcore tda lds`` command runs end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("torch")
pytest.importorskip("zarr")

import torch  # noqa: E402

from sketchcore_tda.api import OutputFunction, TDATask, lds, linear_datamodeling_score  # noqa: E402
from sketchcore_tda.lds import subset_masks  # noqa: E402
from sketchcore_tda.lds_cache import draw_subset  # noqa: E402

CALLS = {"n": 0}

#: regression: the output is the prediction itself; TRAK's out-to-loss term for the squared loss
#: is -dL/df = y - f (the residual)
REGRESSION = OutputFunction("regression", lambda out, b: out[:, 0],
                            lambda out, b: b[1] - out[:, 0])


def planted(n: int = 200, d: int = 5, n_test: int = 20, seed: int = 0, train_subset=None,
            model_seed: int = 0) -> TDATask:
    """Least squares on seeded data y = X theta + noise, fitted in closed form on
    ``train_subset``: removing example j moves a test output by x^T (X^T X)^-1 x_j r_j to first
    order (r_j its residual), which is exactly TRAK's score with exact features, so the
    predicted and the refitted outputs should rank the subsets alike."""
    CALLS["n"] += 1
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + n_test, d))
    y = x @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n + n_test)
    fit = np.arange(n) if train_subset is None else np.asarray(train_subset)
    theta = np.linalg.lstsq(x[fit], y[fit], rcond=None)[0]
    model = torch.nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(theta)[None])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def loss_fn(out, batch):
        return ((out[:, 0] - batch[1]) ** 2).mean() / 2

    return TDATask(model=model, loss_fn=loss_fn, train=(xt[:n], yt[:n]),
                   test=(xt[n:], yt[n:]), info={"trak_output": REGRESSION})


@given(m=st.integers(1, 6), n=st.integers(2, 12), big_m=st.integers(3, 12),
       seed=st.integers(0, 2**16))
def test_lds_is_the_mean_spearman_of_predicted_and_measured_outputs(m, n, big_m, seed):
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((m, n))
    masks = rng.random((big_m, n)) < 0.5
    outputs = rng.standard_normal((big_m, m))
    got = linear_datamodeling_score(scores, masks, outputs)
    pred = masks @ scores.T
    for i in range(m):
        if np.ptp(pred[:, i]) == 0:
            assert got[i] == 0  # no rank information
        else:
            assert got[i] == pytest.approx(spearmanr(pred[:, i], outputs[:, i])[0], abs=1e-12)


def test_lds_of_uninformative_scores_is_near_zero():
    rng = np.random.default_rng(0)
    masks = subset_masks([draw_subset(100, 0.5, 0, m) for m in range(50)], 100)
    outputs = rng.standard_normal((50, 40))
    got = linear_datamodeling_score(rng.standard_normal((40, 100)), masks, outputs).mean()
    assert abs(got) < 0.05  # mean of 40 independent Spearman r of 50 pairs: sd ~ 0.14/sqrt(40)


def test_subsets_are_reproducible_and_of_size_alpha_n():
    a = draw_subset(101, 0.5, 3, 7)
    assert len(a) == 50 and len(np.unique(a)) == 50 and a.max() < 101
    np.testing.assert_array_equal(a, draw_subset(101, 0.5, 3, 7))
    assert not np.array_equal(a, draw_subset(101, 0.5, 3, 8))
    with pytest.raises(ValueError, match="alpha"):
        draw_subset(10, 0.01, 0, 0)


def test_exact_trak_lds_on_a_planted_linear_model_is_near_one(tmp_path):
    """With n = 200, d = 5 and 30 half-size subsets the first-order prediction misses only the
    fluctuation of X_S^T X_S around X^T X / 2 (relative size sqrt(d / n)): LDS 0.96-0.99 across
    seeds. A nearly undamped kernel is the exact influence; gradient dot products without the
    kernel or the residual weights predict far worse."""
    res = lds(planted, methods=("trak", "dot"), algos=(), exact=True, num_models=30,
              cache=tmp_path / "cache", relative_damping=1e-6, progress=False)
    trak = res.values[("trak", "exact")][None]
    assert trak > 0.93, res.format_table()
    assert res.values[("dot", "exact")][None] < trak - 0.2, res.format_table()
    assert res.num_params == 5 and res.num_test == 20 and res.num_models == 30


def test_cache_is_shared_resumed_and_refuses_another_setup(tmp_path):
    cache = tmp_path / "cache"
    CALLS["n"] = 0
    first = lds(planted, methods=("trak",), algos=(), exact=True, num_models=5, cache=cache,
                progress=False)
    assert CALLS["n"] == 1 + 5 + 1  # the base task, 5 subset models, 1 ensemble member
    CALLS["n"] = 0
    again = lds(planted, methods=("trak",), algos=(), exact=True, num_models=8, cache=cache,
                progress=False)
    assert CALLS["n"] == 1 + 3  # the base task and the 3 new subset models only
    assert len(list((cache / "subsets").glob("*-outputs.npy"))) == 8
    assert first.values.keys() == again.values.keys()
    with pytest.raises(ValueError, match="alpha: cache has 0.5, this run 0.25"):
        lds(planted, methods=("trak",), algos=(), exact=True, num_models=5, alpha=0.25,
            cache=cache, progress=False)
    with pytest.raises(ValueError, match="unknown LDS method"):
        lds(planted, methods=("influence",), cache=cache, progress=False)


def test_cli_lds_end_to_end(tmp_path, capsys):
    from sketchcore.cli import main

    out = tmp_path / "out"
    assert main(["tda", "lds", "--task", "sketchcore_tda.example_tasks:digits",
                 "--task-arg", "epochs=2", "--task-arg", "n_train=60", "--task-arg", "n_test=12",
                 "--task-arg", "arch=mlp", "--task-arg", "hidden=8",
                 "--methods", "trak,gauss-newton", "--algos", "qk", "--log2-dims", "5,6",
                 "--exact", "--num-models", "4", "--cache", str(tmp_path / "cache"),
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "trak/qk" in printed and "gauss-newton/qk" in printed and "exact" in printed
    res = json.loads((out / "results.json").read_text())
    assert set(res["lds"]) == {"trak/qk", "gauss-newton/qk", "trak/exact", "gauss-newton/exact"}
    assert set(res["lds"]["trak/qk"]) == {"5", "6"} and res["num_params"] == 8 * 75 + 10
    assert all(-1 <= v <= 1 for d in res["lds"].values() for v in d.values())
    assert (out / "lds_vs_log2D.png").stat().st_size > 10_000
