"""Training examples as a source of batches that can start at any row (for resuming and shards).

Two kinds:

- ``ArraySource``: a tuple/list of arrays, a dict of arrays (e.g. ``input_ids``, ``labels``) or
  one array, numpy or torch, all with the same leading length. Batches are slices, so any range
  of rows can be produced directly (what resuming and Ray shards need).
- ``IterableSource``: any iterable of such batches (a torch ``DataLoader``) with a known number of
  examples. A range is reached by iterating and skipping, without computing anything for the
  skipped rows.
"""

from __future__ import annotations

__all__ = ["ArraySource", "IterableSource", "as_source", "batch_length", "slice_batch"]


def batch_length(batch) -> int:
    """Number of examples in a batch (leading size of its arrays)."""
    if isinstance(batch, dict):
        if not batch:
            raise ValueError("an empty dict is not a batch; it needs at least one array.")
        return len(next(iter(batch.values())))
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("an empty tuple/list is not a batch; it needs at least one array.")
        return len(batch[0])
    return len(batch)


def slice_batch(batch, start: int, stop: int):
    """Rows ``[start, stop)`` of a batch, keeping its structure (tuple, list, dict or array)."""
    if isinstance(batch, dict):
        return {k: v[start:stop] for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(v[start:stop] for v in batch)
    if isinstance(batch, list):
        return [v[start:stop] for v in batch]
    return batch[start:stop]


class ArraySource:
    """Arrays sliced into batches; any row range can be produced directly."""

    sliceable = True

    def __init__(self, arrays) -> None:
        lengths = _lengths(arrays)
        if len(set(lengths)) != 1:
            raise ValueError(f"the arrays of a dataset must share their leading length, got {lengths}.")
        self.arrays = arrays
        self.num_examples = lengths[0]

    def batches(self, start: int, stop: int, batch_size: int):
        """Yield ``(row, batch)`` for rows ``[start, stop)`` in batches of ``batch_size``."""
        for a in range(start, stop, batch_size):
            yield a, slice_batch(self.arrays, a, min(a + batch_size, stop))

    def subset(self, start: int, stop: int) -> ArraySource:
        """Rows ``[start, stop)`` as their own source (to ship one shard to a worker)."""
        return ArraySource(slice_batch(self.arrays, start, stop))


class IterableSource:
    """An iterable of batches with a known total number of examples."""

    sliceable = False

    def __init__(self, iterable, num_examples: int) -> None:
        self.iterable = iterable
        self.num_examples = int(num_examples)

    def pieces(self, wanted):
        """Yield ``(row, batch)`` pieces of the iterable's batches restricted to the rows for which
        ``wanted(row_start, row_stop)`` returns sub-ranges; nothing is computed for other rows."""
        row = 0
        for batch in self.iterable:
            n = batch_length(batch)
            for a, b in wanted(row, row + n):
                yield a, slice_batch(batch, a - row, b - row)
            row += n
        if row != self.num_examples:
            raise ValueError(
                f"the data yielded {row} examples but num_examples={self.num_examples}; pass the "
                "true number of examples."
            )


def _lengths(arrays) -> list[int]:
    if isinstance(arrays, dict):
        return [len(v) for v in arrays.values()]
    if isinstance(arrays, (tuple, list)):
        return [len(v) for v in arrays]
    return [len(arrays)]


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "__getitem__") and len(getattr(x, "shape", ())) >= 1


def as_source(data, num_examples: int | None = None):
    """An ``ArraySource`` for arrays (tuple/list/dict of arrays, or one array), else an
    ``IterableSource`` (then ``num_examples`` is needed unless ``len(data.dataset)`` exists)."""
    if isinstance(data, (ArraySource, IterableSource)):
        return data
    if isinstance(data, dict) and data and all(_is_array(v) for v in data.values()):
        return ArraySource(data)
    if isinstance(data, (tuple, list)) and data and all(_is_array(v) for v in data):
        return ArraySource(data)
    if _is_array(data):
        return ArraySource(data)
    if num_examples is None:
        dataset = getattr(data, "dataset", None)
        if dataset is not None and hasattr(dataset, "__len__"):
            num_examples = len(dataset)
    if num_examples is None:
        raise ValueError(
            f"cannot tell how many examples {type(data).__name__} holds; pass num_examples=, or "
            "give the data as arrays (a tuple/list/dict of numpy or torch arrays)."
        )
    return IterableSource(data, num_examples)
