"""The spectrum analysis on a real torch model (a 64-16-10 MLP on sklearn's digits, N = 1210),
against ``eigh`` of its exact Hessian; evolution, accuracy study and CLI end to end.

Tolerance of the sketched eigenvalues: an isolated eigenvalue is scaled by ``||Phi u||^2``,
relative standard deviation ``s = sqrt(2 / D)``; clustered eigenvalues also mix. We require the
mean relative error of the top 5 below ``3 s`` and every one below ``6 s`` (D = 1024: 0.13 and
0.27), for each of three sketch seeds. Unsketched Lanczos must match ``eigh`` to 1e-6.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def task():
    import models
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        models.ensure_gradients_backend("torch")
    torch.set_num_threads(1)
    from sketchcore_spectrum.tasks import digits_mlp

    return digits_mlp(hidden=16, train_steps=150)


@pytest.fixture(scope="module")
def exact(task):
    from sketchcore.gradients import GradientSketcher

    gs = GradientSketcher(task.model, task.loss_fn, sketch=None)
    H = gs.hessian(task.hessian_batches)
    ev, vecs = np.linalg.eigh((H + H.T) / 2)
    return {"H": H, "ev": ev, "vecs": vecs, "grad": gs.mean_gradient(task.hessian_batches),
            "names": gs.param_names, "shapes": gs.param_shapes}


def test_model_size_allows_eigh(task, exact):
    assert exact["H"].shape == (1210, 1210)


def test_unsketched_lanczos_matches_eigh(task, exact):
    from sketchcore_spectrum.api import hessian_spectrum

    res = hessian_spectrum(task.model, task.loss_fn, task.hessian_batches, sketch="none", k=5,
                           tol=1e-10, max_iter=120, alignment=False)
    ev = exact["ev"]
    np.testing.assert_allclose(res.top, ev[::-1][:5], rtol=1e-6)
    np.testing.assert_allclose(res.bottom[:2], ev[:2], rtol=1e-5)
    assert res.dim == res.num_params == 1210


@pytest.mark.parametrize("sketch_seed", [0, 1, 2])
def test_sketched_top5_match_eigh(task, exact, sketch_seed):
    from sketchcore_spectrum.api import hessian_spectrum

    d = 1024
    res = hessian_spectrum(task.model, task.loss_fn, task.hessian_batches,
                           sketch=dict(algo="affd", out_dim=d, seed=sketch_seed), k=5,
                           converge_on="top", alignment=False)
    truth = exact["ev"][::-1][:5]
    rel = np.abs(res.top - truth) / truth
    s = math.sqrt(2 / d)
    assert rel.mean() < 3 * s and rel.max() < 6 * s, rel
    assert res.dim == d and res.num_params == 1210
    m = 6 * 5 + 20  # default Krylov cap for k = 5
    assert res.krylov_vectors == m + 1 and res.krylov_nbytes == (m + 1) * (d + m) * 8
    assert res.unsketched_krylov_nbytes == (m + 1) * 1210 * 8


def test_derived_quantities_track_the_exact_ones(task, exact):
    """RNEG, the outlier count and the gradient-outlier alignment of the sketched run are close
    to the same quantities computed from eigh and the exact gradient."""
    from sketchcore_spectrum.api import count_outliers, gradient_alignment, hessian_spectrum, rneg

    ev, vecs = exact["ev"], exact["vecs"]
    top = ev[::-1][:10]
    n_out = count_outliers(top)
    exact_align = gradient_alignment(exact["grad"], vecs[:, ::-1][:, :n_out].T)
    res = hessian_spectrum(task.model, task.loss_fn, task.hessian_batches,
                           sketch=dict(algo="affd", out_dim=1024, seed=0), k=10)
    assert abs(res.n_outliers - n_out) <= 1
    assert res.rneg == pytest.approx(rneg(ev[-1], ev[0]), rel=0.3)
    assert res.alignment == pytest.approx(exact_align, abs=0.1)
    assert 0.0 <= res.alignment <= 1.0


def test_deterministic(task):
    from sketchcore_spectrum.api import hessian_spectrum

    run = lambda: hessian_spectrum(task.model, task.loss_fn, task.hessian_batches,  # noqa: E731
                                   sketch=dict(algo="qk", out_dim=256, seed=3), k=3, seed=5)
    a, b = run(), run()
    np.testing.assert_allclose(a.top, b.top, rtol=1e-12)
    np.testing.assert_allclose(a.bottom, b.bottom, rtol=1e-12)
    assert a.num_iter == b.num_iter and a.alignment == pytest.approx(b.alignment, rel=1e-9)


def test_num_batches_averages_the_first_batches(task):
    """num_batches=1 uses only the first batch: the same spectrum as passing that batch alone."""
    from sketchcore_spectrum.api import hessian_spectrum

    kw = dict(sketch=dict(algo="affd", out_dim=256, seed=0), k=3, alignment=False)
    one = hessian_spectrum(task.model, task.loss_fn, iter(task.hessian_batches), num_batches=1,
                           **kw)
    ref = hessian_spectrum(task.model, task.loss_fn, task.hessian_batches[:1], **kw)
    both = hessian_spectrum(task.model, task.loss_fn, task.hessian_batches, **kw)
    np.testing.assert_allclose(one.top, ref.top, rtol=1e-10)
    assert one.meta["num_batches"] == 1 and both.meta["num_batches"] == 2
    assert not np.allclose(one.top, both.top, rtol=1e-6)


def test_accuracy_study_reference_and_layer_baseline(task, exact):
    from sketchcore_spectrum.api import accuracy_study

    study = accuracy_study(task.model, task.loss_fn, task.hessian_batches, algos=("affd",),
                           dims=(256, 512), k=5, layers=["2."], progress=False)
    assert study.reference["method"] == "eigh"
    np.testing.assert_allclose(study.reference["top"], exact["ev"][::-1][:5], rtol=1e-8)
    assert [(r["algo"], r["dim"]) for r in study.rows] == [("affd", 256), ("affd", 512)]
    for r in study.rows:
        manual = np.mean(np.abs(r["top"] - exact["ev"][::-1][:5]) / exact["ev"][::-1][:5])
        assert r["rel_error"] == pytest.approx(manual)
    # layer baseline: eigenvalues of the Hessian block of the last Linear ("2.weight", "2.bias")
    n_first = sum(int(np.prod(s)) for n, s in zip(exact["names"], exact["shapes"])
                  if not n.startswith("2."))
    block = exact["H"][n_first:, n_first:]
    (row,) = study.layer_rows
    assert row["n_layer"] == block.shape[0] == 170
    np.testing.assert_allclose(row["top"], np.linalg.eigvalsh(block)[::-1][:5], rtol=1e-6)
    table = study.table()
    assert "affd" in table and "2^8" in table and "layer-selection" in table
    assert set(study.min_log2_dim()) == {"affd"}


def test_evolution_from_checkpoints_and_callback(task, tmp_path):
    import torch

    from sketchcore_spectrum.api import SpectrumCallback, hessian_spectrum, spectrum_evolution
    from sketchcore_spectrum.tasks import digits_mlp

    run = digits_mlp(hidden=16, train_steps=0, seed=1)
    opts = dict(sketch=dict(algo="affd", out_dim=256, seed=0), k=4, max_iter=30)
    cb = SpectrumCallback(run.loss_fn, run.hessian_batches, every=10, **opts)

    def save_and_track(step, model):
        if step % 10 == 0:
            torch.save(model.state_dict(), tmp_path / f"ckpt_{step:04d}.pt")
        cb(step, model)

    run.train(20, callback=save_and_track, progress=False)
    assert cb.evolution.steps == [0, 10, 20]
    paths = sorted(tmp_path.glob("ckpt_*.pt"))
    evo = spectrum_evolution(run.model, run.loss_fn, paths, run.hessian_batches, progress=False,
                             **opts)
    assert evo.steps == [0, 10, 20]
    for a, b in zip(evo.results, cb.evolution.results):  # same weights, same sketch: same result
        np.testing.assert_allclose(a.top, b.top, rtol=1e-9)
    direct = hessian_spectrum(run.model, run.loss_fn, run.hessian_batches, **opts)  # step 20
    np.testing.assert_allclose(evo.results[-1].top, direct.top, rtol=1e-9)
    assert evo.results[0].lambda_max != pytest.approx(evo.results[-1].lambda_max, rel=1e-3)

    csv_path = evo.write_csv(tmp_path / "out" / "evo.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("step,loss,lambda_max") and len(lines) == 4
    recs = json.loads(evo.write_json(tmp_path / "out" / "evo.json").read_text())
    assert [r["step"] for r in recs] == [0, 10, 20] and len(recs[0]["top"]) == 4
    pngs = evo.plot(tmp_path / "out")
    assert all(p.exists() and p.stat().st_size > 10_000 for p in pngs)
    assert "RNEG" in evo.table()


def test_cli_run_evolution_accuracy(task, tmp_path, capsys):
    from sketchcore.cli import main

    common = ["--task", "digits-mlp", "--task-arg", "hidden=8", "--task-arg", "train_steps=30",
              "--k", "3"]
    assert main(["spectrum", "run", *common, "--dim", "128", "--out",
                 str(tmp_path / "run.json")]) == 0
    out = capsys.readouterr().out
    assert "top eigenvalues" in out and "RNEG" in out
    rec = json.loads((tmp_path / "run.json").read_text())
    assert len(rec["top"]) == 3 and rec["dim"] == 128 and rec["num_params"] == 64 * 8 + 8 + 90

    assert main(["spectrum", "evolution", *common, "--dim", "128", "--train-steps", "4",
                 "--every", "2", "--out", str(tmp_path / "evo")]) == 0
    assert (tmp_path / "evo" / "spectrum_evolution.csv").read_text().count("\n") == 4
    assert (tmp_path / "evo" / "spectrum_evolution.png").exists()

    assert main(["spectrum", "accuracy", *common, "--algos", "affd,qk", "--dims", "6:7",
                 "--layers", "0.", "--out", str(tmp_path / "acc")]) == 0
    out = capsys.readouterr().out
    assert "min log2 D" in out and "qk" in out and "layer-selection" in out
    assert (tmp_path / "acc" / "spectrum_accuracy.png").exists()


def test_cli_rejects_unknown_task():
    from sketchcore import UnknownNameError
    from sketchcore.cli import main

    with pytest.raises(UnknownNameError, match="digits-mlp"):
        main(["spectrum", "run", "--task", "nonexistent"])
