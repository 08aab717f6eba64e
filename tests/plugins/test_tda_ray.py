"""``engine="ray"``: the same store as the single-process build, written by actors that take the
next shard when they finish one; a local cluster that listens on loopback only and needs a token;
failures that name their shard and leave no actor behind.

The tests share one local cluster (started with the engine's own ``start_local_cluster``, so it is
"initialized before the build" from the engine's point of view); a test that needs Ray not to be
running stops it, and the next test that needs it starts it again.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
ray = pytest.importorskip("ray", minversion="2.52")

import models  # noqa: E402  (tests/models.py: shared model helpers)

from sketchcore_tda.api import SketchStore, build_store  # noqa: E402
from sketchcore_tda.build import sketcher_identity  # noqa: E402
from sketchcore_tda.sources import as_source  # noqa: E402
from sketchcore_tda.ray_engine import (  # noqa: E402
    SketcherRecipe,
    build_with_ray,
    split_shards,
    start_local_cluster,
)

# Ray workers are fresh processes: they find the torch gradients adapter only through the
# installed backend's entry point, not through a stand-in registered in this process.
INSTALLED = models.ensure_gradients_backend("torch")
needs_installed_backend = pytest.mark.skipif(
    not INSTALLED, reason="the installed torch backend does not declare gradients_module yet")
needs_proc = pytest.mark.skipif(not Path("/proc/net/tcp").exists(),
                                reason="reads listening sockets from Linux's /proc")

_SHARED: dict = {}  # the module's cluster, while it runs


def _stop_shared() -> None:
    cluster = _SHARED.pop("cluster", None)
    if cluster is not None:
        cluster.shutdown()


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    """Ray's files under a pytest temp dir, no usage stats, auth disabled in the environment (the
    engine's own cluster must turn it on regardless); the shared cluster is stopped at the end.

    Ray puts unix sockets in its temp dir and such paths may not exceed 107 bytes, which
    pytest's temp dirs can; so Ray is given a short symlink (in the system temp dir) to its
    folder under the pytest temp dir."""
    import shutil
    import tempfile

    ray_tmp = tmp_path_factory.mktemp("ray")
    short = tempfile.mkdtemp(prefix="tda")
    link = os.path.join(short, "r")
    os.symlink(ray_tmp, link)
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": link}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    _stop_shared()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def local_ray(ray_env):
    """The shared 2-CPU local cluster (started on first use)."""
    if not ray.is_initialized():
        _SHARED["cluster"] = start_local_cluster(2)
    return _SHARED.get("cluster")


@pytest.fixture
def no_ray(ray_env):
    """Ray not running in this process (the shared cluster is stopped if it was up)."""
    _stop_shared()
    assert not ray.is_initialized()
    yield
    if ray.is_initialized():  # the test failed to leave it stopped; don't leak it
        ray.shutdown()


# ---- helpers ---------------------------------------------------------------------------------

def small_task():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x = torch.randn(150, 20)
    y = torch.randint(0, 3, (150,))

    def loss_fn(output, batch):
        return torch.nn.functional.cross_entropy(output, batch[1])

    return model, loss_fn, (x, y)


def row_sketcher(*, fail_row=None, wait_row=None, store_path=None, chunk_rows=None,
                 wait_s=15.0):
    """A factory of a duck-typed sketcher for data ``(x,)`` whose column 0 is the row number:
    each row's sketch is ``[row, pid of the process that sketched it, 0, 0]``.

    ``fail_row``: the batch holding it raises. ``wait_row``: the batch holding it waits (up to
    ``wait_s``) until every other chunk of the store at ``store_path`` is complete, i.e. until the
    other shards are done. Everything is defined in here so Ray ships it by value."""

    def factory():
        import os as _os
        import time as _time

        import numpy as _np

        class RowSketcher:
            num_params = 4
            out_dim = 4
            sketch = None
            param_names = ["w"]

            def fingerprint(self):
                return {"names": ["w"], "shapes": [[4]], "hash": "0" * 64}

            def sketch_batch(self, batch):
                rows = _np.asarray(batch[0])[:, 0].astype(_np.int64)
                if fail_row is not None and fail_row in rows:
                    raise ValueError(f"cannot sketch row {fail_row}")
                if wait_row is not None and wait_row in rows:
                    from sketchcore_tda.store import SketchStore as _Store

                    mine = [wait_row // chunk_rows]
                    deadline = _time.monotonic() + wait_s
                    while _time.monotonic() < deadline:
                        if _Store.open(store_path).missing_chunks() == mine:
                            break
                        _time.sleep(0.1)
                out = _np.zeros((len(rows), 4), _np.float32)
                out[:, 0] = rows
                out[:, 1] = _os.getpid()
                return out

        return RowSketcher()

    return factory


def row_data(n):
    x = np.zeros((n, 3), np.float32)
    x[:, 0] = np.arange(n)
    return (x,)


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _decode(hex_addr: str) -> str:
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def listening_sockets(pids) -> list[tuple[str, int, str]]:
    """``(ip, port, process name)`` of every TCP socket in LISTEN state held by ``pids``."""
    owner = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[int(link[8:-1])] = name
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and int(f[9]) in owner:  # 0A: LISTEN
                addr, port = f[1].split(":")
                found.append((_decode(addr), int(port, 16), owner[int(f[9])]))
    return found


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


_GCS_CALL = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"x", None, timeout=10)
except Exception as err:
    print("refused:", type(err).__name__)
else:
    print("answered")
"""


