"""Build a sketch store: per-example gradient sketches of a training set, chunk by chunk.

The single-process path (``engine="local"``, the default) needs nothing started. A build that was
interrupted resumes: only the row chunks not marked complete are computed and written. With
``engine="ray"`` the missing chunks are split into shards that run as Ray tasks (see
``ray_engine.py``); both write chunks with ``chunk_writer.py``, so they write the same store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sketchcore import StoreMismatchError

from .chunk_writer import (
    chunk_batches,
    chunk_pieces,
    resolve_sketcher,
    write_chunks,
    write_from_iterable,
)
from .fingerprint import DIGEST_BYTES, InputFingerprint
from .sources import as_source
from .store import SketchStore, default_chunk_rows

__all__ = ["build_store", "BuildSummary", "sketcher_identity", "resolve_sketcher",
           "write_chunks", "chunks_to_write", "ENGINES"]

ENGINES = ("local", "ray")


def sketcher_identity(gs) -> dict:
    """The fields that identify a sketcher's map (stored, and checked when a store is reopened
    or queried): the sketch (algorithm, in/out sizes, seed, resolved options; per block in the
    blocks layout), N, D, dtype, layout, mode and a digest of the selected parameter names."""
    import hashlib

    plan = getattr(gs, "plan", None)
    if plan is not None:
        sketch = _plan_sketch(plan)
    else:  # a duck-typed sketcher: its ``sketch`` attribute (a sketchcore.Sketch or None)
        op = getattr(gs, "sketch", None)
        sketch = op.describe() if hasattr(op, "describe") else {"algo": "none"}
    names = list(getattr(gs, "param_names", None) or gs.fingerprint().get("names", []))
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    return {
        "sketch": sketch,
        "num_params": int(gs.num_params),
        "out_dim": int(gs.out_dim),
        "dtype": "float32",
        "layout": getattr(gs, "layout", "flat"),
        "mode": getattr(gs, "mode", "explicit"),
        "params": f"{len(names)} tensors, names sha256 {digest}",
    }


def _plan_sketch(plan) -> dict:
    """Description of a ``SketchPlan``'s map: the flat sketch's own description, or the common
    spec plus each block's map in the blocks and factored layouts (a factored layout's Kronecker
    block describes both factors, each with its own parameter digest)."""
    if plan.identity:
        return {"algo": "none"}
    if plan.layout == "flat":
        return plan.blocks[0].sketch.describe()
    spec = dict(plan.spec)
    return {
        "algo": spec.pop("algo"), "out_dim": spec.pop("out_dim"), "seed": spec.pop("seed"),
        "options": spec,
        "blocks": [{"name": b.name, "size": b.size, **b.sketch.describe()} for b in plan.blocks],
    }


@dataclass
class BuildSummary:
    """What a build did: sizes, how many rows it computed now, how long it took."""

    path: str
    num_examples: int
    out_dim: int
    num_chunks: int
    chunks_written: int
    examples_written: int
    store_bytes: int
    seconds: float
    engine: str

    @property
    def examples_per_second(self) -> float:
        return self.examples_written / self.seconds if self.seconds > 0 else float("nan")

    def format(self) -> str:
        resumed = self.num_examples - self.examples_written
        lines = [
            f"store      {self.path}",
            f"examples   {self.num_examples} ({self.examples_written} sketched now"
            + (f", {resumed} already there)" if resumed else ")"),
            f"D          {self.out_dim}",
            f"chunks     {self.num_chunks} ({self.chunks_written} written now)",
            f"size       {self.store_bytes / 2**20:.2f} MiB",
            f"time       {self.seconds:.2f} s ({self.examples_per_second:.1f} examples/s, "
            f"engine {self.engine})",
        ]
        return "\n".join(lines)


def chunks_to_write(store: SketchStore, source, ids, batch_size: int, *, report=None) -> list[int]:
    """The row chunks a (resumed) build must compute: those never completed and those damaged.

    Every chunk already written is checked against what this build would write: the same ids and
    the same inputs, batched the same way (``fingerprint.py``); otherwise the build is refused with
    :class:`sketchcore.StoreMismatchError` naming the chunks, since the store would mix two
    builds. ``report(line)`` hears about damaged chunks that will be rewritten.
    """
    missing = store.missing_chunks()
    done = [c for c in range(store.num_chunks) if c not in set(missing)]
    if not done:
        return missing
    damaged = {p.chunk: p for p in store.verify(done)}
    for p in damaged.values():
        if report is not None:
            report(f"rewriting {p.format()}")
    done = [c for c in done if c not in damaged]
    if source.sliceable:
        prints = {}
        for c in done:
            fp = InputFingerprint()
            for batch in chunk_batches(source, store, c, batch_size):
                fp.update(batch)
            prints[c] = fp.digest()
    else:  # one pass over the iterable, fingerprinting only the written chunks
        acc: dict[int, InputFingerprint] = {}
        for row, batch in source.pieces(chunk_pieces(store, done)):
            acc.setdefault(row // store.chunk_rows, InputFingerprint()).update(batch)
        prints = {c: fp.digest() for c, fp in acc.items()}
    _refuse_other_inputs(store, done, prints, ids)
    return sorted(set(missing) | set(damaged))


def _refuse_other_inputs(store: SketchStore, done, prints: dict, ids) -> None:
    import numpy as np

    half = DIGEST_BYTES
    bad_ids, bad_data, bad_batches = [], [], []
    for c in done:
        start, stop = store.chunk_range(c)
        stored_ids, _s = store.read_chunk(c)
        recorded = store.chunk_inputs(c)
        if not np.array_equal(stored_ids, ids[start:stop]):
            bad_ids.append(c)
        elif recorded[:half] != prints[c][:half]:
            bad_data.append(c)
        elif recorded[half:] != prints[c][half:]:
            bad_batches.append(c)
    if not (bad_ids or bad_data or bad_batches):
        return

    def rows(chunks):
        n = sum(b - a for a, b in map(store.chunk_range, chunks))
        first = ", ".join(f"{c} (rows {store.chunk_range(c)[0]}-{store.chunk_range(c)[1] - 1})"
                          for c in chunks[:3])
        return f"{n} rows in {len(chunks)} chunks, first: {first}{' ...' if len(chunks) > 3 else ''}"

    lines = []
    if bad_ids:
        lines.append(f"other example ids: {rows(bad_ids)}")
    if bad_data:
        lines.append(f"other input data: {rows(bad_data)}")
    if bad_batches:
        was = store.metadata.get("batch_size")
        lines.append(f"the same data in other batches (the store was built with batch size "
                     f"{was if was is not None else 'of its data loader'}): {rows(bad_batches)}")
    raise StoreMismatchError(
        f"the store at {str(store.path)!r} was built from other inputs than this build's, so "
        "resuming would mix two builds:\n  " + "\n  ".join(lines)
        + "\nResume with the same data, ids and batch size; or use another path, or "
        "overwrite=True (CLI: --overwrite) to replace it."
    )


def build_store(path, sketcher, data, *, ids=None, num_examples: int | None = None,
                batch_size: int = 32, chunk_rows: int | None = None, engine: str = "local",
                num_workers: int = 2, progress: bool = True, overwrite: bool = False,
                extra: dict | None = None) -> BuildSummary:
    """Sketch every training example's loss gradient into a store at ``path``; resume if a
    matching incomplete store is there.

    ``sketcher``: a ``sketchcore.gradients.GradientSketcher`` (or a zero-argument factory of
    one; Ray workers call it to build their own). ``data``: arrays (tuple/list/dict of numpy or
    torch arrays, sliced into batches) or an iterable of batches (then ``num_examples``).
    ``ids``: int64 example ids (default ``0..n-1``). ``engine``: ``"local"`` or ``"ray"``
    (shards of chunks as Ray tasks, ``num_workers`` at a time; needs array data).

    The build holds the store's writer lock (a second writer is refused, naming this one). A
    resumed build checks that every chunk already written came from the same ids, data and
    batching, rewrites damaged chunks, and computes only what is missing.
    """
    import numpy as np

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}.")
    batch_size = _batch_size(batch_size)
    t0 = time.perf_counter()
    gs = resolve_sketcher(sketcher)
    source = as_source(data, num_examples)
    n = source.num_examples
    if n < 1:
        raise ValueError("the training data holds no examples.")
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"ids must have shape ({n},) (one per example), got {ids.shape}.")
    if chunk_rows is None:
        chunk_rows = default_chunk_rows(int(gs.out_dim), batch_size, n)
    record = {"batch_size": batch_size if source.sliceable else None, **(extra or {})}
    store = SketchStore.create(path, sketcher_identity(gs), num_examples=n,
                               chunk_rows=chunk_rows, model=gs.fingerprint(), extra=record,
                               overwrite=overwrite)
    try:
        missing = chunks_to_write(store, source, ids, batch_size,
                                  report=_report if progress else None)
        done_rows = n - sum(b - a for a, b in map(store.chunk_range, missing))
        bar = _progress(progress, n, done_rows, store)
        try:
            if not missing:
                written = 0
            elif engine == "ray":
                if not source.sliceable:
                    raise ValueError("engine='ray' needs the data as arrays (a tuple/list/dict of "
                                     "numpy or torch arrays), so that each task can take its own "
                                     "rows.")
                from .ray_engine import build_with_ray

                written = build_with_ray(store, sketcher, source, missing, ids, batch_size,
                                         num_workers, bar)
            elif source.sliceable:
                written = write_chunks(store, gs, source, missing, ids, batch_size,
                                       on_rows=bar.update if bar else None)
            else:
                written = write_from_iterable(store, gs, source, missing, ids,
                                               on_rows=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
        store.require_complete()
    finally:
        store.close()
    return BuildSummary(
        path=str(store.path), num_examples=n, out_dim=store.out_dim,
        num_chunks=store.num_chunks, chunks_written=len(missing), examples_written=written,
        store_bytes=store.nbytes_on_disk(), seconds=time.perf_counter() - t0, engine=engine,
    )


def _batch_size(value) -> int:
    import operator

    try:
        v = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        v = None
    if v is None or v < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {value!r}.")
    return v


def _report(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def _progress(enabled: bool, total: int, initial: int, store):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="ex", desc=f"sketching (D={store.out_dim})",
                dynamic_ncols=True, smoothing=0.1)
