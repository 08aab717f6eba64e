"""TRAK's features: sketched gradients of a model output function, with out-to-loss weights.

A TRAK store is a sketch store built from the per-example gradients of a model output function
(the margin of the correct class by default, see ``outputs.py``) instead of the loss, which also
holds TRAK's out-to-loss weight ``Q`` of every training example (``train_weights`` in
``store.py``). :func:`build_trak_store` writes the sketches with the ordinary build (resumable,
locked, checksummed; Ray or local), then the weights, row chunk by row chunk: each weight chunk
is computed from the same rows, in the same batches, as its sketches (checked against the input
fingerprint the build recorded), by a forward pass of the same model (checked against the
store's model fingerprint). Scoring (``scores.py``, ``method="trak"``) forms the kernel
``(Phi^T Phi + lam I)^-1`` in sketch space and averages an ensemble of such stores.
"""

from __future__ import annotations

import time

import numpy as np

from sketchcore import StoreMismatchError
from sketchcore.gradients import DEFAULT_SKETCH, GradientSketcher

from .fingerprint import DIGEST_BYTES, InputFingerprint
from .outputs import OutputFunction, resolve_output

__all__ = ["TRAKSketcher", "trak_sketcher", "build_trak_store", "write_out_to_loss",
           "WEIGHT_KIND"]

#: the ``kind`` of the train weights of a TRAK store
WEIGHT_KIND = "out_to_loss"


class TRAKSketcher(GradientSketcher):
    """Per-example sketches of the gradient of a model output function (TRAK's features) and
    the out-to-loss weight of each example.

    ``output``: ``"margin"`` (default: ``log(p / (1 - p))`` of the correct class, ``Q = 1 - p``)
    or an :class:`~sketchcore_tda.outputs.OutputFunction`. The other arguments are those of
    ``GradientSketcher`` (whose ``loss_fn`` becomes the mean of the output function).
    """

    def __init__(self, model, output="margin", sketch=DEFAULT_SKETCH, params=None,
                 layout="flat", mode="explicit", forward=None, **options):
        self.output: OutputFunction = resolve_output(output)
        super().__init__(model, self.output.mean, sketch=sketch, params=params, layout=layout,
                         mode=mode, forward=forward, **options)
        self.model = model
        self.forward_fn = forward

    def weights_record(self) -> dict:
        """What a store built with this sketcher records as its train weights."""
        return {"kind": WEIGHT_KIND, "output": self.output.name}

    def out_to_loss(self, batch) -> np.ndarray:
        """TRAK's ``Q`` of every example of ``batch`` (a forward pass, no gradient): float32
        ``(B,)``."""
        from .forward import model_output, to_numpy

        out, seen = model_output(self.model, batch, self.forward_fn)
        return to_numpy(self.output.out_to_loss(out, seen), np.float32).reshape(-1)

    def output_values(self, batch) -> np.ndarray:
        """The output function ``f`` of every example of ``batch``: float64 ``(B,)``."""
        from .forward import model_output, to_numpy

        out, seen = model_output(self.model, batch, self.forward_fn)
        return to_numpy(self.output.values(out, seen)).reshape(-1)

    def __repr__(self) -> str:
        return f"TRAKSketcher(output={self.output.name!r}, {super().__repr__()})"


def trak_sketcher(task, sketch, *, layout: str = "flat", mode: str = "explicit",
                  output=None) -> TRAKSketcher:
    """A :class:`TRAKSketcher` for a ``TDATask``: its model, parameter selection and forward,
    with ``output`` (default: ``task.info["trak_output"]`` if the task sets one, else the
    margin)."""
    if output is None:
        output = (task.info or {}).get("trak_output", "margin")
    return TRAKSketcher(task.model, output=output, sketch=sketch, params=task.params,
                        layout=layout, mode=mode, forward=task.forward)


def _require_trak_sketcher(sketcher):
    from .build import resolve_sketcher

    gs = resolve_sketcher(sketcher)
    if not isinstance(gs, TRAKSketcher):
        raise TypeError(f"a TRAK store is built with a sketchcore_tda.api.TRAKSketcher (gradients of "
                        f"a model output function), got {type(gs).__name__}; use "
                        "TRAKSketcher(model, output='margin', sketch=...), or build_store for "
                        "loss-gradient sketches.")
    return gs


def _check_existing(path, record: dict) -> None:
    """Refuse to resume a store at ``path`` that holds other features than ``record`` says."""
    from pathlib import Path

    from .store import SketchStore

    if not (Path(path) / "zarr.json").is_file():
        return
    try:
        store = SketchStore.open(path, mode="r")
    except Exception:  # noqa: BLE001 - not a valid store: the build reports it
        return
    held = store.train_weights_record
    if held != record:
        what = ("loss-gradient sketches (no out-to-loss weights)" if held is None else
                f"sketches of the output function {held.get('output')!r}")
        raise StoreMismatchError(
            f"the store at {str(path)!r} holds {what}; a TRAK store of the output function "
            f"{record['output']!r} cannot resume it. Use another path, or overwrite=True "
            "(CLI: --overwrite) to replace it.")


