"""Endless, seeded streams of training batches (shared by the torch and jax trainers)."""

from __future__ import annotations

import numpy as np

from sketchcore import InvalidOptionError

__all__ = ["BatchCycler", "is_array_dataset"]


def _leading(a) -> int | None:
    shape = getattr(a, "shape", None)
    return int(shape[0]) if shape else None


def is_array_dataset(data) -> bool:
    """A tuple of arrays (or a dict of arrays) with one leading size: a dataset to slice."""
    if isinstance(data, dict):
        parts = list(data.values())
    elif isinstance(data, tuple):
        parts = list(data)
    else:
        return False
    sizes = {_leading(a) for a in parts}
    return bool(parts) and len(sizes) == 1 and None not in sizes


class BatchCycler:
    """Batches forever: an array dataset is reshuffled (seeded) every epoch and cut into full
    batches of ``batch_size``; any other re-iterable (a list of batches, a DataLoader) is replayed
    in its own order. ``convert`` maps each array to the framework's tensor type once."""

    def __init__(self, data, *, batch_size: int = 32, seed: int = 0, convert=None) -> None:
        self.seed = seed
        self.epoch = 0
        if is_array_dataset(data):
            keys = list(data) if isinstance(data, dict) else None
            parts = list(data.values()) if keys is not None else list(data)
            parts = [convert(a) if convert else a for a in parts]
            self.n = _leading(parts[0])
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise InvalidOptionError(f"batch_size must be a positive integer, got {batch_size!r}.")
            self.batch_size = min(batch_size, self.n)
            self._keys, self._parts = keys, parts
            self._iter = self._array_batches()
        else:
            try:
                iter(data)
            except TypeError:
                raise InvalidOptionError(
                    f"train data must be a tuple (or dict) of arrays with one leading size, or an "
                    f"iterable of batches; got {type(data).__name__}."
                ) from None
            if iter(data) is data:
                raise InvalidOptionError(
                    "train data is a one-shot iterator; pass something that can be iterated again "
                    "(a list of batches, a DataLoader, or a tuple of arrays)."
                )
            self._data = data
            self._iter = self._replay()

    def _array_batches(self):
        while True:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            self.epoch += 1
            for start in range(0, self.n - self.batch_size + 1, self.batch_size):
                idx = np.sort(order[start : start + self.batch_size])
                yield self._take(idx)

    def _take(self, idx):
        sliced = [a[_index_for(a, idx)] for a in self._parts]
        if self._keys is not None:
            return dict(zip(self._keys, sliced))
        return tuple(sliced)

    def _replay(self):
        while True:
            empty = True
            for batch in self._data:
                empty = False
                yield batch
            self.epoch += 1
            if empty:
                raise InvalidOptionError("train data yielded no batches.")

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iter)


def _index_for(array, idx: np.ndarray):
    """An index array of the array's own library (torch needs a tensor, jax/numpy take numpy)."""
    module = type(array).__module__.split(".")[0]
    if module == "torch":
        import torch

        return torch.from_numpy(idx).to(array.device)
    return idx