def _token_checks(token: str) -> dict:
    """How the cluster this process is connected to answers calls without / with ``token``:
    the GCS (a fresh process's client, with auth off or with the token) and the runtime env
    agent's HTTP server (no Authorization header, or the token)."""
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    out = {}
    gcs = ray.get_runtime_context().gcs_address
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    for name, env in (("gcs without", {"RAY_AUTH_MODE": "disabled"}),
                      ("gcs with", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})):
        run = subprocess.run([sys.executable, "-c", _GCS_CALL, gcs], env={**base, **env},
                             capture_output=True, text=True, timeout=120)
        out[name] = run.stdout.strip() or run.stderr.strip()[-300:]
    port = ray.nodes()[0]["RuntimeEnvAgentPort"]
    for name, headers in (("http without", {}),
                          ("http with", {"Authorization": f"Bearer {token}"})):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/get_runtime_envs_info",
                                     data=b"", headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=20) as reply:
                out[name] = reply.status
        except urllib.error.HTTPError as err:
            out[name] = err.code
    return out


TOKEN_REQUIRED = {"gcs without": "refused: AuthenticationError", "gcs with": "answered",
                  "http without": 401, "http with": 200}


def _alive_shard_writers() -> list:
    from ray._private import state

    return [a for a in state.actors().values()
            if a.get("ActorClassName", "").endswith("ShardWriter") and a.get("State") != "DEAD"]


# ---- tests -----------------------------------------------------------------------------------

def test_split_shards():
    assert split_shards([0, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]
    assert split_shards([3, 7], 8) == [[3], [7]]
    assert sum(split_shards(list(range(17)), 5), []) == list(range(17))


@needs_proc
def test_engine_cluster_is_loopback_only_with_a_token(no_ray, tmp_path):
    """A build without a running cluster starts one that listens on 127.0.0.1 only and refuses
    calls without its (per-cluster, never stored) token, then stops it and restores the
    environment."""
    env_before = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    default_token = Path.home() / ".ray" / "auth_token"
    had_default_token = default_token.exists()
    seen = {}

    class Probe:  # stands in for the progress bar: called by the driver while the cluster runs
        n = 0

        def update(self, k):
            self.n += k
            if not seen:
                seen["sockets"] = listening_sockets(_descendants(os.getpid()))
                seen["token"] = os.environ.get("RAY_AUTH_TOKEN")
                seen["auth"] = _token_checks(seen["token"] or "")

    factory = row_sketcher()
    gs = factory()
    store = SketchStore.create(tmp_path / "s.zarr", sketcher_identity(gs), num_examples=40,
                               chunk_rows=10, model=gs.fingerprint())
    try:
        written = build_with_ray(store, factory, as_source(row_data(40)), store.missing_chunks(),
                                 np.arange(40), 10, 2, bar=Probe())
    finally:
        store.close()
    assert written == 40 and not ray.is_initialized()
    sockets = seen["sockets"]
    assert len(sockets) >= 3, sockets  # at least the GCS, the raylet and the driver
    assert [s for s in sockets if not _loopback(s[0])] == [], sockets
    assert seen["auth"] == TOKEN_REQUIRED
    token = seen["token"].encode()
    for f in (tmp_path / "s.zarr").rglob("*"):
        assert not f.is_file() or token not in f.read_bytes(), f
    assert {k: os.environ.get(k) for k in env_before} == env_before
    assert default_token.exists() == had_default_token


@needs_proc
def test_local_cluster_listens_on_loopback_only(local_ray):
    sockets = listening_sockets(_descendants(os.getpid()))
    assert len(sockets) >= 3, sockets
    assert [s for s in sockets if not _loopback(s[0])] == [], sockets


def test_local_cluster_needs_its_token(local_ray):
    token = os.environ.get("RAY_AUTH_TOKEN")
    assert token and len(token) >= 32
    assert _token_checks(token) == TOKEN_REQUIRED


def test_ray_build_needs_a_ray_with_token_auth(local_ray, tmp_path, monkeypatch):
    monkeypatch.setattr(ray, "__version__", "2.51.2")
    with pytest.raises(ImportError, match=r"ray 2\.51\.2 is installed.*2\.52.*pip install"):
        build_store(tmp_path / "s.zarr", row_sketcher(), row_data(20), batch_size=10,
                    chunk_rows=10, engine="ray", num_workers=2, progress=False)


def test_free_actor_takes_the_next_shard(local_ray, tmp_path):
    """Shards go to whichever actor is free: while one actor is held up by the first shard, the
    other one writes all the rest (handing them out round-robin up front would give the busy
    actor every other shard)."""
    path = tmp_path / "s.zarr"
    factory = row_sketcher(wait_row=0, store_path=str(path), chunk_rows=10)
    build_store(path, factory, row_data(80), batch_size=10, chunk_rows=10, engine="ray",
                num_workers=2, progress=False)  # 8 chunks -> 8 shards of one chunk
    s = SketchStore.open(path).sketches()
    np.testing.assert_array_equal(s[:, 0], np.arange(80))
    slow, rest = set(s[:10, 1]), set(s[10:, 1])
    assert len(slow) == 1 and len(rest) == 1 and slow != rest, (slow, rest)


def test_failed_shard_names_its_chunks_and_kills_the_actors(local_ray, tmp_path):
    """The cluster was started before the build (as a user's ray.init), so the build must kill
    its actors itself. The error is kept, as an interactive session keeps the last traceback:
    its frames still hold the actor handles, so only an explicit kill ends the actors."""
    path = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError, match=r"chunk 3 \(rows 30-39\).*cannot sketch row 35") as err:
        build_store(path, row_sketcher(fail_row=35), row_data(80), batch_size=10,
                    chunk_rows=10, engine="ray", num_workers=2, progress=False)
    deadline = time.monotonic() + 30
    while _alive_shard_writers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive_shard_writers() == []
    assert isinstance(err.value.__cause__, ray.exceptions.RayTaskError)
    assert ray.is_initialized()  # the user's cluster is left running
    # the other chunks were written; running the build again finishes the store
    assert 3 in SketchStore.open(path).missing_chunks()


