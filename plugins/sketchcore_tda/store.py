"""``SketchStore``: per-example gradient sketches of a training set in a chunked zarr (v3) array.

Layout of a store directory (a zarr group)::

    zarr.json      group attributes: {"sketchcore_tda": <metadata record>}
    sketches/      float32 (num_examples, D), chunks of ``chunk_rows`` rows, uncompressed
    ids/           int64 (num_examples,), same row chunks
    checksums/     uint8 (num_chunks, 64): sha256 of a row chunk's sketches, then of its ids
    inputs/        uint8 (num_chunks, 64): what the chunk was built from (``fingerprint.py``)
    complete/      int32 (num_chunks,), one zarr chunk per row chunk: rows written, 0 = absent
    writer.lock    the writer lock (``lock.py``)

A store whose metadata has a ``train_weights`` record (TRAK's out-to-loss term, see ``trak.py``)
also holds ``train_weights/`` (float32 (num_examples,), the same row chunks) and
``train_weight_checksums/`` (uint8 (num_chunks, 32): sha256 of a row chunk's weights, all zeros
while absent). Weights are written per row chunk after its sketches (a weight chunk is written,
then its checksum, which is its completion marker), so a store stays a valid sketch store while
its weights are missing, and a missing or damaged weight chunk is reported, never served.

A row chunk is written as: its sketches, its ids, its checksums, its input fingerprint, then its
``complete`` entry. zarr's local store replaces each chunk file atomically (write to a temporary
name, then rename), so after a crash a row chunk is either marked complete with all its rows, or
counts as absent and is written again (a whole chunk, so no row is written twice). Every read
checks the chunk against its checksums: a deleted, truncated or altered chunk is reported
(:class:`StoreDamagedError`) and never served, and a resumed build rewrites it. Writers of
different row chunks touch different files, which is what lets Ray tasks fill one store side by
side under the lock of the build that started them.

A store is data from whoever made it: its metadata is validated when it is opened (types, sizes,
the exact array layout and codecs) and nothing in it is ever imported or run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from sketchcore import StoreMismatchError, __version__

from .errors import StoreDamagedError, StoreFormatError, StoreIncompleteError
from .fingerprint import DIGEST_BYTES
from .lock import LOCK_NAME, WriterLock, describe_holder

__all__ = [
    "SketchStore",
    "ChunkProblem",
    "STORE_FORMAT",
    "IDENTITY_KEYS",
    "describe_differences",
    "default_chunk_rows",
]

STORE_FORMAT = "sketchcore-tda-store/2"
_OLD_FORMATS = ("sketchcore-tda-store/1",)
_ATTR = "sketchcore_tda"
# metadata fields that identify the sketch (a store opened with other values is refused)
IDENTITY_KEYS = ("sketch", "num_params", "out_dim", "dtype", "layout", "mode", "params")
_CHUNK_BYTES = 8 << 20
_TMP_TAGS = (".creating-", ".replaced-")
_UNLOCKED_TMP_AGE = 600  # seconds after which a hidden folder that never got its lock is junk
_WEIGHTS, _WEIGHT_SUMS = "train_weights", "train_weight_checksums"


def _array_specs(meta: dict) -> dict:
    """name -> (shape, chunk shape, zarr dtype, fill value) of every array of a store."""
    n, d, rows, chunks = (meta["num_examples"], meta["out_dim"], meta["chunk_rows"],
                          meta["num_chunks"])
    specs = {
        "sketches": ((n, d), (rows, d), "float32", 0.0),
        "ids": ((n,), (rows,), "int64", -1),
        "checksums": ((chunks, 2 * DIGEST_BYTES), (1, 2 * DIGEST_BYTES), "uint8", 0),
        "inputs": ((chunks, 2 * DIGEST_BYTES), (1, 2 * DIGEST_BYTES), "uint8", 0),
        "complete": ((chunks,), (1,), "int32", 0),
    }
    if meta.get("train_weights") is not None:  # TRAK stores: per-example out-to-loss weights
        specs[_WEIGHTS] = ((n,), (rows,), "float32", 0.0)
        specs[_WEIGHT_SUMS] = ((chunks, DIGEST_BYTES), (1, DIGEST_BYTES), "uint8", 0)
    return specs


def default_chunk_rows(out_dim: int, batch_size: int, num_examples: int) -> int:
    """Rows per chunk: about 8 MiB of float32 sketches, a multiple of ``batch_size``."""
    rows = max(1, _CHUNK_BYTES // (4 * out_dim))
    rows = max(batch_size, rows // batch_size * batch_size)
    return max(1, min(rows, num_examples))


def describe_differences(stored: dict, wanted: dict, keys) -> list[str]:
    """Human-readable ``field: stored X, requested Y`` lines for the keys whose values differ."""
    out = []
    for key in keys:
        a, b = stored.get(key), wanted.get(key)
        if _canon(a) == _canon(b):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if _canon(a.get(sub)) != _canon(b.get(sub)):
                    out.append(f"{key}.{sub}: store has {_short(a.get(sub))}, "
                               f"requested {_short(b.get(sub))}")
        else:
            out.append(f"{key}: store has {_short(a)}, requested {_short(b)}")
    return out


def _short(v, limit: int = 160) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more chars)"


def _canon(v):
    """JSON round trip, so tuples and lists (and int/float keys) compare as stored."""
    return json.loads(json.dumps(v, sort_keys=True, default=str))


@dataclass(frozen=True)
class ChunkProblem:
    """A row chunk that cannot be served: ``kind`` is ``missing`` (never completed),
    ``damaged`` (bytes differ from its checksum) or ``unreadable`` (its files cannot be read)."""

    chunk: int
    start: int
    stop: int
    kind: str
    detail: str

    def format(self) -> str:
        return f"chunk {self.chunk} (rows {self.start}-{self.stop - 1}): {self.kind}: {self.detail}"


class SketchStore:
    """A zarr store of per-example sketches with ids, checksums, completion markers and a
    metadata record.

    Use :meth:`create` (new, or reopen a matching one to resume; takes the writer lock) or
    :meth:`open` (existing). ``metadata`` holds: format, sketch (algo, in_dim, out_dim, seed,
    options, parameter digest), num_params (N), out_dim (D), dtype, layout, mode, params, model
    (names, shapes, hash), num_examples, chunk_rows, library_version, and anything passed as
    ``extra`` (e.g. how the model was built: kept for provenance, never run).
    """

    def __init__(self, path, group, metadata: dict, lock: WriterLock | None = None) -> None:
        self.path = Path(path)
        self._group = group
        self.metadata = metadata
        self._lock = lock
        self._sketches = group["sketches"]
        self._ids = group["ids"]
        self._checksums = group["checksums"]
        self._inputs = group["inputs"]
        self._complete = group["complete"]

    # ---- creating and opening -----------------------------------------------------------------
    @classmethod
    def create(cls, path, identity: dict, *, num_examples: int, chunk_rows: int,
               model: dict | None = None, extra: dict | None = None,
               overwrite: bool = False) -> SketchStore:
        """Create a store at ``path``, or reopen the one there if it holds the same sketch of the
        same model with the same size (so an interrupted build resumes). The returned store holds
        the writer lock until :meth:`close`.

        ``identity`` has the :data:`IDENTITY_KEYS`; ``model`` is the sketcher's fingerprint.
        A store with other values is refused with :class:`sketchcore.StoreMismatchError`, unless
        ``overwrite=True`` (then it is replaced). Creation is atomic: the store is assembled in a
        hidden sibling folder and renamed into place, so a crash leaves nothing half made.
        """
        num_examples = _positive("num_examples", num_examples)
        chunk_rows = _positive("chunk_rows", chunk_rows)
        missing = [k for k in IDENTITY_KEYS if k not in identity]
        if missing:
            raise ValueError(f"identity record lacks {missing}; it needs all of {IDENTITY_KEYS}.")
        path = Path(path)
        meta = _canon({
            "format": STORE_FORMAT,
            **{k: identity[k] for k in IDENTITY_KEYS},
            "model": model or {},
            "num_examples": num_examples,
            "chunk_rows": chunk_rows,
            "num_chunks": math.ceil(num_examples / chunk_rows),
            "library_version": __version__,
            **(extra or {}),
        })
        _remove_dead_siblings(path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{str(path)!r} is a file, not a sketch store; choose a folder.")
        if path.is_dir() and any(path.iterdir()):
            if not (path / "zarr.json").is_file():
                raise FileExistsError(
                    f"{str(path)!r} exists and is not a sketch store; refusing to write into it "
                    "(that would delete its files). Choose a new or empty folder."
                )
            if overwrite:
                return cls._replace(path, meta)
            return cls._resume(path, meta, check_model=bool(model))
        try:
            return cls._create_new(path, meta)
        except FileExistsError:  # another process created it first: resume it (or be refused)
            if overwrite:
                return cls._replace(path, meta)
            return cls._resume(path, meta, check_model=bool(model))

    @classmethod
    def _resume(cls, path: Path, meta: dict, *, check_model: bool) -> SketchStore:
        lock = WriterLock(path, label=str(path)).acquire()
        try:
            if lock.took_over:
                warnings.warn(f"took over the writer lock of {str(path)!r} from a writer that "
                              f"stopped without releasing it ({describe_holder(lock.took_over)})",
                              RuntimeWarning, stacklevel=3)
            store = cls.open(path, _lock=lock)
            wanted = dict(meta)
            problems = describe_differences(store.metadata, wanted, IDENTITY_KEYS)
            problems += describe_differences(store.metadata, wanted, ("num_examples", "chunk_rows"))
            if check_model:
                problems += describe_differences(store.metadata, wanted, ("model",))
            if problems:
                raise StoreMismatchError(
                    f"the store at {str(path)!r} holds a different build; it cannot be resumed:\n  "
                    + "\n  ".join(problems)
                    + "\nUse another path, or overwrite=True (CLI: --overwrite) to replace it."
                )
            store._remove_partial_files()
            return store
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _create_new(cls, path: Path, meta: dict) -> SketchStore:
        """Assemble the store in a hidden sibling, lock it, and rename it to ``path``; raises
        FileExistsError if ``path`` became a non-empty folder meanwhile."""
        import zarr

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.creating-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        lock = WriterLock(tmp, label=str(path))
        try:
            group = zarr.open_group(str(tmp), mode="w", zarr_format=3)  # clears the folder
            lock.acquire()
            for name, (shape, chunks, dtype, fill) in _array_specs(meta).items():
                group.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                                   compressors=None, fill_value=fill)
            group.attrs[_ATTR] = meta
            try:
                os.rename(tmp, path)  # atomic; replaces an empty folder, fails on a full one
            except OSError as err:
                if path.is_dir() and any(path.iterdir()):
                    raise FileExistsError(f"{str(path)!r} was created by another process") from err
                raise
        except BaseException:
            lock.release()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        lock.label = str(path)
        return cls.open(path, _lock=lock)

    @classmethod
    def _replace(cls, path: Path, meta: dict) -> SketchStore:
        """Replace the store at ``path`` (only a sketch store, or the remains of one that was
        never finished) under its writer lock; the old one is removed only once the new one is
        in place."""
        if not _is_replaceable(path):
            raise StoreMismatchError(
                f"{str(path)!r} is a zarr group but not a sketch store; refusing to replace it. "
                "Choose another path."
            )
        old_lock = WriterLock(path, label=str(path)).acquire()
        try:
            trash = path.parent / f".{path.name}.replaced-{uuid.uuid4().hex[:12]}"
            os.rename(path, trash)
            try:
                store = cls._create_new(path, meta)
            except BaseException:
                if not path.exists():
                    os.rename(trash, path)  # put the old store back
                raise
            shutil.rmtree(trash, ignore_errors=True)
            return store
        finally:
            old_lock.release()

    @classmethod
    def open(cls, path, *, expect: dict | None = None, model: dict | None = None,
             mode: str = "r+", _lock: WriterLock | None = None) -> SketchStore:
        """Open an existing store; with ``expect`` (identity fields) or ``model`` (a fingerprint),
        refuse it with :class:`sketchcore.StoreMismatchError` naming every field that differs.

        The metadata and the layout of every array are validated first (a store is data from
        someone else); :class:`StoreFormatError` says what is wrong. Opening does not take the
        writer lock: :meth:`create` does, for builds.
        """
        import zarr

        path = Path(path)
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}.")
        if not (path / "zarr.json").is_file():
            raise FileNotFoundError(
                f"no sketch store at {str(path)!r} (no zarr.json); build one first "
                "(sketchcore tda build ... --store PATH)."
            )
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
            raw = group.attrs.get(_ATTR)
        except Exception as err:  # noqa: BLE001 - any parse failure means: not a store
            raise StoreFormatError(f"{str(path)!r} is not a readable sketch store: "
                                   f"{type(err).__name__}: {_short(str(err))}") from None
        meta = _validate_metadata(path, raw)
        _validate_arrays(path, group, meta)
        store = cls(path, group, meta, _lock)
        if expect is not None:
            store.check_sketch(expect)
        if model is not None:
            store.check_model(model)
        return store

    def close(self) -> None:
        """Release the writer lock, if this store holds it (reading needs no lock)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> SketchStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def lock(self) -> WriterLock | None:
        """The writer lock this store holds (from :meth:`create`), else None."""
        return self._lock

    def check_sketch(self, identity: dict) -> None:
        """Refuse (StoreMismatchError) if ``identity`` describes another sketch than the store's."""
        problems = describe_differences(self.metadata, _canon(identity),
                                        [k for k in IDENTITY_KEYS if k in identity])
        if problems:
            raise StoreMismatchError(
                f"the store at {str(self.path)!r} was built with a different sketch:\n  "
                + "\n  ".join(problems)
                + "\nQuery it with the sketch it was built with (see `sketchcore tda info "
                f"--store {self.path}`), or build a new store."
            )

    def check_model(self, fingerprint: dict) -> None:
        """Refuse (StoreMismatchError) if ``fingerprint`` is not the model the store was built
        from (parameter names, shapes or value hash differ)."""
        stored = self.metadata.get("model") or {}
        fp = _canon(fingerprint)
        problems = []
        if stored.get("names") != fp.get("names"):
            problems.append(_list_diff("parameter names", stored.get("names"), fp.get("names")))
        if stored.get("shapes") != fp.get("shapes"):
            problems.append(_list_diff("parameter shapes", stored.get("shapes"), fp.get("shapes")))
        if not problems and stored.get("hash") != fp.get("hash"):
            problems.append(
                f"parameter values differ (hash: store has {str(stored.get('hash'))[:16]}..., "
                f"model has {str(fp.get('hash'))[:16]}...): another checkpoint or fine-tuning state"
            )
        if problems:
            raise StoreMismatchError(
                f"the store at {str(self.path)!r} was built from a different model:\n  "
                + "\n  ".join(problems)
                + "\nQuery it with the model (checkpoint) it was built from, or build a new store."
            )

    # ---- sizes ------------------------------------------------------------------------------
    @property
    def num_examples(self) -> int:
        return int(self.metadata["num_examples"])

    @property
    def out_dim(self) -> int:
        return int(self.metadata["out_dim"])

    @property
    def chunk_rows(self) -> int:
        return int(self.metadata["chunk_rows"])

    @property
    def num_chunks(self) -> int:
        return int(self.metadata["num_chunks"])

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of row chunk ``chunk``."""
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.num_examples)

    # ---- completion ---------------------------------------------------------------------------
    def completed_chunks(self):
        """Boolean numpy array (num_chunks,): which row chunks are marked fully written (the
        markers only; :meth:`verify` also checks their bytes)."""
        import numpy as np

        try:
            done = np.asarray(self._complete[:])
        except Exception:  # noqa: BLE001 - unreadable markers: count each one separately
            done = np.array([self._marker(c) for c in range(self.num_chunks)])
        expected = np.array([b - a for a, b in map(self.chunk_range, range(self.num_chunks))])
        return done == expected

    def _marker(self, chunk: int) -> int:
        try:
            return int(self._complete[chunk])
        except Exception:  # noqa: BLE001 - a damaged marker means: not complete
            return 0

    def missing_chunks(self) -> list[int]:
        """Row chunks not marked complete (never written, or interrupted)."""
        return [int(c) for c in (~self.completed_chunks()).nonzero()[0]]

    def is_complete(self) -> bool:
        return bool(self.completed_chunks().all())

    def require_complete(self) -> None:
        missing = self.missing_chunks()
        if missing:
            raise StoreIncompleteError(
                f"the store at {str(self.path)!r} is incomplete: {len(missing)} of "
                f"{self.num_chunks} chunks are missing (first: {missing[0]}); finish it by running "
                "the same build again (it resumes)."
            )

    def verify(self, chunks=None, *, progress=None) -> list[ChunkProblem]:
        """Check every row chunk (or ``chunks``): marked complete, readable, and equal to its
        checksums. Returns the problems found (empty: the store is whole). Reads all the data."""
        out = []
        for c in range(self.num_chunks) if chunks is None else chunks:
            start, stop = self.chunk_range(c)
            if self._marker(c) != stop - start:
                out.append(ChunkProblem(c, start, stop, "missing", "never completed"))
            else:
                try:
                    self._read_verified(c, sketches=True)
                except StoreDamagedError as err:
                    kind = "unreadable" if "cannot be read" in str(err) else "damaged"
                    out.append(ChunkProblem(c, start, stop, kind, err.detail))
            if progress is not None:
                progress(stop - start)
        return out

    # ---- writing ------------------------------------------------------------------------------
    def write_chunk(self, chunk: int, sketches, ids, inputs: bytes | None = None) -> None:
        """Write one whole row chunk: sketches (rows, D), ids (rows,), their checksums, the
        fingerprint of the inputs it was built from (``fingerprint.InputFingerprint``), then mark
        it complete."""
        import numpy as np

        if not 0 <= chunk < self.num_chunks:
            raise ValueError(f"chunk must be in [0, {self.num_chunks}), got {chunk!r}.")
        start, stop = self.chunk_range(chunk)
        sketches = np.ascontiguousarray(sketches, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if sketches.shape != (stop - start, self.out_dim) or ids.shape != (stop - start,):
            raise ValueError(
                f"chunk {chunk} holds rows [{start}, {stop}): needs sketches of shape "
                f"{(stop - start, self.out_dim)} and ids of shape {(stop - start,)}, got "
                f"{sketches.shape} and {ids.shape}."
            )
        inputs = bytes(2 * DIGEST_BYTES) if inputs is None else bytes(inputs)
        if len(inputs) != 2 * DIGEST_BYTES:
            raise ValueError(f"inputs must be {2 * DIGEST_BYTES} bytes, got {len(inputs)}.")
        self._complete[chunk] = 0  # a rewrite is incomplete until its marker is set again
        self._sketches[start:stop] = sketches
        self._ids[start:stop] = ids
        self._checksums[chunk] = np.frombuffer(_digest(sketches) + _digest(ids), dtype=np.uint8)
        self._inputs[chunk] = np.frombuffer(inputs, dtype=np.uint8)
        self._complete[chunk] = stop - start

    def _remove_partial_files(self) -> None:
        """Delete temporary files a killed writer left behind (never complete chunks)."""
        for root, _dirs, files in os.walk(self.path):
            for name in files:
                if name.endswith(".partial"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(root, name))

    # ---- reading ------------------------------------------------------------------------------
    def _read_verified(self, chunk: int, *, sketches: bool = True):
        """``(ids, sketches or None)`` of a row chunk after checking them against their
        checksums; raises StoreDamagedError(message, detail) if they differ or cannot be read."""
        import numpy as np

        start, stop = self.chunk_range(chunk)
        where = f"chunk {chunk} (rows {start}-{stop - 1})"

        def damaged(detail: str):
            return StoreDamagedError(
                f"the store at {str(self.path)!r} is damaged: {where} {detail}. It is not used. "
                f"List every damaged chunk with `sketchcore tda verify --store {self.path}`; "
                "running the same build again rewrites them.", detail)

        try:
            stored = np.asarray(self._checksums[chunk], dtype=np.uint8).tobytes()
            ids = np.asarray(self._ids[start:stop], dtype=np.int64)
            s = np.asarray(self._sketches[start:stop], dtype=np.float32) if sketches else None
        except Exception as err:  # noqa: BLE001 - truncated or garbled chunk files
            raise damaged(f"cannot be read ({type(err).__name__}: {_short(str(err), 200)})") \
                from None
        if _digest(ids) != stored[DIGEST_BYTES:]:
            raise damaged("has ids that differ from their checksum")
        if s is not None and _digest(s) != stored[:DIGEST_BYTES]:
            raise damaged("has sketches that differ from their checksum")
        return ids, s

    def read_chunk(self, chunk: int):
        """``(ids, sketches)`` of one complete row chunk, checked against its checksums."""
        start, stop = self.chunk_range(chunk)
        if self._marker(chunk) != stop - start:
            raise StoreIncompleteError(
                f"chunk {chunk} (rows {start}-{stop - 1}) of the store at {str(self.path)!r} is "
                "not written yet; finish the store by running the same build again.")
        return self._read_verified(chunk)

    def read_rows(self, start: int, stop: int):
        """``(ids, sketches)`` of rows ``[start, stop)``, from checked chunks."""
        import numpy as np

        if not 0 <= start <= stop <= self.num_examples:
            raise ValueError(f"rows [{start}, {stop}) are outside [0, {self.num_examples}).")
        if start == stop:
            return np.zeros(0, np.int64), np.zeros((0, self.out_dim), np.float32)
        ids, sketches = [], []
        first, last = start // self.chunk_rows, (stop - 1) // self.chunk_rows
        for c in range(first, last + 1):
            a, _b = self.chunk_range(c)
            i, s = self.read_chunk(c)
            lo, hi = max(start - a, 0), min(stop - a, len(i))
            ids.append(i[lo:hi])
            sketches.append(s[lo:hi])
        return np.concatenate(ids), np.concatenate(sketches, axis=0)

    def iter_chunks(self):
        """Yield ``(ids, sketches)`` per row chunk, in order; the store must be complete."""
        self.require_complete()
        for c in range(self.num_chunks):
            yield self.read_chunk(c)

    def ids(self):
        """All example ids (num_examples,), each chunk checked against its checksum."""
        import numpy as np

        self.require_complete()
        return np.concatenate([self._read_verified(c, sketches=False)[0]
                               for c in range(self.num_chunks)])

    def sketches(self):
        """All sketches as one numpy array (num_examples, D): for stores that fit in memory."""
        import numpy as np

        return np.concatenate([s for _i, s in self.iter_chunks()], axis=0)

    def chunk_inputs(self, chunk: int) -> bytes:
        """The recorded input fingerprint of a row chunk (zeros if none was recorded)."""
        import numpy as np

        return np.asarray(self._inputs[chunk], dtype=np.uint8).tobytes()

    # ---- per-example train weights (TRAK's out-to-loss term) -------------------------------------
    @property
    def train_weights_record(self) -> dict | None:
        """What the store's per-example train weights are (``{"kind": "out_to_loss", "output":
        "margin"}`` for a TRAK store), or None for a store without weights."""
        return self.metadata.get("train_weights")

    def _weight_arrays(self):
        if self.train_weights_record is None:
            raise StoreMismatchError(
                f"the store at {str(self.path)!r} holds no per-example train weights (it was "
                "built from loss gradients, not as a TRAK store); build a TRAK store "
                "(sketchcore_tda.trak.build_trak_store, CLI: sketchcore tda build --trak).")
        return self._group[_WEIGHTS], self._group[_WEIGHT_SUMS]

    def write_train_weights(self, chunk: int, values) -> None:
        """Write the train weights (rows,) of one row chunk: its checksum is zeroed, the weights
        written, then the checksum (the chunk's weights count as present only once it is)."""
        import numpy as np

        weights, sums = self._weight_arrays()
        if not 0 <= chunk < self.num_chunks:
            raise ValueError(f"chunk must be in [0, {self.num_chunks}), got {chunk!r}.")
        start, stop = self.chunk_range(chunk)
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.shape != (stop - start,):
            raise ValueError(f"chunk {chunk} holds rows [{start}, {stop}): needs weights of shape "
                             f"{(stop - start,)}, got {values.shape}.")
        if not np.isfinite(values).all():
            raise ValueError(f"the train weights of chunk {chunk} are not all finite.")
        sums[chunk] = 0
        weights[start:stop] = values
        sums[chunk] = np.frombuffer(_digest(values), dtype=np.uint8)

    def _weight_chunk(self, chunk: int):
        """``(weights or None if absent, problem or None)`` of one row chunk, checked."""
        import numpy as np

        weights, sums = self._weight_arrays()
        start, stop = self.chunk_range(chunk)
        try:
            stored = np.asarray(sums[chunk], dtype=np.uint8).tobytes()
            if stored == bytes(DIGEST_BYTES):
                return None, ChunkProblem(chunk, start, stop, "missing",
                                          "train weights never written")
            w = np.asarray(weights[start:stop], dtype=np.float32)
        except Exception as err:  # noqa: BLE001 - truncated or garbled chunk files
            return None, ChunkProblem(chunk, start, stop, "unreadable",
                                      f"train weights cannot be read ({type(err).__name__}: "
                                      f"{_short(str(err), 200)})")
        if _digest(w) != stored:
            return None, ChunkProblem(chunk, start, stop, "damaged",
                                      "has train weights that differ from their checksum")
        return w, None

    def missing_train_weight_chunks(self) -> list[int]:
        """Row chunks whose train weights are absent or do not match their checksum."""
        return [p.chunk for p in self.verify_train_weights()]

    def verify_train_weights(self, chunks=None) -> list[ChunkProblem]:
        """Check the train weights of every row chunk (or ``chunks``) against their checksums."""
        out = []
        for c in range(self.num_chunks) if chunks is None else chunks:
            _w, problem = self._weight_chunk(c)
            if problem is not None:
                out.append(problem)
        return out

    def train_weights(self):
        """All per-example train weights (num_examples,) float32, each chunk checked against its
        checksum; a missing or damaged chunk raises (StoreIncompleteError / StoreDamagedError)."""
        import numpy as np

        parts = []
        for c in range(self.num_chunks):
            w, problem = self._weight_chunk(c)
            if problem is not None:
                how = ("run the same TRAK build again (it writes the missing weights)"
                       if problem.kind == "missing" else
                       "run the same TRAK build again (it rewrites them)")
                msg = (f"the store at {str(self.path)!r}: {problem.format()}; {how}.")
                if problem.kind == "missing":
                    raise StoreIncompleteError(msg)
                raise StoreDamagedError(msg, problem.detail)
            parts.append(w)
        return np.concatenate(parts)

    def nbytes_on_disk(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.path):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        return total

    def __repr__(self) -> str:
        sk = self.metadata.get("sketch", {})
        return (f"SketchStore({str(self.path)!r}, examples={self.num_examples}, "
                f"D={self.out_dim}, algo={sk.get('algo')!r}, chunks={self.num_chunks})")


def _digest(a) -> bytes:
    import numpy as np

    return hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).digest()


