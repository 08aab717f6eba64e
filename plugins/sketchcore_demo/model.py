"""The demo's model: a small CNN for grayscale images, and its training loop."""

from __future__ import annotations

import numpy as np

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


def cross_entropy(output, batch):
    """Mean cross-entropy of a (images, labels) batch: the loss every analysis uses."""
    import torch.nn.functional as F

    return F.cross_entropy(output, batch[1])


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(-1).numpy()
    return float((pred == y).mean())


def train(model, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int, lr: float = 3e-3,
          batch_size: int = 64, progress: bool = True) -> list[float]:
    """Adam on the mean cross-entropy; returns the loss per epoch."""
    import torch
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    losses = []
    for _ in tqdm(range(epochs), desc="train", unit="epoch", disable=not progress):
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch_size):
            idx = order[i : i + batch_size]
            loss = cross_entropy(model(xt[idx]), (xt[idx], yt[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(xt))
    return losses
