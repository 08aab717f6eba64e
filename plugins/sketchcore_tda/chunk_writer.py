"""Write row chunks of a sketch store: what the local build and the Ray shard writers share.

Both engines compute a chunk the same way (its batches start at the chunk's first row) and record
the fingerprint of its inputs, so they write the same store. Its own module so that ``build``
(the local engine) and ``ray_engine`` (the shard writers) both import it without importing each
other.
"""

from __future__ import annotations

from .fingerprint import InputFingerprint
from .store import SketchStore

__all__ = ["resolve_sketcher", "write_chunks", "write_from_iterable", "chunk_batches",
           "chunk_pieces"]


def resolve_sketcher(sketcher):
    """A ``GradientSketcher`` (anything with ``sketch_batch``), or one made by calling a
    zero-argument factory (what Ray workers get, so each builds its own model)."""
    if hasattr(sketcher, "sketch_batch"):
        return sketcher
    if callable(sketcher):
        made = sketcher()
        if not hasattr(made, "sketch_batch"):
            raise TypeError(f"the sketcher factory {sketcher!r} returned {type(made).__name__}, "
                            "not a GradientSketcher.")
        return made
    raise TypeError(f"expected a sketchcore.gradients.GradientSketcher or a zero-argument factory "
                    f"returning one, got {type(sketcher).__name__}.")


def chunk_batches(source, store: SketchStore, chunk: int, batch_size: int, offset: int = 0):
    """The batches of a row chunk from a sliceable source whose row 0 is store row ``offset``
    (batches start at the chunk's first row: every engine computes a chunk the same way)."""
    start, stop = store.chunk_range(chunk)
    return (b for _r, b in source.batches(start - offset, stop - offset, batch_size))


def write_chunks(store: SketchStore, gs, source, chunks, ids, batch_size: int,
                 on_rows=None, offset: int = 0) -> int:
    """Compute and write the given row chunks of ``store`` from a sliceable source whose row 0 is
    store row ``offset``; ``ids`` are the store's ids (indexed by store row). Each chunk records
    the fingerprint of its inputs. Returns the number of rows written; ``on_rows(n)`` reports
    progress."""
    import numpy as np

    written = 0
    for c in chunks:
        start, stop = store.chunk_range(c)
        parts, fp = [], InputFingerprint()
        for batch in chunk_batches(source, store, c, batch_size, offset):
            fp.update(batch)
            s = np.asarray(gs.sketch_batch(batch), dtype=np.float32)
            parts.append(s)
            if on_rows is not None:
                on_rows(len(s))
        store.write_chunk(c, np.concatenate(parts, axis=0), ids[start:stop], inputs=fp.digest())
        written += stop - start
    return written


def chunk_pieces(store: SketchStore, chunks):
    """``wanted(a, b)`` for ``IterableSource.pieces``: the sub-ranges of rows [a, b) that lie in
    ``chunks``, cut at chunk boundaries."""
    chunks = set(chunks)
    rows = store.chunk_rows

    def wanted(a, b):
        out = []
        r = a
        while r < b:
            c = r // rows
            end = min(b, (c + 1) * rows)
            if c in chunks:
                out.append((r, end))
            r = end
        return out

    return wanted


def write_from_iterable(store: SketchStore, gs, source, missing, ids, on_rows) -> int:
    """Single pass over an iterable source: compute only rows of missing chunks, write each chunk
    once all its rows are in."""
    import numpy as np

    buffers: dict[int, list] = {}
    prints: dict[int, InputFingerprint] = {}
    written = 0
    for row, batch in source.pieces(chunk_pieces(store, missing)):
        c = row // store.chunk_rows
        prints.setdefault(c, InputFingerprint()).update(batch)
        s = np.asarray(gs.sketch_batch(batch), dtype=np.float32)
        buffers.setdefault(c, []).append(s)
        if on_rows is not None:
            on_rows(len(s))
        start, stop = store.chunk_range(c)
        if sum(len(p) for p in buffers[c]) == stop - start:
            store.write_chunk(c, np.concatenate(buffers.pop(c), axis=0), ids[start:stop],
                              inputs=prints.pop(c).digest())
            written += stop - start
    return written