def _positive(name: str, value) -> int:
    import operator

    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {_short(value)}.") from None
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}.")
    return v


def _validate_metadata(path: Path, raw) -> dict:
    """The metadata record of a store, checked field by field (it is untrusted data)."""
    where = f"{str(path)!r}"
    if not isinstance(raw, dict):
        raise StoreFormatError(f"{where} is a zarr group but not a sketch store of format "
                               f"{STORE_FORMAT!r} (it has no {_ATTR!r} metadata record). If it "
                               "is a store whose creation was interrupted, overwrite=True "
                               "(CLI: --overwrite) replaces it.")
    fmt = raw.get("format")
    if fmt in _OLD_FORMATS:
        raise StoreFormatError(
            f"{where} is a sketch store of the older format {fmt!r}, which has no checksums, so "
            "damaged chunks cannot be told apart; rebuild it (sketchcore tda build ... --store "
            f"{path} --overwrite).")
    if fmt != STORE_FORMAT:
        raise StoreFormatError(f"{where} is a zarr group but not a sketch store of format "
                               f"{STORE_FORMAT!r} (found format {_short(fmt)}).")
    problems = []
    for key in ("num_examples", "chunk_rows", "num_chunks", "out_dim"):
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            problems.append(f"{key} must be a positive integer, got {_short(v)}")
    v = raw.get("num_params")
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        problems.append(f"num_params must be a non-negative integer, got {_short(v)}")
    if not problems and raw["num_chunks"] != math.ceil(raw["num_examples"] / raw["chunk_rows"]):
        problems.append(f"num_chunks {raw['num_chunks']} does not fit num_examples "
                        f"{raw['num_examples']} in chunks of {raw['chunk_rows']}")
    sketch = raw.get("sketch")
    if not isinstance(sketch, dict) or not isinstance(sketch.get("algo"), str):
        problems.append(f"sketch must be a record with a string 'algo', got {_short(sketch)}")
    elif sketch["algo"] != "none":
        for key in ("out_dim", "seed", "in_dim"):
            if key in sketch and (isinstance(sketch[key], bool)
                                  or not isinstance(sketch[key], int)):
                problems.append(f"sketch.{key} must be an integer, got {_short(sketch.get(key))}")
        if not isinstance(sketch.get("options", {}), dict):
            problems.append(f"sketch.options must be a record, got {_short(sketch.get('options'))}")
    if raw.get("dtype") != "float32":
        problems.append(f"dtype must be 'float32', got {_short(raw.get('dtype'))}")
    for key, allowed in (("layout", ("flat", "blocks", "factored")), ("mode", ("explicit", "implicit"))):
        if raw.get(key) not in allowed:
            problems.append(f"{key} must be one of {allowed}, got {_short(raw.get(key))}")
    if not isinstance(raw.get("model", {}), dict):
        problems.append(f"model must be a record, got {_short(raw.get('model'))}")
    tw = raw.get("train_weights")
    if tw is not None and not (isinstance(tw, dict) and isinstance(tw.get("kind"), str)
                               and isinstance(tw.get("output"), str)):
        problems.append(f"train_weights must be a record with string 'kind' and 'output', got "
                        f"{_short(tw)}")
    if problems:
        raise StoreFormatError(f"{where} has invalid sketch store metadata:\n  "
                               + "\n  ".join(problems))
    return dict(raw)


