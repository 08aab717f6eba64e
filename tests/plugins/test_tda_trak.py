"""TRAK: with exact features, ``method="trak"`` equals TRAK's formula computed independently here
(per-example margin gradients by a loop of autograd calls, ``Q = 1 - softmax``, a dense solve);
ensembles average; soft-thresholding; the out-to-loss weights in the store are checked like the
sketches; stores and sketchers of the wrong kind are refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("torch")
pytest.importorskip("zarr")

import models  # noqa: E402  (tests/models.py)
import torch  # noqa: E402

import sketchcore as sk  # noqa: E402
from sketchcore_tda.api import (  # noqa: E402
    SketchStore,
    TRAKSketcher,
    attribute,
    build_store,
    build_trak_store,
    score_checkpoints,
    score_matrix,
    self_influence,
    soft_threshold,
    write_out_to_loss,
)
from sketchcore_tda.errors import StoreDamagedError, StoreIncompleteError  # noqa: E402
from sketchcore_tda.outputs import margin, margin_out_to_loss  # noqa: E402

models.ensure_gradients_backend("torch")


def small_mlp(seed: int, n: int = 48, d_in: int = 6, hidden: int = 7, classes: int = 3,
              steps: int = 30):
    """A float64 MLP trained ``steps`` full-batch Adam steps on seeded data: (model, x, y)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    y = y.clamp(max=classes - 1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.Tanh(),
                                torch.nn.Linear(hidden, classes)).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y


def reference_features(model, x, y):
    """TRAK's ingredients, written independently: per-example gradients of the margin
    ``log(p/(1-p))`` (one autograd call per example, in float64) and ``Q = 1 - p``."""
    params = list(model.parameters())
    rows = []
    for i in range(len(y)):
        logits = model(x[i:i + 1])[0]
        p = torch.softmax(logits, -1)[y[i]]
        f = torch.log(p) - torch.log1p(-p)
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(f, params)]))
    with torch.no_grad():
        q = 1 - torch.softmax(model(x), -1)[torch.arange(len(y)), y]
    # the store keeps float32 features: round the same way, then compute in float64
    feats = torch.stack(rows).numpy().astype(np.float32).astype(np.float64)
    return feats, q.numpy()


def reference_trak(models_xy, test_xy, lam_of):
    """TRAK's estimator (Park et al. 2023, Algorithm 1) for exact features:
    ``mean_m [T_m (X_m^T X_m + lam_m I)^-1 X_m^T] * mean_m Q_m`` (columns scaled by Q)."""
    kernels, qs = [], []
    for model, x, y in models_xy:
        feats, q = reference_features(model, x, y)
        tfeats, _ = reference_features(model, *test_xy)
        lam = lam_of(feats)
        n_params = feats.shape[1]
        kernels.append(tfeats @ np.linalg.solve(feats.T @ feats + lam * np.eye(n_params), feats.T))
        qs.append(q)
    return np.mean(kernels, axis=0) * np.mean(qs, axis=0)[None, :]


def build(tmp_path, name, model, x, y, sketch=None, chunk_rows=16):
    ts = TRAKSketcher(model, sketch=sketch)
    path = tmp_path / f"{name}.zarr"
    build_trak_store(path, ts, (x, y), batch_size=8, chunk_rows=chunk_rows, progress=False)
    return SketchStore.open(path, mode="r"), ts


def test_margin_and_out_to_loss_match_softmax():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((20, 5)) * 4
    labels = rng.integers(0, 5, 20)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pc = p[np.arange(20), labels]
    for arr in (np.asarray, torch.from_numpy):
        out = (arr(logits), arr(labels))
        np.testing.assert_allclose(np.asarray(margin(out[0], out)), np.log(pc / (1 - pc)),
                                   rtol=1e-10)
        np.testing.assert_allclose(np.asarray(margin_out_to_loss(out[0], out)), 1 - pc,
                                   rtol=1e-10)
    # Q keeps its digits where 1 - softmax would round to 0 in float32
    confident = torch.tensor([[30.0, 0.0, 0.0]])
    q = margin_out_to_loss(confident, (None, torch.tensor([0])))
    assert 0 < float(q[0]) == pytest.approx(2 * np.exp(-30.0), rel=1e-5)


@pytest.mark.parametrize("n_train, hidden", [(48, 7), (20, 7)],
                         ids=["primal (D < n)", "dual (D > n)"])
