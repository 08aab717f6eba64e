"""Sketched per-example gradients and HVPs of torch models (sketchcore.gradients + the torch
adapter): a tiny GPT-2 (transformers, random weights), a CNN on scikit-learn's digits, a module
``vmap`` cannot run. Exactness against autograd references, explicit == implicit, HVPs against the
dense ``Phi H Phi^T``, unbiasedness of both layouts, streaming, parameters and fingerprints."""

from __future__ import annotations

import subprocess
import sys

import models
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sklearn")

import sketchcore as sk  # noqa: E402
from sketchcore.gradients import (  # noqa: E402
    GradientSketcher,
    PerExampleLoopWarning,
    SketchPlan,
    find_adapter,
)

models.ensure_gradients_backend("torch")


def sketcher(model, loss=models.cross_entropy, **kw):
    """A GradientSketcher; without ``sketch=`` the identity (exact gradients, D = N)."""
    kw.setdefault("sketch", None)
    return GradientSketcher(model, loss, **kw)


def pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def manual_per_example(model, loss_fn, x, y):
    """Per-example gradients by plain autograd, one example at a time (the reference)."""
    rows = []
    params = [p for p in model.parameters() if p.requires_grad]
    for i in range(len(x)):
        loss = loss_fn(model(x[i:i + 1]), (x[i:i + 1], y[i:i + 1]))
        gs = torch.autograd.grad(loss, params)
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    return torch.stack(rows).numpy()


# ---- models and data --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn():
    return models.digits_cnn()


@pytest.fixture(scope="module")
def digits():
    x, y = models.digits_data(48)
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.fixture(scope="module")
def gpt2():
    return models.tiny_gpt2()


@pytest.fixture(scope="module")
def tokens():
    return models.token_batch(32, seq_len=16)


@pytest.fixture(scope="module")
def gpt2_qk(gpt2, tokens):
    """qk sketches of the 32 sequences, computed once per (layout, mode, log2 D)."""
    cache = {}

    def get(layout, mode, log_d):
        key = (layout, mode, log_d)
        if key not in cache:
            cache[key] = sketcher(gpt2, models.causal_lm_loss, layout=layout, mode=mode,
                                  sketch=dict(algo="qk", out_dim=2**log_d, seed=0)
                                  ).sketch_batch(tokens)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def gpt2_exact(gpt2, tokens):
    """Exact per-example gradients of the 32 token sequences and their 16 x 16 inner products."""
    g = sketcher(gpt2, models.causal_lm_loss).full_gradients(tokens)
    return g, g[:16] @ g[16:].T


# ---- discovery and validation -----------------------------------------------------------------


def test_adapter_comes_from_the_registry(cnn):
    from sketchcore_torch.gradients import TorchGradients

    gs = sketcher(cnn, sketch=dict(algo="affd", out_dim=64, seed=0))
    assert isinstance(gs.adapter, TorchGradients)
    assert isinstance(find_adapter(cnn, models.cross_entropy), TorchGradients)
    assert gs.num_params == sum(p.numel() for p in cnn.parameters()) == 1490
    assert gs.out_dim == 64
    assert gs.param_names == [n for n, _ in cnn.named_parameters()]
    assert gs.param_shapes == [tuple(p.shape) for p in cnn.parameters()]


