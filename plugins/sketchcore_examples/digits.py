"""scikit-learn's bundled 8x8 digits (1,797 images, 10 classes; nothing is downloaded), the small
models the examples train on them, and seeded label flips."""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits", "digits_cnn", "digits_mlp", "flip_labels", "NUM_CLASSES"]

NUM_CLASSES = 10


def load_digits(n: int | None = None, *, flat: bool = False, seed: int | None = 0):
    """The digits as numpy ``(x, y)``: ``x`` float32 in [0, 1] of shape ``(n, 1, 8, 8)`` (``(n,
    64)`` with ``flat=True``), ``y`` int64 in 0..9.

    Rows come in the order of ``np.random.default_rng(seed).permutation`` (``seed=None``: the
    bundled order); ``n`` keeps the first ``n`` of them (default all 1,797)."""
    from sklearn.datasets import load_digits as bundled_digits

    d = bundled_digits()
    count = len(d.target)
    order = np.arange(count) if seed is None else np.random.default_rng(seed).permutation(count)
    if n is not None:
        order = order[:n]
    x = (d.images[order] / 16.0).astype(np.float32)
    x = x.reshape(len(order), 64) if flat else x[:, None]
    return x, d.target[order].astype(np.int64)


def digits_cnn(channels: int = 8):
    """Conv(1 -> c, 3x3) - ReLU - Conv(c -> 2c, 3x3) - ReLU - Flatten - Linear(2c * 4 * 4 -> 10)
    on ``(n, 1, 8, 8)`` images (3,818 parameters at ``channels=8``). Initialized from torch's
    global generator: seed it first."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, channels, 3), nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * channels * 16, NUM_CLASSES),
    )


def digits_mlp(hidden: int = 128, activation: str = "relu", *, flatten: bool = True):
    """[Flatten -] Linear(64 -> hidden) - activation - Linear(hidden -> 10): 75 * hidden + 10
    parameters (9,610 at 128). ``activation``: ``"relu"`` or ``"tanh"``; ``flatten=False`` takes
    flat ``(n, 64)`` input and numbers the layers from 0. Initialized from torch's global
    generator: seed it first."""
    from torch import nn

    acts = {"relu": nn.ReLU, "tanh": nn.Tanh}
    if activation not in acts:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(acts)}.")
    layers = [nn.Flatten()] if flatten else []
    layers += [nn.Linear(64, hidden), acts[activation](), nn.Linear(hidden, NUM_CLASSES)]
    return nn.Sequential(*layers)


def flip_labels(labels, count: int, num_classes: int, seed: int):
    """Copy of ``labels`` with ``count`` examples, chosen with ``seed``, set to another class;
    returns ``(new_labels, flipped_indices)`` (the indices sorted)."""
    rng = np.random.default_rng(seed)
    labels = np.array(labels, copy=True)
    idx = np.sort(rng.choice(len(labels), size=count, replace=False)) if count else np.zeros(0, int)
    labels[idx] = (labels[idx] + rng.integers(1, num_classes, size=count)) % num_classes
    return labels, idx
