"""The demo's data: scikit-learn's bundled digits (no download), or the user's own arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "load_dataset"]


@dataclass
class Dataset:
    """Images (n, 1, H, W) float32 in [0, 1], integer labels, a train/test split, a name."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.x_train.shape[-2:])


def _as_images(x: np.ndarray, source: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:  # flat features: make a square image if possible, else a 1 x F strip
        side = int(round(np.sqrt(x.shape[1])))
        x = x.reshape(len(x), side, side) if side * side == x.shape[1] else x[:, None, :]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(
            f"{source}: expected x of shape (n, features), (n, H, W) or (n, 1, H, W), got "
            f"{x.shape}; save grayscale images or flat feature vectors."
        )
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else x


def load_dataset(path: str | None, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """``path=None``: sklearn's digits (1797 8x8 images, 10 classes). Otherwise an ``.npz`` file
    with arrays ``x`` (images or feature vectors) and ``y`` (integer labels), split seeded."""
    if path is None:
        from sketchcore_examples.digits import load_digits

        x, y = load_digits(seed=None)  # the bundled order: the split below shuffles
        name = "digits (scikit-learn, bundled)"
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--data {path!r}: no such file; pass an .npz with arrays x, y.")
        with np.load(p) as f:
            missing = {"x", "y"} - set(f.files)
            if missing:
                raise ValueError(f"--data {path!r} lacks arrays {sorted(missing)}; it has {f.files}.")
            x, y, name = f["x"], f["y"], p.name
    x = _as_images(x, path or "digits")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels y must be integers of shape ({len(x)},), got {y.dtype} {y.shape}.")
    classes, y = np.unique(y, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(test_fraction * len(x))))
    te, tr = order[:n_test], order[n_test:]
    return Dataset(x[tr], y[tr].astype(np.int64), x[te], y[te].astype(np.int64), name, len(classes))
