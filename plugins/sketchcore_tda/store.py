"""``SketchStore``: per-example gradient sketches of a training set in a chunked zarr (v3) array.

Layout of a store directory (a zarr group)::

    zarr.json            group attributes: {"sketchcore_tda": <metadata record>}
    sketches/            float32 (num_examples, D), chunks of ``chunk_rows`` rows, uncompressed
    ids/                 int64 (num_examples,), same row chunks
    complete/            int32 (num_chunks,), one zarr chunk per row chunk: rows written, 0 = absent

A row chunk is written as: its sketches chunk, its ids chunk, then its ``complete`` entry. zarr's
local store replaces each chunk file atomically (write to a temporary name, then rename), so after
a crash a row chunk is either marked complete with all its rows, or counts as absent and is
written again (a whole chunk, so no row is written twice). Writers of different row chunks touch
different files, which is what lets Ray tasks fill one store side by side.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from sketchcore import StoreMismatchError, __version__

__all__ = [
    "SketchStore",
    "STORE_FORMAT",
    "IDENTITY_KEYS",
    "describe_differences",
    "default_chunk_rows",
]

STORE_FORMAT = "sketchcore-tda-store/1"
_ATTR = "sketchcore_tda"
# metadata fields that identify the sketch (a store opened with other values is refused)
IDENTITY_KEYS = ("sketch", "num_params", "out_dim", "dtype", "layout", "mode", "params")
_CHUNK_BYTES = 8 << 20


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
                    out.append(f"{key}.{sub}: store has {a.get(sub)!r}, requested {b.get(sub)!r}")
        else:
            out.append(f"{key}: store has {a!r}, requested {b!r}")
    return out


def _canon(v):
    """JSON round trip, so tuples and lists (and int/float keys) compare as stored."""
    return json.loads(json.dumps(v, sort_keys=True, default=str))


class SketchStore:
    """A zarr store of per-example sketches with ids, completion markers and a metadata record.

    Use :meth:`create` (new, or reopen a matching one to resume) or :meth:`open` (existing).
    ``metadata`` holds: format, sketch (algo, in_dim, out_dim, seed, options), num_params (N),
    out_dim (D), dtype, layout, mode, params, model (names, shapes, hash), num_examples,
    chunk_rows, library_version, and anything passed as ``extra`` (e.g. how the model was built).
    """

    def __init__(self, path, group, metadata: dict) -> None:
        self.path = Path(path)
        self._group = group
        self.metadata = metadata
        self._sketches = group["sketches"]
        self._ids = group["ids"]
        self._complete = group["complete"]

    # ---- creating and opening -----------------------------------------------------------------
    @classmethod
    def create(cls, path, identity: dict, *, num_examples: int, chunk_rows: int,
               model: dict | None = None, extra: dict | None = None,
               overwrite: bool = False) -> SketchStore:
        """Create a store at ``path``, or reopen the one there if it holds the same sketch of the
        same model with the same size (so an interrupted build resumes).

        ``identity`` has the :data:`IDENTITY_KEYS`; ``model`` is the sketcher's fingerprint.
        A store with other values is refused with :class:`sketchcore.StoreMismatchError`, unless
        ``overwrite=True`` (then it is replaced).
        """
        import zarr

        num_examples = _positive("num_examples", num_examples)
        chunk_rows = _positive("chunk_rows", chunk_rows)
        missing = [k for k in IDENTITY_KEYS if k not in identity]
        if missing:
            raise ValueError(f"identity record lacks {missing}; it needs all of {IDENTITY_KEYS}.")
        path = Path(path)
        meta = {
            "format": STORE_FORMAT,
            **{k: identity[k] for k in IDENTITY_KEYS},
            "model": model or {},
            "num_examples": num_examples,
            "chunk_rows": chunk_rows,
            "num_chunks": math.ceil(num_examples / chunk_rows),
            "library_version": __version__,
            **(extra or {}),
        }
        meta = _canon(meta)
        if path.exists() and not (path / "zarr.json").is_file() and any(path.iterdir()):
            raise FileExistsError(
                f"{str(path)!r} exists and is not a sketch store; refusing to write into it "
                "(that would delete its files). Choose a new or empty folder."
            )
        if (path / "zarr.json").is_file() and overwrite:
            cls.open(path, mode="r")  # replace only a sketch store, never another zarr group
        if (path / "zarr.json").is_file() and not overwrite:
            store = cls.open(path)
            wanted = dict(meta)
            problems = describe_differences(store.metadata, wanted, IDENTITY_KEYS)
            problems += describe_differences(
                store.metadata, wanted, ("num_examples", "chunk_rows"))
            if model:
                problems += describe_differences(store.metadata, wanted, ("model",))
            if problems:
                raise StoreMismatchError(
                    f"the store at {str(path)!r} holds a different build; it cannot be resumed:\n  "
                    + "\n  ".join(problems)
                    + "\nUse another path, or overwrite=True (CLI: --overwrite) to replace it."
                )
            store._remove_partial_files()
            return store
        group = zarr.open_group(str(path), mode="w")
        d = int(meta["out_dim"])
        group.create_array("sketches", shape=(num_examples, d), chunks=(chunk_rows, d),
                           dtype="float32", compressors=None, fill_value=0.0)
        group.create_array("ids", shape=(num_examples,), chunks=(chunk_rows,), dtype="int64",
                           fill_value=-1)
        group.create_array("complete", shape=(meta["num_chunks"],), chunks=(1,), dtype="int32",
                           fill_value=0)
        group.attrs[_ATTR] = meta
        return cls(path, group, meta)

    @classmethod
    def open(cls, path, *, expect: dict | None = None, model: dict | None = None,
             mode: str = "r+") -> SketchStore:
        """Open an existing store; with ``expect`` (identity fields) or ``model`` (a fingerprint),
        refuse it with :class:`sketchcore.StoreMismatchError` naming every field that differs."""
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise FileNotFoundError(
                f"no sketch store at {str(path)!r} (no zarr.json); build one first "
                "(sketchcore tda build ... --store PATH)."
            )
        group = zarr.open_group(str(path), mode=mode)
        meta = group.attrs.get(_ATTR)
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise StoreMismatchError(
                f"{str(path)!r} is a zarr group but not a sketch store of format {STORE_FORMAT!r} "
                f"(found format {meta.get('format') if isinstance(meta, dict) else None!r})."
            )
        store = cls(path, group, dict(meta))
        if expect is not None:
            store.check_sketch(expect)
        if model is not None:
            store.check_model(model)
        return store

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
        """Boolean numpy array (num_chunks,): which row chunks are fully written."""
        import numpy as np

        done = np.asarray(self._complete[:])
        expected = np.array([b - a for a, b in map(self.chunk_range, range(self.num_chunks))])
        return done == expected

    def missing_chunks(self) -> list[int]:
        return [int(c) for c in (~self.completed_chunks()).nonzero()[0]]

    def is_complete(self) -> bool:
        return bool(self.completed_chunks().all())

    def require_complete(self) -> None:
        missing = self.missing_chunks()
        if missing:
            raise RuntimeError(
                f"the store at {str(self.path)!r} is incomplete: {len(missing)} of "
                f"{self.num_chunks} chunks are missing (first: {missing[0]}); finish it by running "
                "the same build again (it resumes)."
            )

    # ---- writing ------------------------------------------------------------------------------
    def write_chunk(self, chunk: int, sketches, ids) -> None:
        """Write one whole row chunk: sketches (rows, D), ids (rows,), then mark it complete."""
        import numpy as np

        start, stop = self.chunk_range(chunk)
        sketches = np.asarray(sketches, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        if sketches.shape != (stop - start, self.out_dim) or ids.shape != (stop - start,):
            raise ValueError(
                f"chunk {chunk} holds rows [{start}, {stop}): needs sketches of shape "
                f"{(stop - start, self.out_dim)} and ids of shape {(stop - start,)}, got "
                f"{sketches.shape} and {ids.shape}."
            )
        self._sketches[start:stop] = sketches
        self._ids[start:stop] = ids
        self._complete[chunk] = stop - start

    def _remove_partial_files(self) -> None:
        """Delete temporary files a killed writer left behind (never complete chunks)."""
        for root, _dirs, files in os.walk(self.path):
            for name in files:
                if name.endswith(".partial"):
                    try:
                        os.unlink(os.path.join(root, name))
                    except FileNotFoundError:
                        pass

    # ---- reading ------------------------------------------------------------------------------
    def read_chunk(self, chunk: int):
        """``(ids, sketches)`` of one row chunk, as numpy arrays."""
        start, stop = self.chunk_range(chunk)
        return self._ids[start:stop], self._sketches[start:stop]

    def read_rows(self, start: int, stop: int):
        """``(ids, sketches)`` of rows ``[start, stop)``, as numpy arrays."""
        return self._ids[start:stop], self._sketches[start:stop]

    def iter_chunks(self):
        """Yield ``(ids, sketches)`` per row chunk, in order; the store must be complete."""
        self.require_complete()
        for c in range(self.num_chunks):
            yield self.read_chunk(c)

    def ids(self):
        self.require_complete()
        return self._ids[:]

    def sketches(self):
        """All sketches as one numpy array (num_examples, D): for stores that fit in memory."""
        self.require_complete()
        return self._sketches[:]

    def nbytes_on_disk(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.path):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        return total

    def __repr__(self) -> str:
        sk = self.metadata.get("sketch", {})
        return (f"SketchStore({str(self.path)!r}, examples={self.num_examples}, "
                f"D={self.out_dim}, algo={sk.get('algo')!r}, chunks={self.num_chunks})")


def _positive(name: str, value) -> int:
    import operator

    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.") from None
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}.")
    return v


def _list_diff(what: str, a, b) -> str:
    a, b = list(a or []), list(b or [])
    if len(a) != len(b):
        return f"{what}: store has {len(a)} tensors, model has {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"{what}: tensor {i} is {x!r} in the store, {y!r} in the model"
    return f"{what} differ"
