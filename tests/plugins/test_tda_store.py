"""The sketch store: round trip, refusal of other sketches/models, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import sketchcore as sk
from sketchcore_tda.build import build_store
from sketchcore_tda.store import SketchStore, default_chunk_rows

IDENTITY = {"sketch": {"algo": "affd", "in_dim": 1000, "out_dim": 16, "seed": 0,
                       "options": {"preconditioner": "hadamard"}},
            "num_params": 1000, "out_dim": 16, "dtype": "float32", "layout": "flat",
            "mode": "explicit", "params": None}
MODEL = {"names": ["w", "b"], "shapes": [[10, 100], [10]], "hash": "ab" * 32}


def filled_store(path, n=23, chunk_rows=5):
    store = SketchStore.create(path, IDENTITY, num_examples=n, chunk_rows=chunk_rows, model=MODEL)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, 16)).astype(np.float32)
    ids = rng.permutation(10 * n)[:n]
    for c in reversed(range(store.num_chunks)):  # order does not matter
        a, b = store.chunk_range(c)
        store.write_chunk(c, data[a:b], ids[a:b])
    return store, data, ids


def test_round_trip(tmp_path):
    store, data, ids = filled_store(tmp_path / "s.zarr")
    again = SketchStore.open(tmp_path / "s.zarr", mode="r")
    assert again.is_complete() and again.num_chunks == 5
    np.testing.assert_array_equal(again.sketches(), data)
    np.testing.assert_array_equal(again.ids(), ids)
    chunks = list(again.iter_chunks())
    assert [len(i) for i, _s in chunks] == [5, 5, 5, 5, 3]
    meta = again.metadata
    assert meta["sketch"] == IDENTITY["sketch"] and meta["model"] == MODEL
    assert meta["num_examples"] == 23 and meta["library_version"] == sk.__version__
    assert again.nbytes_on_disk() >= data.nbytes
    assert "algo='affd'" in repr(again)


def test_incomplete_store_is_reported_and_refused_for_reading(tmp_path):
    store = SketchStore.create(tmp_path / "s.zarr", IDENTITY, num_examples=10, chunk_rows=4)
    store.write_chunk(1, np.ones((4, 16)), np.arange(4, 8))
    assert store.missing_chunks() == [0, 2]
    with pytest.raises(RuntimeError, match="2 of 3 chunks are missing"):
        store.sketches()
    with pytest.raises(ValueError, match=r"needs sketches of shape \(2, 16\)"):
        store.write_chunk(2, np.ones((4, 16)), np.arange(4))


@pytest.mark.parametrize("field, value, message", [
    ("sketch", {**IDENTITY["sketch"], "algo": "qk"}, "sketch.algo: store has 'affd', requested 'qk'"),
    ("sketch", {**IDENTITY["sketch"], "seed": 1}, "sketch.seed: store has 0, requested 1"),
    ("sketch", {**IDENTITY["sketch"], "options": {"preconditioner": "fft"}}, "sketch.options"),
    ("out_dim", 32, "out_dim: store has 16, requested 32"),
    ("layout", "blocks", "layout: store has 'flat', requested 'blocks'"),
    ("mode", "implicit", "mode: store has 'explicit', requested 'implicit'"),
    ("num_params", 999, "num_params: store has 1000, requested 999"),
])
def test_other_sketch_is_refused(tmp_path, field, value, message):
    filled_store(tmp_path / "s.zarr")
    other = {**IDENTITY, field: value}
    with pytest.raises(sk.StoreMismatchError, match="different sketch") as err:
        SketchStore.open(tmp_path / "s.zarr", expect=other)
    assert message in str(err.value)
    with pytest.raises(sk.StoreMismatchError, match="cannot be resumed") as err:
        SketchStore.create(tmp_path / "s.zarr", other, num_examples=23, chunk_rows=5, model=MODEL)
    assert message in str(err.value) and "overwrite=True" in str(err.value)


@pytest.mark.parametrize("model, message", [
    ({**MODEL, "hash": "cd" * 32}, "parameter values differ"),
    ({**MODEL, "shapes": [[10, 100], [11]]}, "tensor 1 is [10] in the store, [11] in the model"),
    ({**MODEL, "names": ["w"], "shapes": [[10, 100]]}, "store has 2 tensors, model has 1"),
])
def test_other_model_is_refused(tmp_path, model, message):
    filled_store(tmp_path / "s.zarr")
    with pytest.raises(sk.StoreMismatchError, match="different model") as err:
        SketchStore.open(tmp_path / "s.zarr", model=model)
    assert message in str(err.value)
    SketchStore.open(tmp_path / "s.zarr", model=MODEL, expect=IDENTITY)  # the same: accepted


def test_overwrite_and_foreign_folders(tmp_path):
    filled_store(tmp_path / "s.zarr")
    other = {**IDENTITY, "out_dim": 8, "sketch": {**IDENTITY["sketch"], "out_dim": 8}}
    fresh = SketchStore.create(tmp_path / "s.zarr", other, num_examples=4, chunk_rows=4,
                               overwrite=True)
    assert fresh.missing_chunks() == [0] and fresh.out_dim == 8
    with pytest.raises(FileNotFoundError, match="no sketch store"):
        SketchStore.open(tmp_path / "nothing.zarr")
    import zarr

    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    plain.create_array("data", shape=(3,), dtype="int8")  # someone else's zarr group
    with pytest.raises(sk.StoreMismatchError, match="not a sketch store"):
        SketchStore.open(tmp_path / "plain.zarr")
    with pytest.raises(sk.StoreMismatchError, match="not a sketch store"):  # never replaced
        SketchStore.create(tmp_path / "plain.zarr", IDENTITY, num_examples=4, chunk_rows=4,
                           overwrite=True)
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a sketch store"):
        SketchStore.create(folder, IDENTITY, num_examples=4, chunk_rows=4, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert SketchStore.create(tmp_path / "empty", IDENTITY, num_examples=4, chunk_rows=4)


def test_default_chunk_rows():
    assert default_chunk_rows(4096, 32, 10**6) == 512  # 8 MiB of float32 rows
    assert default_chunk_rows(2**20, 32, 10**6) == 32  # at least one batch
    assert default_chunk_rows(16, 32, 100) == 100  # never more than the examples


# ---- resume after SIGKILL ---------------------------------------------------------------------
# The build runs in a subprocess with a least-squares model whose per-example gradients are
# exact in closed form, g_i = (w.x_i - y_i) x_i, sketched with AFFD; the process is killed at a
# random moment and the build rerun until it completes.

BUILD_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import sketchcore as sk
    from sketchcore_tda.build import build_store

    class LeastSquaresSketcher:
        def __init__(self, n_params, out_dim, seed):
            self.op = sk.Sketch(algo="affd", in_dim=n_params, out_dim=out_dim, seed=seed)
            self.w = np.linspace(-1, 1, n_params, dtype=np.float32)
            self.num_params, self.out_dim, self.sketch = n_params, out_dim, self.op
        def fingerprint(self):
            return {"names": ["w"], "shapes": [[self.num_params]], "hash": "w-linspace"}
        def sketch_batch(self, batch):
            x, y = batch
            g = (x @ self.w - y)[:, None] * x
            return np.asarray(self.op(g), dtype=np.float32)

    n, n_params = int(sys.argv[2]), 4096
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n_params)).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    gs = LeastSquaresSketcher(n_params, 64, seed=5)
    print("ready", flush=True)
    build_store(sys.argv[1], gs, (x, y), ids=np.arange(n) * 3 + 7, batch_size=4,
                chunk_rows=12, progress=False)
    print("done", flush=True)
""")