@needs_installed_backend
def test_ray_build_equals_single_process(local_ray, tmp_path):
    model, loss_fn, data = small_task()
    recipe = SketcherRecipe(model, loss_fn, sketch=dict(algo="fjl", out_dim=64, seed=0))
    ids = np.arange(150) * 2 + 1
    local = build_store(tmp_path / "local.zarr", recipe(), data, ids=ids, batch_size=8,
                        chunk_rows=16, progress=False)
    # the Ray build gets the sketcher itself (shipped as a recipe) and resumes a partial store:
    # chunks 0 and 5 already there, the other 8 written by the tasks
    src = SketchStore.open(tmp_path / "local.zarr")
    with SketchStore.create(tmp_path / "ray.zarr", src.metadata, num_examples=150,
                            chunk_rows=16, model=src.metadata["model"],
                            extra=src.metadata) as partial:
        for c in (0, 5):
            i, s = src.read_chunk(c)
            partial.write_chunk(c, s, i, inputs=src.chunk_inputs(c))
    remote = build_store(tmp_path / "ray.zarr", recipe(), data, ids=ids, batch_size=8,
                         chunk_rows=16, engine="ray", num_workers=2, progress=False)
    assert local.chunks_written == 10 and remote.chunks_written == 8
    assert remote.examples_written == 150 - 32
    a, b = SketchStore.open(tmp_path / "local.zarr"), SketchStore.open(tmp_path / "ray.zarr")
    np.testing.assert_array_equal(a.ids(), b.ids())
    # equal to float rounding: Ray workers run torch with another thread count (Ray sets
    # OMP_NUM_THREADS=1), so a BLAS call may sum in another order and differ in the last bits
    np.testing.assert_allclose(a.sketches(), b.sketches(), rtol=1e-5, atol=1e-6)
    assert a.metadata == b.metadata


def test_ray_build_needs_array_data(tmp_path):
    model, loss_fn, (x, y) = small_task()
    recipe = SketcherRecipe(model, loss_fn, sketch=dict(algo="qk", out_dim=16, seed=0))
    batches = [(x[i:i + 10], y[i:i + 10]) for i in range(0, 150, 10)]
    with pytest.raises(ValueError, match="engine='ray' needs the data as arrays"):
        build_store(tmp_path / "s.zarr", recipe, batches, num_examples=150, engine="ray",
                    progress=False)
