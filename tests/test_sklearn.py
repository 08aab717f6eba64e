"""``sketchcore.sklearn.SketchProjection``: scikit-learn's estimator checks, a Pipeline, the
adjoint as inverse_transform, and ``import sketchcore`` never importing scikit-learn."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

import sketchcore as sk  # noqa: E402
from sketchcore.sklearn import SketchProjection  # noqa: E402


@pytest.mark.parametrize("algo", ["affd", "sjlt"])
def test_passes_check_estimator(algo):
    check_estimator(SketchProjection(algo=algo, random_state=0))


def test_same_map_as_sketch_and_adjoint_as_inverse():
    x = np.random.default_rng(0).standard_normal((20, 300))
    proj = SketchProjection(n_components=64, algo="srht", random_state=5).fit(x)
    op = sk.Sketch(algo="srht", in_dim=300, out_dim=64, seed=5)
    y = proj.transform(x)
    np.testing.assert_allclose(y, op(x, backend="numpy"), rtol=1e-10, atol=1e-10)
    back = proj.inverse_transform(y[:3])
    np.testing.assert_allclose(back, op.transpose(y[:3], backend="numpy"), rtol=1e-10,
                               atol=1e-10)
    names = proj.get_feature_names_out()
    assert list(names[:2]) == ["sketchprojection0", "sketchprojection1"] and len(names) == 64
    again = pickle.loads(pickle.dumps(proj))  # parameters are rebuilt from the seed
    np.testing.assert_array_equal(again.transform(x), y)


def test_auto_components_follow_the_rule_and_random_state_none_varies():
    x = np.random.default_rng(1).standard_normal((30, 5000)).astype(np.float32)
    proj = SketchProjection(algo="affd", eps=0.3).fit(x)
    assert proj.n_components_ == sk.auto_out_dim(5000, "affd", eps=0.3, n_vectors=30)
    assert proj.transform(x).dtype == np.float32
    seeds = {SketchProjection(n_components=8).fit(x).seed_ for _ in range(4)}
    assert len(seeds) > 1  # None: a seed drawn from numpy's global state at every fit
    with pytest.raises(ValueError, match="n_components"):
        SketchProjection(n_components=0).fit(x)


def test_works_in_a_pipeline():
    rng = np.random.default_rng(2)
    latent = rng.standard_normal((200, 5))  # classes live in a 5-dimensional subspace
    x = latent @ rng.standard_normal((5, 2000)) + 0.1 * rng.standard_normal((200, 2000))
    y = (latent[:, 0] > 0).astype(int)
    pipe = Pipeline([("sketch", SketchProjection(n_components=128, random_state=0)),
                     ("clf", LogisticRegression(max_iter=1000))])
    pipe.fit(x[:150], y[:150])
    assert pipe.score(x[150:], y[150:]) > 0.85
    assert len(pipe[:-1].get_feature_names_out()) == 128


def test_import_sketchcore_does_not_import_sklearn():
    code = ("import sys, numpy as np, sketchcore as sk\n"
            "sk.sketch(np.ones((2, 100)), algo='affd', out_dim=16)\n"
            "assert 'sklearn' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
