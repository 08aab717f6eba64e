"""The LDS cache folder: subsets, retrained models and their outputs, shared by every method and D.

Layout::

    lds.json                 what the cache was made for (task, its arguments, data digests,
                             alpha, seed, output function); another run must match it
    subsets/0007.npy         int64 train indices of subset model 7
    subsets/0007-outputs.npy float64 outputs of subset model 7 on every test example
    subsets/0007-state.pt    its torch state dict (torch models)
    ensemble/03-state.pt     state dict of full-data ensemble member 3 (torch models)
    stores/<name>.zarr       sketch stores of the ensemble members (one per method kind,
                             algorithm, D and member), with <name>-test<m>.npy test sketches

Everything is data: numpy files are read with ``allow_pickle=False``, state dicts with
``weights_only=True``. Each file is written to a temporary name and renamed into place, and a
subset model counts as done once its outputs file exists, so an interrupted run resumes, and the
number of models can grow (subset m is a pure function of the seed and m).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["LDSCache", "CACHE_FORMAT", "draw_subset"]

CACHE_FORMAT = "sketchcore-lds-cache/1"
#: manifest fields that must match for a cache to be reused
MATCH_KEYS = ("format", "task", "task_args", "num_train", "num_test", "train_digest",
              "test_digest", "alpha", "seed", "output")


def draw_subset(num_train: int, alpha: float, seed: int, m: int) -> np.ndarray:
    """Sorted train indices of subset model ``m``: ``round(alpha * num_train)`` drawn without
    replacement by a generator keyed by ``(seed, m)`` (independent of how many models exist)."""
    size = int(round(alpha * num_train))
    if not 1 <= size < num_train:
        raise ValueError(f"alpha={alpha!r} gives subsets of {size} of {num_train} training "
                         "examples; choose alpha in (0, 1) so that a subset holds at least one "
                         "example and not all of them.")
    rng = np.random.default_rng([int(seed), int(m)])
    return np.sort(rng.choice(num_train, size=size, replace=False)).astype(np.int64)


def _save_npy(path: Path, array) -> None:
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    os.replace(tmp, path)


def _load_npy(path: Path):
    return np.load(path, allow_pickle=False)


class LDSCache:
    """A cache folder for one task, data, alpha and seed (see the module docstring)."""

    def __init__(self, folder, manifest: dict) -> None:
        self.folder = Path(folder)
        self.manifest = json.loads(json.dumps({"format": CACHE_FORMAT, **manifest},
                                              sort_keys=True, default=str))
        for sub in ("subsets", "ensemble", "stores"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        path = self.folder / "lds.json"
        if path.is_file():
            try:
                held = json.loads(path.read_text())
            except ValueError as err:
                raise ValueError(f"{str(path)!r} is not a readable LDS cache manifest ({err}); "
                                 "use another cache folder.") from None
            diff = [f"{k}: cache has {held.get(k)!r}, this run {self.manifest.get(k)!r}"
                    for k in MATCH_KEYS if held.get(k) != self.manifest.get(k)]
            if diff:
                raise ValueError(f"the LDS cache at {str(self.folder)!r} was made for another "
                                 "setup:\n  " + "\n  ".join(diff)
                                 + "\nUse another cache folder (--cache), or delete this one.")
        else:
            tmp = path.with_name(f"lds.json.partial-{os.getpid()}")
            tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=True))
            os.replace(tmp, path)

    # ---- subset models -------------------------------------------------------------------------
    def subset(self, m: int) -> np.ndarray:
        """Train indices of subset model ``m`` (drawn once, then read back)."""
        path = self.folder / "subsets" / f"{m:04d}.npy"
        want = draw_subset(self.manifest["num_train"], self.manifest["alpha"],
                           self.manifest["seed"], m)
        if path.is_file():
            held = _load_npy(path)
            if not np.array_equal(held, want):
                raise ValueError(f"{str(path)!r} holds another subset than seed "
                                 f"{self.manifest['seed']} draws; delete the cache folder.")
        else:
            _save_npy(path, want)
        return want

    def subset_outputs(self, m: int):
        """The recorded test outputs of subset model ``m``, or None if it was not trained yet."""
        path = self.folder / "subsets" / f"{m:04d}-outputs.npy"
        if not path.is_file():
            return None
        out = np.asarray(_load_npy(path), dtype=np.float64)
        if out.shape != (self.manifest["num_test"],):
            raise ValueError(f"{str(path)!r} has shape {out.shape}, expected "
                             f"({self.manifest['num_test']},); delete it to retrain the model.")
        return out

    def save_subset_model(self, m: int, model, outputs) -> None:
        """Record subset model ``m``: its state dict (torch) first, then its outputs (the mark
        that the model is done)."""
        from .forward import save_state

        save_state(model, self.folder / "subsets" / f"{m:04d}-state.pt")
        _save_npy(self.folder / "subsets" / f"{m:04d}-outputs.npy",
                  np.asarray(outputs, dtype=np.float64))

    # ---- ensemble members ----------------------------------------------------------------------
    def ensemble_state(self, k: int) -> Path:
        return self.folder / "ensemble" / f"{k:02d}-state.pt"

    # ---- stores --------------------------------------------------------------------------------
    def store_path(self, kind: str, algo: str, log2_dim, member: int) -> Path:
        dim = "exact" if log2_dim is None else f"D{2 ** int(log2_dim)}"
        return self.folder / "stores" / f"{kind}-{algo}-{dim}-m{member:02d}.zarr"

    def test_sketches(self, store_path: Path, num_test: int, make):
        """Test sketches stored next to a store (``make()`` computes them the first time)."""
        path = store_path.with_name(f"{store_path.stem}-test{num_test}.npy")
        if path.is_file():
            return np.asarray(_load_npy(path), dtype=np.float32)
        t = np.asarray(make(), dtype=np.float32)
        _save_npy(path, t)
        return t