def test_exact_trak_equals_independent_formula(tmp_path, n_train, hidden):
    """N = 6*7+7+7*3+3 = 73 parameters: with 48 train examples the D x D kernel is factored,
    with 20 the n x n one (Woodbury); both must give TRAK's scores to 1e-6."""
    model, x, y = small_mlp(0, n=n_train + 10, hidden=hidden)
    train, test = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
    store, ts = build(tmp_path, "exact", model, *train)
    assert store.metadata["num_params"] == 73 and store.out_dim == 73
    lam = 0.02
    ref = reference_trak([(model, *train)], test, lambda f: lam)
    _ids, got = score_checkpoints([(store, ts)], test, method="trak", damping=lam)
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
    # the default damping: lam = tr(X^T X) / min(n, N)
    ref = reference_trak([(model, *train)], test, lambda f: (f**2).sum() / min(f.shape))
    _ids, got = score_checkpoints([(store, ts)], test, method="trak")
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
    # self-influence: x_j^T (X^T X + lam I)^-1 x_j Q_j
    feats, q = reference_features(model, *train)
    si_ref = np.einsum("ij,ji->i", feats,
                       np.linalg.solve(feats.T @ feats + lam * np.eye(73), feats.T)) * q
    _ids, si = self_influence(store, method="trak", damping=lam)
    np.testing.assert_allclose(si, si_ref, rtol=1e-6)


def test_ensemble_averages_kernel_scores_and_weights(tmp_path):
    """Two independently trained models, one store each: TRAK's mean of the per-model kernel
    scores times the mean of Q; ensemble weights are normalized."""
    members = [small_mlp(s, n=40) for s in (1, 2)]
    x, y = members[0][1], members[0][2]
    train, test = (x[:30], y[:30]), (x[30:], y[30:])
    pairs = [build(tmp_path, f"m{k}", model, *train) for k, (model, _x, _y) in enumerate(members)]
    lam = 0.05
    ref = reference_trak([(m, *train) for m, _x, _y in members], test, lambda f: lam)
    _ids, got = score_checkpoints(pairs, test, method="trak", damping=lam)
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
    # one member alone differs from the average (the test could fail)
    _ids, alone = score_checkpoints(pairs[:1], test, method="trak", damping=lam)
    assert np.abs(alone - ref).max() > 1e-3 * np.abs(ref).max()
    # weights 1 and 3: a weighted mean of both the kernel scores and Q
    k0 = score_checkpoints(pairs[:1], test, method="trak", damping=lam)[1]
    k1 = score_checkpoints(pairs[1:], test, method="trak", damping=lam)[1]
    q0, q1 = (p[0].train_weights().astype(np.float64) for p in pairs)
    want = (0.25 * k0 / q0 + 0.75 * k1 / q1) * (0.25 * q0 + 0.75 * q1)
    _ids, got = score_checkpoints(pairs, test, method="trak", damping=lam, weights=[1, 3])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    with pytest.raises(ValueError, match="positive sum"):
        score_checkpoints(pairs, test, method="trak", weights=[0, 0])


@given(x=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=30),
       c=st.floats(0, 100, allow_nan=False))
def test_soft_threshold_shrinks_toward_zero_and_keeps_order(x, c):
    x = np.asarray(x)
    s = soft_threshold(x, c)
    np.testing.assert_array_equal(soft_threshold(x, 0.0), x)
    assert (s[np.abs(x) <= c] == 0).all()
    np.testing.assert_allclose(np.abs(s), np.maximum(np.abs(x) - c, 0), atol=1e-9)
    assert (np.sign(s) * np.sign(x) >= 0).all()
    order = np.argsort(x, kind="stable")
    assert (np.diff(s[order]) >= 0).all()  # monotone: ranks are kept (ties may appear)


def test_soft_thresholded_trak_scores(tmp_path):
    model, x, y = small_mlp(3, n=40)
    store, ts = build(tmp_path, "st", model, x[:30], y[:30])
    test = (x[30:], y[30:])
    _ids, raw = score_checkpoints([(store, ts)], test, method="trak")
    c = float(np.median(np.abs(raw)))
    _ids, thr = score_checkpoints([(store, ts)], test, method="trak", soft_threshold=c)
    np.testing.assert_allclose(thr, soft_threshold(raw, c), rtol=1e-12)
    assert 0.4 < (thr == 0).mean() < 0.6  # about half the scores are below the median
    res = attribute(store, ts, test, k=3, method="trak", soft_threshold=c)
    np.testing.assert_allclose(res.proponent_scores[:, 0], thr.max(1), rtol=1e-12)


