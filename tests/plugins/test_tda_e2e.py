"""End to end on a real model trained here: a digits CNN with flipped labels, through the API
and the CLI; sketched self-influence finds the mislabeled examples; wrong models are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("zarr")
pytest.importorskip("sklearn")

import models  # noqa: E402  (tests/models.py: shared model helpers)

import sketchcore as sk  # noqa: E402
from sketchcore_tda import example_tasks  # noqa: E402
from sketchcore_tda.api import (  # noqa: E402
    SketchStore,
    attribute,
    build_store,
    make_sketcher,
    self_influence,
)

models.ensure_gradients_backend("torch")

NUM_FLIPPED = 12  # of 600 training examples (2%)
TOP_FRACTION = 0.05


@pytest.fixture(scope="module")
def flipped_task():
    return example_tasks.digits(epochs=6, flip=NUM_FLIPPED, n_train=600, seed=0)


@pytest.fixture(scope="module")
def digits_store(flipped_task, tmp_path_factory):
    gs = make_sketcher(flipped_task, dict(algo="affd", out_dim=1024, seed=0))
    path = tmp_path_factory.mktemp("e2e") / "train.zarr"
    summary = build_store(path, gs, flipped_task.train, batch_size=64, progress=False)
    return SketchStore.open(path, mode="r"), gs, summary


def test_model_learned(flipped_task):
    assert flipped_task.info["test_accuracy"] > 0.9


def test_flipped_labels_stand_out_by_self_influence(flipped_task, digits_store):
    """Criterion: every flipped example is in the top 5% (30 of 600) of training examples by
    sketched self-influence |Phi g|^2 (TracIn self-influence), and likewise by the TRAK-style
    score. (With exact gradients the 12 flipped examples rank 0-19 in this setup.)"""
    store, _gs, summary = digits_store
    assert summary.num_examples == 600 and summary.out_dim == 1024
    flipped = set(flipped_task.info["flipped"])
    assert len(flipped) == NUM_FLIPPED
    cutoff = int(TOP_FRACTION * store.num_examples)
    for method in ("dot", "gauss-newton"):
        ids, values = self_influence(store, method=method)
        top = set(ids[np.argsort(-values)[:cutoff]].tolist())
        missed = flipped - top
        assert not missed, f"{method}: flipped examples {sorted(missed)} not in the top {cutoff}"


def test_sketched_self_influence_tracks_exact(flipped_task, digits_store):
    store, gs, _summary = digits_store
    x, y = flipped_task.train
    exact = (gs.full_gradients((x[:200], y[:200])).astype(np.float64) ** 2).sum(1)
    _ids, sketched = self_influence(store, method="dot")
    # affd at D=1024 on N=3818: relative error per norm ~ sqrt(2/D) = 4%; r far above 0.95
    assert np.corrcoef(exact, sketched[:200])[0, 1] > 0.95


def test_proponents_of_test_examples(flipped_task, digits_store):
    """A correctly classified test example's top proponents mostly share its label."""
    store, gs, _summary = digits_store
    x_test, y_test = flipped_task.test
    x_train, y_train = flipped_task.train
    res = attribute(store, gs, (x_test[:20], y_test[:20]), k=5, method="cosine")
    same = (y_train.numpy()[res.proponent_ids] == y_test[:20].numpy()[:, None]).mean()
    assert same > 0.8


def test_other_model_or_sketch_is_refused(flipped_task, digits_store):
    store, _gs, _summary = digits_store
    import copy

    import torch

    other = copy.deepcopy(flipped_task)  # another checkpoint: one weight moved a little
    with torch.no_grad():
        other.model[-1].bias[0] += 1e-3
    gs_other = make_sketcher(other, dict(algo="affd", out_dim=1024, seed=0))
    with pytest.raises(sk.StoreMismatchError, match="parameter values differ"):
        attribute(store, gs_other, other.test, k=3)
    gs_seed = make_sketcher(flipped_task, dict(algo="affd", out_dim=1024, seed=1))
    with pytest.raises(sk.StoreMismatchError, match="sketch.seed: store has 0, requested 1"):
        attribute(store, gs_seed, flipped_task.test, k=3)


def test_cli_build_scores_info(tmp_path, capsys):
    from sketchcore.cli import main

    store = str(tmp_path / "cli.zarr")
    task = ["--task", "sketchcore_tda.example_tasks:digits", "--task-arg", "epochs=1",
            "--task-arg", "n_train=300", "--task-arg", "n_test=40"]
    assert main(["tda", "build", *task, "--store", store, "--algo", "qk", "--dim", "256",
                 "--chunk-rows", "100", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "examples   300" in out and "D          256" in out
    # the store records its task, but scores never runs it unless told to: it says what to run
    with pytest.raises(sk.StoreMismatchError, match="does not choose the code") as err:
        main(["tda", "scores", "--store", store, "-k", "3"])
    assert "--task=sketchcore_tda.example_tasks:digits" in str(err.value)
    assert "--task-arg=n_train=300" in str(err.value) and "--use-recorded-task" in str(err.value)
    assert main(["tda", "scores", "--store", store, "--method", "gauss-newton", "-k", "3",
                 "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv"),
                 "--max-print", "2", "--use-recorded-task"]) == 0
    out = capsys.readouterr().out
    assert "top-3 proponents / opponents by gauss-newton score" in out
    data = json.loads((tmp_path / "s.json").read_text())
    assert len(data["tests"]) == 40 and len(data["tests"][0]["proponents"]) == 3
    assert main(["tda", "scores", "--store", store, "--self-influence", "-k", "4"]) == 0
    assert "highest self-influence" in capsys.readouterr().out
    assert main(["tda", "info", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "chunks complete: 3/3" in out and '"algo": "qk"' in out
    # a rebuild with another sketch into the same store is refused, naming the difference
    with pytest.raises(sk.StoreMismatchError, match="out_dim: store has 256, requested 128"):
        main(["tda", "build", *task, "--store", store, "--algo", "qk", "--dim", "128",
              "--chunk-rows", "100", "--no-progress"])


def test_cli_evaluate_writes_table_json_and_plot(tmp_path, capsys):
    from sketchcore.cli import main

    out = tmp_path / "eval"
    assert main(["tda", "evaluate", "--task", "sketchcore_tda.example_tasks:digits",
                 "--task-arg", "epochs=1", "--task-arg", "n_train=64", "--task-arg", "n_test=16",
                 "--algos", "qk,affd", "--log2-dims", "6,10", "--n-train", "16", "--n-test", "16",
                 "--seeds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "16 train x 16 test = 256 pairs" in printed and "best layer-selection" in printed
    assert "mean over seeds 0, 1" in printed and "gauss*" in printed  # the ideal Gaussian beside
    res = json.loads((out / "results.json").read_text())
    assert len(res["sketch"]["affd"]["10"]["pearson_per_seed"]) == 2 and res["ideal_gaussian"]
    assert set(res["sketch"]) == {"qk", "affd"} and res["num_params"] == 3818
    # D=1024 on N=3818: both sketches track the exact products closely
    assert res["sketch"]["affd"]["10"]["pearson"] > 0.9 and res["sketch"]["qk"]["10"]["pearson"] > 0.9
    assert set(res["layers"]) == {"0", "2", "5"}  # the CNN's two convolutions and its linear layer
    assert (out / "r_vs_log2D.png").stat().st_size > 10_000
