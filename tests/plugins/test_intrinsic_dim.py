"""Intrinsic-dimension analysis on torch: the one-run search on a task with a planted intrinsic
dimension (against the exact least-squares D_int of the same random subspaces), the D*/2 check,
the implicit = explicit gradient identity, nested subspaces under Adam / AdamW / momentum SGD,
the errors, the CLI and the fast import."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/models.py

import sketchcore as sk  # noqa: E402
from sketchcore_intrinsic_dim import api  # noqa: E402
from sketchcore_intrinsic_dim.search import DimensionSearchError  # noqa: E402
from sketchcore_intrinsic_dim.subspace import TorchSubspaceTrainer  # noqa: E402
from sketchcore_intrinsic_dim.tasks import planted_task  # noqa: E402

ALGOS = [("afjl", {"preconditioner": "fft"}), ("ffd", {}), ("qk", {}), ("affd", {}),
         ("dense", {}), ("fjl", {})]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops: one intra-op thread is faster and keeps timings stable on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def exact_intrinsic_dim(task, trainer, target):
    """Smallest d whose best point in ``theta0 + span(first d columns of s Phi^T)`` reaches the
    target (least squares, no optimizer): the truth the search estimates."""
    X, y = task.X.double().numpy(), task.y.double().numpy()
    theta0 = trainer.flat.theta0.double().numpy()
    P = trainer.scale * trainer.op.transpose(np.eye(trainer.d_max, dtype=np.float64))  # (D, N)
    r0 = y - X @ theta0
    A = X @ P.T  # (n, D)
    for d in range(1, trainer.d_max + 1):
        w, *_ = np.linalg.lstsq(A[:, :d], r0, rcond=None)
        explained = 1 - np.sum((r0 - A[:, :d] @ w) ** 2) / np.sum(r0**2)
        if explained >= target:
            return d
    return None


def test_planted_dimension_found_within_2x_and_half_check_fails():
    task = planted_task(num_params=1024, rank=24, num_examples=128, seed=0)
    target = 0.9
    rep = api.intrinsic_dimension(
        task.model, task.loss_fn, task.train_data, task.metric, d_max=128, d_start=4,
        seeds=[0, 1, 2], target=target, check_every=25, max_steps=800, lr=0.1,
        batch_size=128, progress=False, sketch="ffd")
    hits = 0
    for rec in rep.seeds:
        truth = exact_intrinsic_dim(task, api.make_subspace_trainer(
            task.model, task.loss_fn, task.train_data, task.metric, d_max=128, sketch="ffd",
            seed=rec.seed), target)
        assert truth is not None and truth <= task.rank  # the loss lives in a rank-24 subspace
        assert rec.dimension is not None, rec.error
        # reaching the target at d is impossible below the exact D_int
        assert rec.dimension >= truth
        hits += rec.dimension < 2 * truth
        v = rec.verification
        assert v is not None and v.d == rec.dimension // 2
        assert v.steps <= rec.search.steps
        assert v.reached == (v.best_metric >= target)
        if v.d < truth:
            assert not v.reached and rec.verified
        # the search doubled only through powers of two from d_start
        ds = [4] + [d for _, d in rec.search.doublings]
        assert ds == [4 * 2**i for i in range(len(ds))] and ds[-1] == rec.dimension
    assert hits >= 2, [(s.seed, s.dimension) for s in rep.seeds]
    assert rep.target == target and rep.baseline is None
    json.loads(rep.to_json())


@pytest.mark.parametrize("algo,opts", ALGOS, ids=[a for a, _ in ALGOS])
@pytest.mark.parametrize("unit_columns", [True, False])
def test_omega_gradient_is_sketched_full_gradient(algo, opts, unit_columns):
    """d/domega L(theta0 + s Phi^T omega) = s Phi grad L(theta) (implicit = explicit), at omega = 0
    and at a random omega."""
    import models

    x, y = models.digits_data(32)
    model = models.digits_cnn(seed=1)
    batch = (torch.from_numpy(x), torch.from_numpy(y))
    tr = TorchSubspaceTrainer(model, models.cross_entropy, batch, lambda m: 0.0, d_max=64,
                              sketch={"algo": algo, **opts}, seed=3, unit_columns=unit_columns)
    tr.set_dim(64)
    for omega in (torch.zeros(64), torch.randn(64, generator=torch.Generator().manual_seed(0))):
        om = omega.clone().requires_grad_(True)
        tr.loss_at(batch, om).backward()
        implicit = om.grad
        theta = tr.theta_at(omega).detach().requires_grad_(True)
        tr.flat.loss(theta, batch).backward()
        explicit = tr.scale * tr.op.apply(theta.grad)
        torch.testing.assert_close(implicit, explicit, rtol=2e-4, atol=1e-6)
    assert tr.scale == (math.sqrt(64 / tr.num_params) if unit_columns else 1.0)


@pytest.mark.parametrize("make_opt", [
    None,
    lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
], ids=["adam", "adamw", "sgd-momentum"])
def test_masked_coordinates_never_move(make_opt):
    import models

    x, y = models.digits_data(64)
    model = models.digits_cnn(seed=0)
    tr = TorchSubspaceTrainer(model, models.cross_entropy, (x, y), lambda m: 0.0, d_max=32,
                              sketch="qk", seed=0, optimizer=make_opt, lr=0.05, batch_size=16)
    theta_start = tr.theta().detach().clone()
    freed_at = {}
    for d in (4, 8, 16):
        tr.set_dim(d)
        freed_at[d] = tr.steps
        for _ in range(5):
            tr.step()
        om = tr.omega.detach()
        assert torch.all(om[d:] == 0), "a masked coordinate moved"
        assert torch.count_nonzero(om[:d]) == d  # all free coordinates did move
        # only free coordinates are optimizer parameters; each block has its own state
        params = [p for g in tr.optimizer.param_groups for p in g["params"]]
        assert sum(p.numel() for p in params) == d
        for (size, block) in zip(freed_at, tr.blocks):
            state = tr.optimizer.state[block]
            if "step" in state:  # Adam's bias correction counts this block's own steps
                assert int(state["step"]) == tr.steps - freed_at[size]
        # theta moved only inside the span of the first d columns
        delta = (tr.theta().detach() - theta_start).double()
        basis = tr.scale * tr.op.transpose(torch.eye(32, dtype=torch.float64))[:d]
        coef = torch.linalg.lstsq(basis.T, delta[:, None]).solution
        assert torch.allclose(basis.T @ coef, delta[:, None], atol=1e-5 * delta.norm())
    # growing d keeps the earlier coordinates (nested subspaces)
    kept = tr.omega.detach()[:16].clone()
    tr.set_dim(32)
    assert torch.equal(tr.omega.detach()[:16], kept) and torch.all(tr.omega[16:] == 0)
    with pytest.raises(sk.InvalidOptionError, match="must grow"):
        tr.set_dim(8)


def test_past_d_max_is_a_clear_error():
    task = planted_task(num_params=512, rank=32, num_examples=64, seed=1)
    with pytest.raises(DimensionSearchError, match="past d_max.*Raise d_max") as err:
        api.search_dimension(task.model, task.loss_fn, task.train_data, task.metric,
                             target=0.9, d_max=8, d_start=2, check_every=10, max_steps=400,
                             lr=0.1, batch_size=64, progress=False, sketch="ffd")
    res = err.value.result
    assert not res.reached and res.checks[-1].d == 8
    assert [d for _, d in res.doublings] == [4, 8]


def test_out_of_steps_is_a_clear_error_and_seeds_record_it():
    task = planted_task(num_params=512, rank=32, num_examples=64, seed=1)
    with pytest.raises(DimensionSearchError, match="ran out of steps"):
        api.search_dimension(task.model, task.loss_fn, task.train_data, task.metric,
                             target=0.9, d_max=256, d_start=2, check_every=10, max_steps=20,
                             lr=0.1, batch_size=64, progress=False)
    rep = api.intrinsic_dimension(task.model, task.loss_fn, task.train_data, task.metric,
                                  target=0.9, d_max=256, d_start=2, check_every=10,
                                  max_steps=20, progress=False, seeds=[0])
    assert rep.seeds[0].dimension is None and "ran out of steps" in rep.seeds[0].error
    assert "none" in rep.table()


def test_bad_arguments_name_the_fix():
    task = planted_task(num_params=256, rank=8, num_examples=32, seed=0)
    args = (task.model, task.loss_fn, task.train_data, task.metric)
    with pytest.raises(sk.InvalidOptionError, match="d_start=64 exceeds d_max=32"):
        api.intrinsic_dimension(*args, d_max=32, d_start=64, target=0.5)
    with pytest.raises(sk.InvalidOptionError, match="in_dim=256, out_dim=16"):
        api.make_subspace_trainer(*args, d_max=16, sketch=sk.Sketch(algo="qk", in_dim=100,
                                                                     out_dim=16, seed=0))
    with pytest.raises(sk.InvalidOptionError, match="factory"):
        api.make_subspace_trainer(*args, d_max=16,
                                  optimizer=torch.optim.SGD([torch.zeros(1)], lr=1))
    with pytest.raises(sk.InvalidOptionError, match="nn.Module or a jax pair"):
        api.intrinsic_dimension(object(), *args[1:], d_max=8, d_start=4, target=0.5)
    with pytest.raises(sk.InvalidOptionError, match="selects no trainable parameter of Linear"):
        api.make_subspace_trainer(*args, d_max=16, params=["nope.*"])
    with pytest.raises(sk.InvalidOptionError, match="one-shot iterator"):
        api.make_subspace_trainer(task.model, task.loss_fn, iter([1]), task.metric, d_max=16)


def test_baseline_sets_target_and_report_outputs(tmp_path):
    """Digits CNN: full fine-tuning sets the target; JSON and plot are written."""
    import models

    from sketchcore_intrinsic_dim.plots import plot_report

    x, y = models.digits_data(400)
    xe, ye = torch.from_numpy(x[300:]), torch.from_numpy(y[300:])

    def accuracy(model):
        return float((model(xe).argmax(1) == ye).float().mean())

    model = models.digits_cnn(seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    rep = api.intrinsic_dimension(model, models.cross_entropy, (x[:300], y[:300]), accuracy,
                                  d_max=256, d_start=16, seeds=[0], target_fraction=0.8,
                                  check_every=20, max_steps=200, baseline_steps=200,
                                  baseline_lr=1e-2, lr=0.05, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # theta0 untouched
    assert rep.baseline.metric > 0.7
    assert rep.target == pytest.approx(0.8 * rep.baseline.metric)
    rec = rep.to_dict()
    assert rec["seeds"][0]["dimension"] == rep.seeds[0].dimension
    rep.to_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["num_params"] == rep.num_params
    assert plot_report(rep, tmp_path / "p.png").stat().st_size > 1000
    assert "D*/2<target" in rep.table()


def test_cli_planted_task(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "sketchcore.cli", "intrinsic-dim", "--task", "planted",
         "--num-params", "256", "--rank", "6", "--d-max", "32", "--d-start", "2",
         "--target", "0.9", "--seeds", "0", "--max-steps", "300", "--check-every", "20",
         "--lr", "0.1", "--algo", "ffd", "--threads", "1", "--out", str(tmp_path),
         "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "D*" in res.stdout
    rec = json.loads((tmp_path / "intrinsic_dim.json").read_text())
    assert rec["seeds"][0]["dimension"] in (4, 8)  # D_int ~ 0.9 * 6
    assert (tmp_path / "intrinsic_dim.png").exists()


def test_plugin_registered_and_import_is_light():
    assert "intrinsic_dim" in sk.analyses()
    assert sk.analyses()["intrinsic_dim"].load() is api
    code = ("import sys, sketchcore_intrinsic_dim; "
            "print(any(m in sys.modules for m in ('torch', 'jax', 'matplotlib', 'optax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