def test_sketched_trak_approaches_exact(tmp_path):
    """AFFD-sketched TRAK ranks train examples like exact TRAK, better at larger D (N = 403,
    50 train examples). Across seeds the mean Spearman is 0.63-0.70 at D = 64 and 0.77-0.82 at
    D = 256; the bounds leave room for that spread."""
    from scipy.stats import spearmanr

    model, x, y = small_mlp(0, n=70, hidden=40)
    train, test = (x[:50], y[:50]), (x[50:], y[50:])
    exact = score_checkpoints([build(tmp_path, "e", model, *train)], test, method="trak")[1]
    rho = {}
    for d in (64, 256):
        pair = build(tmp_path, f"s{d}", model, *train, sketch=dict(algo="affd", out_dim=d, seed=0))
        sketched = score_checkpoints([pair], test, method="trak")[1]
        rho[d] = np.mean([spearmanr(a, b)[0] for a, b in zip(exact, sketched)])
    assert rho[256] > 0.7 and rho[256] > rho[64] + 0.05, rho


def test_weights_are_checked_and_rewritten(tmp_path):
    import zarr

    model, x, y = small_mlp(5, n=40)
    store, ts = build(tmp_path, "w", model, x, y, chunk_rows=16)
    good = store.train_weights().copy()
    np.testing.assert_allclose(good, reference_features(model, x, y)[1], rtol=1e-6)
    group = zarr.open_group(str(store.path), mode="r+")
    group["train_weights"][16:32] = good[16:32] + 1  # weights altered behind the store's back
    with pytest.raises(StoreDamagedError, match="chunk 1 .*train weights that differ"):
        SketchStore.open(store.path).train_weights()
    assert [p.chunk for p in SketchStore.open(store.path).verify_train_weights()] == [1]
    group["train_weight_checksums"][2] = 0  # chunk 2's weights never completed
    problems = SketchStore.open(store.path).verify_train_weights()
    assert [(p.chunk, p.kind) for p in problems] == [(1, "damaged"), (2, "missing")]
    assert write_out_to_loss(store.path, ts, (x, y)) == 16 + 8  # chunks 1 and 2 only
    np.testing.assert_array_equal(SketchStore.open(store.path).train_weights(), good)
    group["train_weight_checksums"][2] = 0
    with pytest.raises(StoreIncompleteError, match="chunk 2 .*never written"):
        SketchStore.open(store.path).train_weights()
    # weights from other rows than the sketches were built from are refused
    group["train_weight_checksums"][0] = 0
    with pytest.raises(sk.StoreMismatchError, match="other input rows"):
        write_out_to_loss(store.path, ts, (x.flip(0), y.flip(0)))


def test_wrong_kind_of_store_or_sketcher_is_refused(tmp_path):
    from sketchcore.gradients import GradientSketcher

    model, x, y = small_mlp(6, n=40)
    train, test = (x[:30], y[:30]), (x[30:], y[30:])
    loss_gs = GradientSketcher(model, lambda out, b: torch.nn.functional.cross_entropy(out, b[1]),
                               sketch=None)
    loss_path = tmp_path / "loss.zarr"
    build_store(loss_path, loss_gs, train, progress=False)
    loss_store = SketchStore.open(loss_path)
    with pytest.raises(ValueError, match="gauss-newton"):
        attribute(loss_store, loss_gs, test, method="trak")
    # a TRAK build into a store of loss-gradient sketches is refused (not resumed)
    with pytest.raises(sk.StoreMismatchError, match="loss-gradient sketches"):
        build_trak_store(loss_path, TRAKSketcher(model, sketch=None), train, progress=False)
    trak_store, ts = build(tmp_path, "t", model, *train)
    with pytest.raises(ValueError, match="TRAKSketcher"):
        attribute(trak_store, loss_gs, test, method="trak")
    with pytest.raises(TypeError, match="TRAKSketcher"):
        build_trak_store(tmp_path / "x.zarr", loss_gs, train, progress=False)
    # dot products of margin gradients are fine on a TRAK store
    ids, dot = score_matrix(trak_store, np.asarray(ts.sketch_batch(test), np.float32))
    assert dot.shape == (10, 30)


def test_cli_trak_build_and_scores(tmp_path, capsys):
    from sketchcore.cli import main

    store = str(tmp_path / "cli.zarr")
    task = ["--task", "sketchcore_tda.example_tasks:digits", "--task-arg", "epochs=1",
            "--task-arg", "n_train=80", "--task-arg", "n_test=10", "--task-arg", "arch=mlp",
            "--task-arg", "hidden=16"]
    assert main(["tda", "build", *task, "--store", store, "--trak", "--algo", "qk", "--dim", "256",
                 "--chunk-rows", "32", "--no-progress"]) == 0
    assert "examples   80" in capsys.readouterr().out
    assert SketchStore.open(store).train_weights_record == {"kind": "out_to_loss",
                                                              "output": "margin"}
    assert main(["tda", "scores", "--store", store, *task, "--method", "trak", "-k", "2",
                 "--soft-threshold", "0", "--max-print", "1"]) == 0
    assert "top-2 proponents / opponents by trak score" in capsys.readouterr().out
    assert main(["tda", "verify", "--store", store, "--no-progress"]) == 0