def test_front_imports_no_framework():
    code = ("import sys, sketchcore.gradients; "
            "bad = [m for m in ('torch', 'jax', 'numba', 'cupy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_sketch_is_affd_4096(gpt2):
    gs = GradientSketcher(gpt2, models.causal_lm_loss)
    assert gs.out_dim == 4096 and gs.plan.spec == dict(algo="affd", out_dim=4096, seed=0)
    assert gs.plan.blocks[0].sketch.in_dim == gs.num_params


def test_unowned_model_is_refused():
    with pytest.raises(sk.SketchcoreError, match="no registered backend handles"):
        GradientSketcher(object(), models.cross_entropy)


@pytest.mark.parametrize("kw, match", [
    (dict(layout="rows"), "unknown layout 'rows'"),
    (dict(mode="lazy"), "unknown mode 'lazy'"),
    (dict(params=["nothing.*"]), "selects no trainable parameter"),
    (dict(sketch=dict(algo="affd", seed=0)), "lacks \\['out_dim'\\]"),
    (dict(sketch=dict(algo="nope", out_dim=8, seed=0)), "unknown algorithm 'nope'"),
    (dict(chunk_size=0), "chunk_size must be"),
    (dict(flavour=1), "unknown option for torch models: 'flavour'"),
    (dict(sketch=sk.Sketch(algo="qk", in_dim=100, out_dim=8, seed=0)), "N=1490"),
    (dict(sketch=[1, 2]), "sketch must be a dict"),
])
def test_bad_arguments_say_what_to_do(cnn, kw, match):
    with pytest.raises(sk.SketchcoreError, match=match):
        sketcher(cnn, **{"sketch": dict(algo="affd", out_dim=64, seed=0), **kw})


# ---- exactness on the digits CNN --------------------------------------------------------------


def test_full_gradients_match_autograd_loop(cnn, digits):
    x, y = digits
    got = sketcher(cnn).full_gradients((x[:12], y[:12]))
    ref = manual_per_example(cnn, models.cross_entropy, x[:12], y[:12])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


def test_no_sketch_is_the_identity(cnn, digits):
    x, y = digits
    gs = sketcher(cnn, sketch=None)
    assert gs.out_dim == gs.num_params
    np.testing.assert_allclose(gs.sketch_batch((x[:8], y[:8])), gs.full_gradients((x[:8], y[:8])),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("algo", ["dense", "fjl", "ffd", "affd", "afjl", "qk"])
@pytest.mark.parametrize("layout", ["flat", "blocks"])
def test_sketch_is_phi_of_the_gradient_and_modes_agree(cnn, digits, algo, layout):
    """sketch_batch = Phi(full gradient) in both modes (explicit == implicit to fp tolerance)."""
    x, y = digits
    batch = (x[:10], y[:10])
    spec = dict(algo=algo, out_dim=128, seed=3)
    explicit = sketcher(cnn, sketch=spec, layout=layout, mode="explicit")
    implicit = sketcher(cnn, sketch=spec, layout=layout, mode="implicit")
    s_e, s_i = explicit.sketch_batch(batch), implicit.sketch_batch(batch)
    ref = explicit.apply_sketch(explicit.full_gradients(batch))
    assert s_e.dtype == np.float32 and s_e.shape == (10, 128)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(s_e, ref, atol=2e-5 * scale)
    np.testing.assert_allclose(s_i, s_e, atol=2e-5 * scale)


def test_blocks_layout_builds_hashed_independent_blocks(cnn):
    gs = sketcher(cnn, sketch=dict(algo="affd", out_dim=64, seed=0), layout="blocks")
    blocks = {b.name: b for b in gs.plan.blocks}
    # conv weight (36), conv bias (4), linear bias (10) are < D: grouped; linear weight alone
    assert set(blocks) == {"3.weight", "small-tensors:0.weight,0.bias,3.bias"}
    small = blocks["small-tensors:0.weight,0.bias,3.bias"]
    assert small.size == 50 and small.in_dim == 64
    assert len({b.sketch.seed for b in gs.plan.blocks}) == 2
    pad = sketcher(cnn, sketch=dict(algo="affd", out_dim=64, seed=0), layout="blocks",
                   small_blocks="pad")
    assert [b.in_dim for b in pad.plan.blocks] == [64, 64, 1440, 64]


def test_chunked_and_unchunked_agree(cnn, digits):
    x, y = digits
    spec = dict(algo="qk", out_dim=64, seed=0)
    whole = sketcher(cnn, sketch=spec).sketch_batch((x[:10], y[:10]))
    chunked = sketcher(cnn, sketch=spec, chunk_size=3).sketch_batch((x[:10], y[:10]))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_mean_gradient_loss_and_their_sketch(cnn, digits):
    x, y = digits
    batches = [(x[:10], y[:10]), (x[10:16], y[10:16])]  # unequal sizes: weighted by examples
    gs = sketcher(cnn, sketch=dict(algo="affd", out_dim=64, seed=1), layout="blocks")
    full = gs.full_gradients((x[:16], y[:16]))
    np.testing.assert_allclose(gs.mean_gradient(batches), full.mean(0), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        ref = float(models.cross_entropy(cnn(x[:16]), (x[:16], y[:16])))
    assert gs.loss(batches) == pytest.approx(ref, rel=1e-5)
    for mode in ("explicit", "implicit"):
        gs_m = sketcher(cnn, sketch=dict(algo="affd", out_dim=64, seed=1), layout="blocks",
                        mode=mode)
        np.testing.assert_allclose(gs_m.mean_gradient_sketch(batches),
                                   gs.apply_sketch(full.mean(0)), rtol=1e-4, atol=1e-5)


# ---- HVPs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_hessian(cnn, digits):
    x, y = digits
    batches = [(x[:16], y[:16]), (x[16:24], y[16:24])]
    h = sketcher(cnn).hessian(batches)
    return batches, h


def test_hessian_matches_double_backward_hvps(cnn, digits, cnn_hessian):
    """H v against reverse-over-reverse HVPs of plain autograd (independent of torch.func)."""
    batches, h = cnn_hessian
    x, y = digits
    names = [n for n, _ in cnn.named_parameters()]
    shapes = [p.shape for p in cnn.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in cnn.parameters()])

    def loss_of(flat):
        parts = torch.split(flat, [int(np.prod(s)) for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes)}
        out = torch.func.functional_call(cnn, params, (x[:24],))
        return models.cross_entropy(out, (x[:24], y[:24]))

    assert h.shape == (1490, 1490)
    np.testing.assert_allclose(h, h.T, atol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(4):
        v = rng.standard_normal(1490)
        _, ref = torch.autograd.functional.hvp(loss_of, flat0, torch.from_numpy(v).float())
        ref = ref.double().numpy()
        np.testing.assert_allclose(h @ v, ref, atol=2e-5 * np.abs(ref).max())


def test_hessian_refuses_large_models(gpt2, tokens):
    with pytest.raises(sk.InvalidOptionError, match="N=118528 > max_params=3000"):
        sketcher(gpt2, models.causal_lm_loss).hessian([tokens])


@pytest.mark.parametrize("layout", ["flat", "blocks"])
@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_sketched_hvp_is_phi_h_phi_t(cnn, cnn_hessian, layout, mode):
    batches, h = cnn_hessian
    gs = sketcher(cnn, sketch=dict(algo="affd", out_dim=64, seed=5), layout=layout, mode=mode)
    phi_t = gs.transpose_sketch(np.eye(64))  # (D, N) rows Phi^T e_j -> Phi = phi_t.T
    m = phi_t @ h @ phi_t.T
    op = gs.hvp_operator(batches)
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = rng.standard_normal(64)
        got = op(v)
        assert got.dtype == np.float64 and got.shape == (64,)
        np.testing.assert_allclose(got, m @ v, atol=5e-5 * np.abs(m @ v).max())


def test_full_hvp_matches_hessian(cnn, cnn_hessian):
    batches, h = cnn_hessian
    op = sketcher(cnn).hvp_full_operator(batches)
    v = np.random.default_rng(1).standard_normal(1490)
    np.testing.assert_allclose(op(v), h @ v, atol=5e-5 * np.abs(h @ v).max())


# ---- unbiasedness of the two layouts ---------------------------------------------------------


@pytest.mark.parametrize("layout, small", [("flat", "group"), ("blocks", "group"),
                                           ("blocks", "pad")])
def test_layouts_are_unbiased_for_inner_products(cnn, digits, layout, small):
    """Mean over seeds of <Phi x, Phi y> is <x, y> within 4.5 standard errors (the standard
    error estimated from the same seeds), for real per-example gradients x, y."""
    x, y = digits
    gs = sketcher(cnn, sketch=None)
    g = gs.full_gradients((x[:2], y[:2])).astype(np.float64)
    gx, gy = g[0], g[1]
    sizes, names = gs.adapter.sizes, gs.adapter.names
    seeds = 300
    est = np.empty(seeds)
    sq = np.empty(seeds)
    for s in range(seeds):
        plan = SketchPlan(sizes, names, dict(algo="affd", out_dim=64, seed=s), layout, small)
        px, py = plan.apply_sketch(np.stack([gx, gy]))
        est[s], sq[s] = px @ py, px @ px
    for values, truth in ((est, gx @ gy), (sq, gx @ gx)):
        se = values.std(ddof=1) / np.sqrt(seeds)
        assert abs(values.mean() - truth) <= 4.5 * se, (values.mean(), truth, se)
    # the spread is that of a D = 64 sketch, not degenerate and not inflated
    gauss_var = ((gx @ gx) * (gy @ gy) + (gx @ gy) ** 2) / 64
    assert 0.1 * gauss_var < est.var() < 3.0 * gauss_var


# ---- a tiny GPT-2 (transformers) ------------------------------------------------------------


def test_gpt2_unsketched_matches_sketch_none(gpt2, tokens, gpt2_exact):
    g, _ = gpt2_exact
    assert g.shape == (32, 118528)
    sub = {k: v[:4] for k, v in tokens.items()}
    np.testing.assert_allclose(sketcher(gpt2, models.causal_lm_loss).sketch_batch(sub), g[:4],
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layout", ["flat", "blocks"])
def test_gpt2_pearson_grows_with_d(gpt2_qk, gpt2_exact, layout):
    """Pearson r of sketched vs exact gradient inner products (16 x 16 pairs): grows with D and
    exceeds 0.95 at D = 2^14 for qk (the paper's Table 6: qk needs 2^14 for r > 0.95)."""
    _, exact = gpt2_exact
    rs = []
    for log_d in (8, 11, 14):
        s = gpt2_qk(layout, "explicit", log_d)
        rs.append(pearson(s[:16] @ s[16:].T, exact))
    assert rs[0] < rs[1] < rs[2], rs
    assert rs[2] > 0.95, rs


@pytest.mark.parametrize("layout", ["flat", "blocks"])
def test_gpt2_implicit_equals_explicit(gpt2_qk, gpt2_exact, layout):
    _, exact = gpt2_exact
    s_e, s_i = gpt2_qk(layout, "explicit", 14), gpt2_qk(layout, "implicit", 14)
    np.testing.assert_allclose(s_i, s_e, atol=1e-4 * np.abs(s_e).max())
    assert pearson(s_i[:16] @ s_i[16:].T, exact) > 0.95


def test_gpt2_affd_reaches_095_at_4096(gpt2, tokens, gpt2_exact):
    """affd: r > 0.95 at D = 2^12 (the paper: 2^10 on full GPT-2)."""
    _, exact = gpt2_exact
    s = sketcher(gpt2, models.causal_lm_loss,
                 sketch=dict(algo="affd", out_dim=2**12, seed=0)).sketch_batch(tokens)
    assert pearson(s[:16] @ s[16:].T, exact) > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["flat", "blocks"])
@pytest.mark.parametrize("mode", ["explicit", "implicit"])
@pytest.mark.parametrize("algo", ["affd", "afjl"])
def test_gpt2_lookup_free_sketches_all_layouts_and_modes(gpt2, tokens, gpt2_exact, layout, mode,
                                                        algo):
    _, exact = gpt2_exact
    s = sketcher(gpt2, models.causal_lm_loss, sketch=dict(algo=algo, out_dim=2**13, seed=0),
                 layout=layout, mode=mode).sketch_batch(tokens)
    assert pearson(s[:16] @ s[16:].T, exact) > 0.95


def test_gpt2_layer_selection_baseline(gpt2, tokens, gpt2_exact):
    g, exact = gpt2_exact
    full = sketcher(gpt2, models.causal_lm_loss)
    names = full.param_names
    layer = sketcher(gpt2, models.causal_lm_loss, params=["transformer.h.0.*"])
    assert layer.param_names == [n for n in names if n.startswith("transformer.h.0.")]
    cols = np.concatenate([np.arange(o, o + s) for n, o, s in
                           zip(names, full.plan.offsets, full.plan.sizes)
                           if n.startswith("transformer.h.0.")])
    sub = {k: v[:6] for k, v in tokens.items()}
    lg = full.layer_gradients(sub, "transformer.h.0.")
    np.testing.assert_allclose(lg, g[:6, cols], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer.full_gradients(sub), lg, rtol=1e-5, atol=1e-7)
    with pytest.raises(sk.UnknownNameError, match="unknown layer prefix 'decoder'"):
        full.layer_gradients(sub, "decoder")
    # the baseline itself: a layer's exact inner products track the full ones only partly
    r_layer = pearson(g[:16, cols] @ g[16:, cols].T, exact)
    assert r_layer < 0.999
    sk_layer = sketcher(gpt2, models.causal_lm_loss, params=["transformer.h.0.*"],
                        sketch=dict(algo="qk", out_dim=2**12, seed=0)).sketch_batch(sub)
    np.testing.assert_allclose(sk_layer, SketchPlan(layer.adapter.sizes, layer.param_names,
                                                    dict(algo="qk", out_dim=2**12, seed=0),
                                                    "flat").apply_sketch(lg),
                               atol=1e-4 * np.abs(sk_layer).max())


def test_gpt2_bf16_sketches_are_fp32_and_close(tokens):
    spec = dict(algo="qk", out_dim=1024, seed=0)
    sub = {k: v[:8] for k, v in tokens.items()}
    s32 = sketcher(models.tiny_gpt2(), models.causal_lm_loss, sketch=spec).sketch_batch(sub)
    gs16 = sketcher(models.tiny_gpt2(dtype=torch.bfloat16), models.causal_lm_loss, sketch=spec,
                    mode="implicit")
    s16 = gs16.sketch_batch(sub)
    assert s16.dtype == np.float32
    assert pearson(s16, s32) > 0.98
    assert gs16.get_flat_params().dtype == np.float32


# ---- the loop fallback -----------------------------------------------------------------------


def test_loop_fallback_warns_and_is_exact(digits):
    x, y = digits
    x = x.reshape(len(x), 64)
    net = models.item_calling_net()
    gs = sketcher(net, sketch=dict(algo="affd", out_dim=64, seed=0), layout="blocks")
    with pytest.warns(PerExampleLoopWarning, match=r"vmap cannot run ItemCallingNet .*item"):
        s = gs.sketch_batch((x[:6], y[:6]))
    ref = manual_per_example(net, models.cross_entropy, x[:6], y[:6])
    np.testing.assert_allclose(gs.full_gradients((x[:6], y[:6])), ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s, gs.apply_sketch(ref), atol=1e-5 * np.abs(s).max())
    implicit = sketcher(net, sketch=dict(algo="affd", out_dim=64, seed=0), layout="blocks",
                        mode="implicit")
    with pytest.warns(PerExampleLoopWarning):
        np.testing.assert_allclose(implicit.sketch_batch((x[:6], y[:6])), s,
                                   atol=1e-5 * np.abs(s).max())


class _SilentVmapFailure(RuntimeError):
    """An error without a message, raised only under ``torch.func`` transforms."""


class _EmptyMessageNet(torch.nn.Module):
    """A linear model whose forward raises an exception with an empty message under vmap (and
    works under plain autograd), like some third-party ops do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        if torch._C._functorch.is_functorch_wrapped_tensor(x):
            raise _SilentVmapFailure()
        return self.fc(x)


def test_loop_fallback_survives_an_error_with_an_empty_message(digits):
    """The fallback's warning quotes the vmap error's first line; an empty message must not
    raise IndexError (which hid the real error) but still fall back and name the error type."""
    x, y = digits
    x = x.reshape(len(x), 64)[:5]
    y = y[:5]
    net = _EmptyMessageNet()
    gs = sketcher(net)
    expected = r"vmap cannot run _EmptyMessageNet \(_SilentVmapFailure: \(no message\)\)"
    with pytest.warns(PerExampleLoopWarning, match=expected):
        g = gs.full_gradients((x, y))
    np.testing.assert_allclose(g, manual_per_example(net, models.cross_entropy, x, y),
                               rtol=1e-5, atol=1e-7)


# ---- streaming, parameters, fingerprints ----------------------------------------------------


def test_stream_arrays_loaders_and_ids(cnn, digits):
    x, y = digits
    gs = sketcher(cnn, sketch=dict(algo="qk", out_dim=64, seed=0))
    ref = gs.sketch_batch((x[:20], y[:20]))
    out = list(gs.stream((x[:20].numpy(), y[:20].numpy()), batch_size=8, progress=True))
    assert [len(i) for i, _ in out] == [8, 8, 4]
    ids = np.concatenate([i for i, _ in out])
    assert ids.dtype == np.int64 and ids.tolist() == list(range(20))
    np.testing.assert_allclose(np.concatenate([s for _, s in out]), ref, rtol=1e-4, atol=1e-6)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:20], y[:20]),
                                         batch_size=6)
    custom = np.arange(100, 120)
    got = list(gs.stream(loader, ids=custom, progress=False))
    assert np.concatenate([i for i, _ in got]).tolist() == custom.tolist()
    np.testing.assert_allclose(np.concatenate([s for _, s in got]), ref, rtol=1e-4, atol=1e-6)

    gen = ((x[i:i + 5], y[i:i + 5]) for i in range(0, 20, 5))
    assert sum(len(s) for _, s in gs.stream(gen, progress=False)) == 20
    with pytest.raises(sk.ShapeError, match="ids has 3 entries"):
        list(gs.stream((x[:20], y[:20]), ids=[1, 2, 3], progress=False))


def test_stream_dict_dataset_of_tokens(gpt2, tokens):
    gs = sketcher(gpt2, models.causal_lm_loss, sketch=dict(algo="qk", out_dim=256, seed=0))
    data = {k: v[:6].numpy() for k, v in tokens.items()}
    got = np.concatenate([s for _, s in gs.stream(data, batch_size=4, progress=False)])
    np.testing.assert_allclose(got, gs.sketch_batch({k: v[:6] for k, v in tokens.items()}),
                               rtol=1e-4, atol=1e-5)


def test_flat_params_and_fingerprint():
    net = models.digits_cnn(seed=1)
    gs = sketcher(net, sketch=dict(algo="qk", out_dim=64, seed=0))
    theta = gs.get_flat_params()
    assert theta.shape == (1490,) and theta.dtype == np.float32
    fp = gs.fingerprint()
    assert fp["names"] == gs.param_names and fp["shapes"][0] == [4, 1, 3, 3]
    assert fp == gs.fingerprint() == sketcher(models.digits_cnn(seed=1)).fingerprint()
    gs.set_flat_params(theta + 1.0)
    np.testing.assert_allclose(gs.get_flat_params(), theta + 1.0, rtol=1e-6)
    np.testing.assert_allclose(net[0].bias.detach().numpy(), theta[36:40] + 1.0, rtol=1e-6)
    assert gs.fingerprint()["hash"] != fp["hash"]
    with pytest.raises(sk.ShapeError, match=r"expects shape \(1490,\)"):
        gs.set_flat_params(theta[:10])