def build_trak_store(path, sketcher, data, *, ids=None, num_examples: int | None = None,
                     batch_size: int = 32, chunk_rows: int | None = None,
                     engine: str = "local", num_workers: int = 2, progress: bool = True,
                     overwrite: bool = False, extra: dict | None = None):
    """Build a TRAK store at ``path``: sketches of the per-example gradients of ``sketcher``'s
    output function, then each example's out-to-loss weight. Resumes like ``build_store``
    (an interrupted build, in the sketches or in the weights, continues where it stopped).

    ``sketcher``: a :class:`TRAKSketcher` (or a zero-argument factory of one). The other
    arguments are ``build_store``'s. Returns its ``BuildSummary`` (time includes the weights).
    """
    from .build import build_store

    t0 = time.perf_counter()
    gs = _require_trak_sketcher(sketcher)
    record = gs.weights_record()
    if not overwrite:
        _check_existing(path, record)
    summary = build_store(path, sketcher if engine == "ray" else gs, data, ids=ids,
                          num_examples=num_examples, batch_size=batch_size,
                          chunk_rows=chunk_rows, engine=engine, num_workers=num_workers,
                          progress=progress, overwrite=overwrite,
                          extra={**(extra or {}), "train_weights": record})
    write_out_to_loss(path, gs, data, num_examples=num_examples, batch_size=batch_size,
                      progress=progress)
    summary.seconds = time.perf_counter() - t0
    summary.store_bytes = _nbytes(path)
    return summary


def _nbytes(path) -> int:
    from .store import SketchStore

    return SketchStore.open(path, mode="r").nbytes_on_disk()


def write_out_to_loss(path, sketcher, data, *, num_examples: int | None = None,
                      batch_size: int = 32, progress: bool = False) -> int:
    """Compute and write the out-to-loss weights of the row chunks of the TRAK store at
    ``path`` that lack them (or whose weights are damaged). Holds the store's writer lock.
    Returns the number of rows written.

    Each chunk's rows are batched as the build batched them and checked against the input
    fingerprint it recorded, and the sketcher's model against the store's: weights never come
    from other rows or another model than the sketches next to them.
    """
    from .lock import WriterLock
    from .query import check_sketcher
    from .sources import as_source
    from .store import SketchStore

    gs = _require_trak_sketcher(sketcher)
    lock = WriterLock(path, label=str(path)).acquire()
    try:
        store = SketchStore.open(path, mode="r+")
        if store.train_weights_record != gs.weights_record():
            raise StoreMismatchError(
                f"the store at {str(path)!r} records train weights {store.train_weights_record!r}"
                f", this sketcher makes {gs.weights_record()!r}; build a TRAK store with it "
                "(build_trak_store) at another path.")
        check_sketcher(store, gs)
        store.require_complete()
        todo = store.missing_train_weight_chunks()
        if not todo:
            return 0
        recorded_bs = store.metadata.get("batch_size")
        bs = int(recorded_bs) if isinstance(recorded_bs, int) and recorded_bs > 0 else batch_size
        source = as_source(data, num_examples)
        if source.num_examples != store.num_examples:
            raise StoreMismatchError(
                f"the data holds {source.num_examples} examples, the store at {str(path)!r} "
                f"{store.num_examples}; pass the training set the store was built from.")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(b - a for a, b in map(store.chunk_range, todo)), unit="ex",
                       desc="out-to-loss weights", dynamic_ncols=True)
        try:
            written = 0
            for c, batches in _chunk_batches(store, source, todo, bs):
                fp, parts = InputFingerprint(), []
                for batch in batches:
                    fp.update(batch)
                    parts.append(gs.out_to_loss(batch))
                    if bar is not None:
                        bar.update(len(parts[-1]))
                if fp.digest()[:DIGEST_BYTES] != store.chunk_inputs(c)[:DIGEST_BYTES]:
                    a, b = store.chunk_range(c)
                    raise StoreMismatchError(
                        f"chunk {c} (rows {a}-{b - 1}) of the store at {str(path)!r} was built "
                        "from other input rows than the data given now; pass the training set "
                        "the store was built from.")
                store.write_train_weights(c, np.concatenate(parts))
                written += sum(len(p) for p in parts)
        finally:
            if bar is not None:
                bar.close()
        return written
    finally:
        lock.release()


def _chunk_batches(store, source, chunks, batch_size: int):
    """``(chunk, batches)`` for the given row chunks: slices of an array source batched from
    each chunk's first row (as the build does), or the pieces of an iterable source."""
    if source.sliceable:
        for c in chunks:
            a, b = store.chunk_range(c)
            yield c, [batch for _r, batch in source.batches(a, b, batch_size)]
        return
    wanted = set(chunks)
    rows = store.chunk_rows

    def keep(a, b):
        out, r = [], a
        while r < b:
            c = r // rows
            end = min(b, (c + 1) * rows)
            if c in wanted:
                out.append((r, end))
            r = end
        return out

    current, pieces = None, []
    for row, piece in source.pieces(keep):
        c = row // rows
        if current is not None and c != current:
            yield current, pieces
            pieces = []
        current = c
        pieces.append(piece)
    if current is not None:
        yield current, pieces
