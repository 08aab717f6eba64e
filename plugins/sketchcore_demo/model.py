"""The demo's model: a small CNN for grayscale images, and its training (the Adam loop and
the cross-entropy of ``sketchcore_examples.training``)."""

from __future__ import annotations

import numpy as np

from sketchcore_examples.training import cross_entropy, train_adam

__all__ = ["make_cnn", "train", "accuracy", "cross_entropy"]


def make_cnn(image_shape, num_classes: int, *, seed: int, width: int = 8):
    """conv(1->w) - relu - conv(w->2w, stride 2) - relu - linear(->32) - relu - linear(->classes)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    h, w = image_shape
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * width * h2 * w2, 32),
        nn.ReLU(),
        nn.Linear(32, num_classes),
    )


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(-1).numpy()
    return float((pred == y).mean())


def train(model, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int, lr: float = 3e-3,
          batch_size: int = 64, progress: bool = True) -> list[float]:
    """Adam on the mean cross-entropy, in seeded shuffled batches; returns the loss per epoch
    (the mean over the epoch's examples)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    sizes = [min(batch_size, len(xt) - i) for i in range(0, len(xt), batch_size)]

    def batches():
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = order[i : i + batch_size]
            yield xt[idx], yt[idx]

    steps = train_adam(model, lambda b: cross_entropy(model(b[0]), b), batches, lr=lr,
                       epochs=epochs, progress=progress)
    losses = []
    for epoch in steps:
        total = 0.0
        for loss, size in zip(epoch, sizes):
            total += loss * size
        losses.append(total / len(xt))
    return losses
