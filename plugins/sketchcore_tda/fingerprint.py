"""What a row chunk was built from: a digest of its input rows and one of how they were batched.

A store records both per row chunk. Resuming a build checks them for every chunk already written,
so a store can never mix rows of two datasets, or rows computed with two batchings (per-example
gradients of one example may differ in the last bits between batch sizes, because the vectorized
kernels block differently). Both digests are independent of how the data is split into *chunks*
and of the library the arrays come from (numpy, torch, jax: hashed as their numpy bytes).
"""

from __future__ import annotations

import hashlib

__all__ = ["InputFingerprint", "DIGEST_BYTES"]

DIGEST_BYTES = 32


def _leaves(batch):
    """The arrays of a batch in a fixed order: dict values by sorted key, tuple/list in order."""
    if isinstance(batch, dict):
        return [(str(k), batch[k]) for k in sorted(batch, key=str)]
    if isinstance(batch, (tuple, list)):
        return [(str(i), v) for i, v in enumerate(batch)]
    return [("", batch)]


def _host(a):
    """``a`` as a numpy array (torch tensors detached and moved to the host; bfloat16 as bits)."""
    import numpy as np

    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch, without importing it
        t = a.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.view(dtype=__import__("torch").int16)
        return t.numpy()
    return np.asarray(a)


class InputFingerprint:
    """Streaming digests of the rows of one chunk: ``update(batch)`` per batch, then ``digest()``
    -> ``DIGEST_BYTES`` bytes of data digest followed by ``DIGEST_BYTES`` of batching digest."""

    def __init__(self) -> None:
        self._leaf_hashes: dict[str, hashlib._Hash] = {}
        self._lengths: list[int] = []

    def update(self, batch) -> None:
        import numpy as np

        n = None
        for key, leaf in _leaves(batch):
            a = _host(leaf)
            if a.ndim == 0:
                raise ValueError(f"batch entry {key!r} is a scalar; every entry of a batch needs "
                                 "one row per example.")
            n = a.shape[0] if n is None else n
            h = self._leaf_hashes.get(key)
            if h is None:
                h = self._leaf_hashes[key] = hashlib.sha256()
                h.update(f"{key}|{a.dtype.str}|{a.shape[1:]}|".encode())
            if a.dtype.kind == "O":  # Python objects: their reprs (bytes would be addresses)
                h.update("\x1f".join(repr(v) for v in a.ravel().tolist()).encode())
            else:
                try:
                    h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
                except (TypeError, ValueError):  # formats memoryview cannot cast
                    h.update(np.ascontiguousarray(a).tobytes())
        self._lengths.append(int(n or 0))

    def digest(self) -> bytes:
        data = hashlib.sha256()
        for key in sorted(self._leaf_hashes):
            data.update(key.encode() + b"\0" + self._leaf_hashes[key].digest())
        batching = hashlib.sha256(",".join(map(str, self._lengths)).encode())
        return data.digest() + batching.digest()
