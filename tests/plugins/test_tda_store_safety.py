"""A sketch store is someone else's data: it never runs code, damaged chunks are detected and
rewritten (never served), creation is atomic, one writer holds it at a time, and what each chunk
was built from (ids, data, batching) is part of its identity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import sketchcore as sk
from sketchcore_tda.build import build_store
from sketchcore_tda.errors import (
    StoreDamagedError,
    StoreFormatError,
    StoreIncompleteError,
    StoreLockedError,
)
from sketchcore_tda.scores import self_influence, top_k
from sketchcore_tda.store import SketchStore


class LinearSketcher:
    """A deterministic stand-in sketcher: row i of the data times a fixed matrix."""

    num_params, out_dim, sketch = 6, 4, None

    def __init__(self, delay: float = 0.0) -> None:
        self.m = np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 4)
        self.delay = delay

    def fingerprint(self):
        return {"names": ["m"], "shapes": [[6, 4]], "hash": "linspace"}

    def sketch_batch(self, batch):
        if self.delay:
            time.sleep(self.delay)
        return np.asarray(batch[0], dtype=np.float32) @ self.m


def data(n: int = 40, shift: float = 0.0):
    x = np.arange(n * 6, dtype=np.float32).reshape(n, 6) / 7.0 + shift
    return (x,)


def built(path, n: int = 40, chunk_rows: int = 8, **kw):
    build_store(path, LinearSketcher(), data(n), batch_size=4, chunk_rows=chunk_rows,
                progress=False, **kw)
    return SketchStore.open(path, mode="r")


def cli(*args, cwd=None):
    """Run ``sketchcore ...`` in a fresh interpreter; returns (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "sketchcore.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


# ---- a store never runs code ---------------------------------------------------------------------

def test_scores_never_runs_the_task_recorded_in_a_store(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_task.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran at import')\n"
                    "def make():\n    raise SystemExit('ran')\n")
    for i, task in enumerate([{"spec": "os:system", "args": {"command": f"touch {marker}"}},
                              {"spec": f"{evil}:make", "args": {}}]):
        path = tmp_path / f"s{i}.zarr"
        built(path, extra={"task": task})
        code, out, err = cli("tda", "scores", "--store", str(path), "-k", "2")
        assert code != 0 and not marker.exists(), (out, err)
        assert "Traceback" not in err
        assert task["spec"].split(":")[0] in err and "--use-recorded-task" in err, err
        assert "does not choose the code" in err
        # info shows the record, as data
        code, out, err = cli("tda", "info", "--store", str(path))
        assert code == 0 and task["spec"] in out and not marker.exists()
        # the Python API has no path from metadata to code at all
        from sketchcore.cli import main

        with pytest.raises(sk.StoreMismatchError, match="does not choose the code"):
            main(["tda", "scores", "--store", str(path)])
        assert not marker.exists()


# ---- damaged chunks are detected, reported and repaired -----------------------------------------

def _chunk_file(store_path: Path, array: str, chunk: int) -> Path:
    f = store_path / array / "c" / str(chunk)
    return f / "0" if f.is_dir() else f


@pytest.mark.parametrize("array", ["sketches", "ids", "checksums", "complete"])
@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_damaged_chunk_is_never_served_and_rebuild_repairs_it(tmp_path, array, damage):
    path = tmp_path / "s.zarr"
    ref = built(tmp_path / "ref.zarr").sketches()
    built(path)
    f = _chunk_file(path, array, 2)
    raw = f.read_bytes()
    if damage == "delete":
        f.unlink()
    elif damage == "truncate":
        f.write_bytes(raw[: len(raw) // 2])
    else:
        b = bytearray(raw)
        b[len(b) // 2] ^= 0x5A
        f.write_bytes(bytes(b))
    store = SketchStore.open(path, mode="r")
    problems = store.verify()
    assert [p.chunk for p in problems] == [2], problems
    assert (problems[0].start, problems[0].stop) == (16, 24)
    if array == "complete" and damage != "truncate":
        # a lost or altered marker: the chunk counts as not written (it is rewritten)
        assert problems[0].kind in ("missing", "damaged")
        with pytest.raises((StoreIncompleteError, StoreDamagedError)):
            store.sketches()
    else:
        with pytest.raises((StoreDamagedError, StoreIncompleteError), match="chunk 2|missing"):
            store.sketches()
        with pytest.raises((StoreDamagedError, StoreIncompleteError)):
            top_k(store, np.ones((1, 4), np.float32), k=3)
        with pytest.raises((StoreDamagedError, StoreIncompleteError)):
            self_influence(store)
    code, out, err = cli("tda", "verify", "--store", str(path), "--no-progress")
    assert code == 1 and "chunk 2 (rows 16-23)" in out, (out, err)
    # a resumed build rewrites exactly that chunk
    summary = build_store(path, LinearSketcher(), data(), batch_size=4, chunk_rows=8,
                          progress=False)
    assert summary.chunks_written == 1 and summary.examples_written == 8
    again = SketchStore.open(path, mode="r")
    assert again.verify() == []
    np.testing.assert_array_equal(again.sketches(), ref)
    code, out, _err = cli("tda", "verify", "--store", str(path), "--no-progress")
    assert code == 0 and "ok: all 5 chunks" in out


def test_flipped_bytes_never_reach_scores(tmp_path):
    """The reported case: one flipped byte made a self-influence of 6.6e70."""
    path = tmp_path / "s.zarr"
    built(path)
    f = _chunk_file(path, "sketches", 0)
    b = bytearray(f.read_bytes())
    b[3] = 0x7F  # the exponent byte of the first float32
    f.write_bytes(bytes(b))
    with pytest.raises(StoreDamagedError, match=r"chunk 0 \(rows 0-7\) has sketches that differ"):
        self_influence(SketchStore.open(path, mode="r"))


# ---- creation is atomic ----------------------------------------------------------------------------

CREATE_AND_DIE = textwrap.dedent("""
    import os, signal, sys
    import zarr
    from sketchcore_tda.store import SketchStore
    calls = [0]
    real = zarr.Group.create_array
    def dying(self, *a, **k):
        calls[0] += 1
        if calls[0] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *a, **k)
    zarr.Group.create_array = dying
    identity = {"sketch": {"algo": "none"}, "num_params": 6, "out_dim": 4, "dtype": "float32",
                "layout": "flat", "mode": "explicit", "params": None}
    SketchStore.create(sys.argv[1], identity, num_examples=40, chunk_rows=8)
""")


@pytest.mark.parametrize("die_at", [1, 3, 5])
def test_kill_during_creation_leaves_nothing_half_made(tmp_path, die_at):
    script = tmp_path / "create.py"
    script.write_text(CREATE_AND_DIE)
    path = tmp_path / "s.zarr"
    proc = subprocess.run([sys.executable, str(script), str(path), str(die_at)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not path.exists()  # nothing at the store's path, not even a bare zarr group
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".s.zarr.creating-")]
    # the next build simply creates it (and removes what the killed one left)
    built(path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.zarr.")]
    assert SketchStore.open(path).verify() == []


def test_remains_of_an_interrupted_old_style_creation_can_be_overwritten(tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    g = zarr.open_group(str(path), mode="w")
    g.create_array("sketches", shape=(40, 4), chunks=(8, 4), dtype="float32")
    with pytest.raises(StoreFormatError, match="overwrite"):
        built(path)
    built(path, overwrite=True)
    assert SketchStore.open(path).is_complete()


# ---- one writer at a time ------------------------------------------------------------------------

def test_second_writer_is_refused_in_process(tmp_path):
    path = tmp_path / "s.zarr"
    identity = {"sketch": {"algo": "none"}, "num_params": 6, "out_dim": 4, "dtype": "float32",
                "layout": "flat", "mode": "explicit", "params": None}
    first = SketchStore.create(path, identity, num_examples=40, chunk_rows=8)
    with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()}"):
        SketchStore.create(path, identity, num_examples=40, chunk_rows=8)
    with pytest.raises(StoreLockedError):
        SketchStore.create(path, identity, num_examples=40, chunk_rows=8, overwrite=True)
    first.close()
    SketchStore.create(path, identity, num_examples=40, chunk_rows=8).close()


SLOW_BUILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from test_tda_store_safety import LinearSketcher, data
    from sketchcore_tda.build import build_store
    print("ready", flush=True)
    build_store(sys.argv[1], LinearSketcher(delay=float(sys.argv[2])), data(40), batch_size=4,
                chunk_rows=8, progress=False)
    print("done", flush=True)
""")


def _start_slow_build(tmp_path, path, delay):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_BUILD)
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(delay),
                             str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 60
    while not (path / "writer.lock").exists() or not (path / "writer.lock").read_text():
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    return proc


def test_second_build_and_overwrite_are_refused_while_a_build_runs(tmp_path):
    path = tmp_path / "s.zarr"
    proc = _start_slow_build(tmp_path, path, delay=60.0)  # holds the lock until killed
    try:
        for extra in ([], ["--overwrite"]):
            code, out, err = cli("tda", "build", "--task", "sketchcore_tda.example_tasks:digits",
                                 "--store", str(path), "--seed", "1", "--no-progress", *extra)
            assert code != 0 and f"pid {proc.pid}" in err and "Traceback" not in err, err
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid}"):
            build_store(path, LinearSketcher(), data(40), batch_size=4, chunk_rows=8,
                        progress=False, overwrite=True)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # the killed writer's lock is stale: the next build takes it over and finishes the store
    with pytest.warns(RuntimeWarning, match=rf"took over .*\(pid {proc.pid} "):
        build_store(path, LinearSketcher(), data(40), batch_size=4, chunk_rows=8,
                    progress=False)
    store = SketchStore.open(path, mode="r")
    np.testing.assert_array_equal(store.sketches(), built(tmp_path / "ref.zarr").sketches())
    assert (path / "writer.lock").read_text() == ""  # released


# ---- what a chunk was built from is part of its identity -------------------------------------------

@pytest.mark.parametrize("change, message", [
    ("data", "other input data: 32 rows in 4 chunks"),
    ("ids", "other example ids"),
    ("batch", "other batches"),
])
def test_resume_with_other_inputs_is_refused(tmp_path, change, message):
    path = tmp_path / "s.zarr"
    built(path)
    store = SketchStore.open(path)
    store._complete[1] = 0  # as if the build had been interrupted
    kw = {"batch_size": 4, "chunk_rows": 8, "progress": False}
    x = data()
    if change == "data":
        x = data(shift=1.0)
    elif change == "ids":
        kw["ids"] = np.arange(40) + 1000
    else:
        kw["batch_size"] = 8
    with pytest.raises(sk.StoreMismatchError, match=message) as err:
        build_store(path, LinearSketcher(), x, **kw)
    assert "chunk" in str(err.value) or "rows" in str(err.value)
    # nothing was written: the same inputs still resume the store
    summary = build_store(path, LinearSketcher(), data(), batch_size=4, chunk_rows=8,
                          progress=False)
    assert summary.chunks_written == 1


def test_resume_with_torch_inputs_equals_numpy_inputs(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "s.zarr"
    built(path)
    SketchStore.open(path)._complete[3] = 0
    x = torch.from_numpy(data()[0])
    summary = build_store(path, LinearSketcher(), (x,), batch_size=4, chunk_rows=8,
                          progress=False)
    assert summary.chunks_written == 1


# ---- crafted metadata and layouts ----------------------------------------------------------------

def _edit_attrs(path: Path, edit) -> None:
    meta = json.loads((path / "zarr.json").read_text())
    edit(meta["attributes"]["sketchcore_tda"])
    (path / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(num_examples="40; rm -rf /"), "num_examples must be a positive integer"),
    (lambda m: m.update(chunk_rows=-3), "chunk_rows must be a positive integer"),
    (lambda m: m.update(num_chunks=2), "num_chunks 2 does not fit"),
    (lambda m: m.update(out_dim=10**12), "sketches: shape"),
    (lambda m: m.update(sketch="__import__('os').system('id')"), "sketch must be a record"),
    (lambda m: m.update(layout="x" * 100_000), "layout must be one of"),
    (lambda m: m.update(format="sketchcore-tda-store/1"), "older format"),
    (lambda m: m.update(format={"$ref": "http://x"}), "not a sketch store"),
])
def test_crafted_metadata_is_refused_cleanly(tmp_path, edit, message):
    path = tmp_path / "s.zarr"
    built(path)
    _edit_attrs(path, edit)
    with pytest.raises(sk.StoreMismatchError, match=message) as err:
        SketchStore.open(path, mode="r")
    assert len(str(err.value)) < 2000
    code, _out, err_text = cli("tda", "info", "--store", str(path))
    assert code != 0 and "Traceback" not in err_text and len(err_text) < 3000


def test_crafted_array_layout_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    built(path)
    arr = json.loads((path / "sketches" / "zarr.json").read_text())
    arr["codecs"] = [{"name": "bytes", "configuration": {"endian": "little"}},
                     {"name": "gzip", "configuration": {"level": 1}}]
    (path / "sketches" / "zarr.json").write_text(json.dumps(arr))
    with pytest.raises(StoreFormatError, match="sketches: shape/chunks/dtype/codecs"):
        SketchStore.open(path, mode="r")
    (path / "ids" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreFormatError, match="ids: cannot be opened"):
        SketchStore.open(path, mode="r")
    (path / "zarr.json").write_text("[1, 2")
    with pytest.raises(StoreFormatError, match="not a readable sketch store"):
        SketchStore.open(path, mode="r")


# ---- the map's numbers are part of the identity ----------------------------------------------------

class SketchedLinear(LinearSketcher):
    """LinearSketcher's rows sketched with a real operator (so the store records its digest)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.sketch = sk.Sketch(algo="qk", in_dim=4, out_dim=2, seed=seed)
        self.out_dim = 2

    def sketch_batch(self, batch):
        return np.asarray(self.sketch(super().sketch_batch(batch)), dtype=np.float32)


def test_store_identity_holds_the_operator_digest(tmp_path, monkeypatch):
    from sketchcore_tda.build import sketcher_identity

    path = tmp_path / "s.zarr"
    build_store(path, SketchedLinear(), data(), batch_size=4, chunk_rows=8, progress=False)
    store = SketchStore.open(path, mode="r")
    digest = store.metadata["sketch"]["params_sha256"]
    assert digest == SketchedLinear().sketch.describe()["params_sha256"] and len(digest) == 64
    store.check_sketch(sketcher_identity(SketchedLinear()))
    # a library whose random stream (or QR) changed builds another map from the same
    # description: a query or resume with it is refused instead of mixing two maps
    import sketchcore._random as rnd

    real = rnd.gaussians
    # one ulp up on every number (a common scale would not do: a Haar factor is the same for any
    # positive multiple of its Gaussians, and the QR is exact enough to keep every bit)
    monkeypatch.setattr(rnd, "gaussians", lambda *a, **k: np.nextafter(real(*a, **k), np.inf))
    changed = SketchedLinear()
    assert changed.sketch.describe()["params_sha256"] != digest
    with pytest.raises(sk.StoreMismatchError, match="sketch.params_sha256"):
        store.check_sketch(sketcher_identity(changed))
    SketchStore.open(path)._complete[0] = 0
    with pytest.raises(sk.StoreMismatchError, match="sketch.params_sha256"):
        build_store(path, changed, data(), batch_size=4, chunk_rows=8, progress=False)