def run_build(script, store, n, kill_after=None):
    """Run the build script; with ``kill_after`` seconds, SIGKILL it that long after it is ready.
    Returns True if it finished on its own."""
    proc = subprocess.Popen([sys.executable, str(script), str(store), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    if kill_after is None:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        return True
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return False
    assert proc.returncode == 0, proc.stderr.read()
    return True


def check_resume(tmp_path, repeats: int, seed: int) -> None:
    n = 360
    script = tmp_path / "build.py"
    script.write_text(BUILD_SCRIPT)
    reference = tmp_path / "reference.zarr"
    t0 = time.perf_counter()
    run_build(script, reference, n)
    full = time.perf_counter() - t0
    ref = SketchStore.open(reference, mode="r")
    rng = np.random.default_rng(seed)
    kills = 0
    for r in range(repeats):
        store = tmp_path / f"killed{r}.zarr"
        # kill 1-3 times at random moments, then let it finish
        for _ in range(int(rng.integers(1, 4))):
            if run_build(script, store, n, kill_after=float(rng.uniform(0.0, 0.6 * full))):
                break
            kills += 1
        run_build(script, store, n)
        got = SketchStore.open(store, mode="r")
        ids = got.ids()
        assert sorted(ids.tolist()) == sorted(set(ids.tolist())), "a row was written twice"
        np.testing.assert_array_equal(ids, np.arange(n) * 3 + 7)
        np.testing.assert_array_equal(got.sketches(), ref.sketches())
        leftovers = [f for _r, _d, fs in os.walk(store) for f in fs if f.endswith(".partial")]
        assert not leftovers
    assert kills >= 1, "no build was actually interrupted; the kill times are too late"


def test_resume_after_sigkill(tmp_path):
    check_resume(tmp_path, repeats=3, seed=0)


@pytest.mark.slow
def test_resume_after_sigkill_many_times(tmp_path):
    check_resume(tmp_path, repeats=20, seed=1)


def test_resume_in_process_computes_only_missing_chunks(tmp_path):
    """A store with some chunks written resumes: only the others are computed."""
    calls = []

    class Recorder:
        num_params, out_dim, sketch = 3, 3, None

        def fingerprint(self):
            return {"names": ["p"], "shapes": [[3]], "hash": "h"}

        def sketch_batch(self, batch):
            calls.append(len(batch[0]))
            return np.repeat(batch[0][:, None].astype(np.float32), 3, axis=1)

    x = np.arange(20, dtype=np.float32)
    first = build_store(tmp_path / "s.zarr", Recorder(), (x,), batch_size=3, chunk_rows=6,
                        progress=False)
    assert first.examples_written == 20 and sum(calls) == 20
    store = SketchStore.open(tmp_path / "s.zarr")
    # forget chunks 1 and 3 as a crash would (their markers absent)
    store._complete[1] = 0
    store._complete[3] = 0
    calls.clear()
    again = build_store(tmp_path / "s.zarr", Recorder(), (x,), batch_size=3, chunk_rows=6,
                        progress=False)
    assert calls == [3, 3, 2] and again.examples_written == 8 and again.chunks_written == 2
    np.testing.assert_array_equal(store.sketches()[:, 0], x)
    # an iterable source resumes the same way when it batches the rows as the build did ...
    store._complete[0] = 0
    calls.clear()
    batches = [(x[i:i + 3],) for i in range(0, 20, 3)]  # crosses chunk boundaries
    build_store(tmp_path / "s.zarr", Recorder(), batches, num_examples=20, chunk_rows=6,
                progress=False)
    assert sum(calls) == 6
    # ... and is refused when it batches them otherwise (rows could differ in the last bits)
    store._complete[0] = 0
    calls.clear()
    batches = [(x[i:i + 7],) for i in range(0, 20, 7)]
    with pytest.raises(sk.StoreMismatchError, match="other batches .*batch size 3"):
        build_store(tmp_path / "s.zarr", Recorder(), batches, num_examples=20, chunk_rows=6,
                    progress=False)
    assert calls == []
    build_store(tmp_path / "s.zarr", Recorder(), (x,), batch_size=3, chunk_rows=6,
                progress=False)
    np.testing.assert_array_equal(SketchStore.open(tmp_path / "s.zarr").sketches()[:, 0], x)
    summary = json.dumps(again.format())
    assert "examples" in summary and "MiB" in summary