def _validate_arrays(path: Path, group, meta: dict) -> None:
    """Every array exists with exactly the shape, chunks, dtype and codec a store writes."""
    problems = []
    for name, (shape, chunks, dtype, _fill) in _array_specs(meta).items():
        try:
            arr = group[name]
            codecs = [c.to_dict().get("name") for c in arr.metadata.codecs]
            got = (tuple(arr.shape), tuple(arr.chunks), str(arr.dtype), codecs)
        except Exception as err:  # noqa: BLE001
            problems.append(f"{name}: cannot be opened ({type(err).__name__}: "
                            f"{_short(str(err), 120)})")
            continue
        want = (tuple(shape), tuple(chunks), dtype, ["bytes"])
        if got != want:
            problems.append(f"{name}: shape/chunks/dtype/codecs {got}, expected {want}")
    if problems:
        raise StoreFormatError(f"{str(path)!r} does not have the layout of a sketch store:\n  "
                               + "\n  ".join(problems)
                               + "\nRebuild it with `sketchcore tda build ... --overwrite`.")


def _is_replaceable(path: Path) -> bool:
    """A sketch store of any format, or the remains of one whose creation never finished (a
    zarr group without a metadata record holding only a store's arrays)."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    record = attrs.get(_ATTR) if isinstance(attrs, dict) else None
    if isinstance(record, dict) and str(record.get("format", "")).startswith("sketchcore-tda-store/"):
        return True
    if record is None and not (attrs or {}):
        names = {p.name for p in path.iterdir()} - {"zarr.json", LOCK_NAME}
        return names <= {"sketches", "ids", "checksums", "inputs", "complete", _WEIGHTS,
                         _WEIGHT_SUMS}
    return False


def _remove_dead_siblings(path: Path) -> None:
    """Delete hidden ``.<name>.creating-*`` / ``.<name>.replaced-*`` folders that a killed
    process left next to ``path`` (their writer lock is free); live ones are left alone."""
    parent = path.parent
    if not parent.is_dir():
        return
    for sib in parent.glob(f".{path.name}.*"):
        if not any(tag in sib.name for tag in _TMP_TAGS) or not sib.is_dir():
            continue
        if not (sib / LOCK_NAME).is_file():  # its creator may be between mkdir and locking
            with contextlib.suppress(OSError):
                if time.time() - sib.stat().st_mtime > _UNLOCKED_TMP_AGE:
                    shutil.rmtree(sib, ignore_errors=True)
            continue
        lock = WriterLock(sib)
        try:
            lock.acquire()
        except Exception:  # noqa: BLE001 - held by a live process, or not ours to judge
            continue
        lock.release()
        shutil.rmtree(sib, ignore_errors=True)


def _list_diff(what: str, a, b) -> str:
    a, b = list(a or []), list(b or [])
    if len(a) != len(b):
        return f"{what}: store has {len(a)} tensors, model has {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"{what}: tensor {i} is {_short(x)} in the store, {_short(y)} in the model"
    return f"{what} differ"
