"""Scale-out: the missing row chunks of a store, split into shards that Ray actors write.

``num_workers`` Ray actors each build the sketcher once (from a picklable recipe: model, loss and
sketch settings, see ``SketcherRecipe``) and then write shards: a shard is a run of row chunks
with its rows of the data; the actor writes those chunks of the same store, each marked complete
after its data (store.py). Shards are handed out as a work queue: every actor starts with one and
gets the next when it returns one, so a slow shard holds up one actor, not a share of the rest.
The driver shows progress from the completion markers. On any failure the actors are killed and
the error names the shard's chunks.

If Ray is not initialized yet, ``start_local_cluster`` starts a cluster of ``num_workers`` CPUs
on this machine only: every Ray process listens on 127.0.0.1, and token authentication is on
with a random token made for that cluster (held in the environment of the driver and the Ray
processes only, never written to the store); it is shut down afterwards. Ray older than
``MIN_RAY_VERSION`` (which has no token authentication) is refused.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass

from .chunk_writer import resolve_sketcher, write_chunks
from .store import SketchStore

__all__ = ["build_with_ray", "split_shards", "SketcherRecipe", "recipe_of",
           "start_local_cluster", "LocalCluster", "require_ray", "MIN_RAY_VERSION"]

log = logging.getLogger(__name__)

# the first Ray release with token authentication (RAY_AUTH_MODE=token)
MIN_RAY_VERSION = (2, 52, 0)
LOOPBACK = "127.0.0.1"
_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
SHARDS_PER_WORKER = 4  # more shards than workers: finer progress, less left for the last one


@dataclass
class SketcherRecipe:
    """What a worker needs to build its own ``GradientSketcher`` (picklable with the model)."""

    model: object
    loss_fn: object
    sketch: object = None
    params: list | None = None
    layout: str = "flat"
    mode: str = "explicit"
    forward: object = None

    def __call__(self):
        from sketchcore.gradients import GradientSketcher

        return GradientSketcher(self.model, self.loss_fn, sketch=self.sketch, params=self.params,
                                layout=self.layout, mode=self.mode, forward=self.forward)


def recipe_of(sketcher):
    """A picklable recipe for ``sketcher``: factories are used as they are; a
    ``GradientSketcher`` is described by its model, loss, forward, sketch spec, selected
    parameter names, layout and mode."""
    if not hasattr(sketcher, "sketch_batch"):
        return sketcher  # already a factory
    adapter = getattr(sketcher, "adapter", None)
    plan = getattr(sketcher, "plan", None)
    model = getattr(adapter, "model", None)
    if model is None or plan is None:
        raise TypeError(
            f"engine='ray' cannot ship {type(sketcher).__name__} to workers; pass a zero-argument "
            "factory that builds it instead, e.g. sketchcore_tda.ray_engine.SketcherRecipe(model, "
            "loss_fn, sketch=..., layout=..., mode=...)."
        )
    return SketcherRecipe(
        model=model, loss_fn=adapter.loss_fn, sketch=plan.spec,
        params=list(sketcher.param_names), layout=sketcher.layout, mode=sketcher.mode,
        forward=getattr(adapter, "forward", None),
    )


def split_shards(chunks: list[int], num_shards: int) -> list[list[int]]:
    """Split chunk indices into at most ``num_shards`` runs of consecutive list entries."""
    num_shards = max(1, min(num_shards, len(chunks)))
    base, extra = divmod(len(chunks), num_shards)
    out, i = [], 0
    for s in range(num_shards):
        n = base + (s < extra)
        out.append(chunks[i:i + n])
        i += n
    return out


class ShardWriter:
    """A Ray actor: builds the sketcher once, then writes shards of one store."""

    def __init__(self, store_path: str, recipe, ids, batch_size: int) -> None:
        self.store = SketchStore.open(store_path)
        self.gs = resolve_sketcher(recipe)
        self.ids = ids
        self.batch_size = batch_size

    def write(self, chunks: list[int], source, offset: int) -> int:
        """Sketch and write ``chunks``; rows of ``source`` start at store row ``offset``."""
        return write_chunks(self.store, self.gs, source, chunks, self.ids, self.batch_size,
                            offset=offset)


def require_ray():
    """The ``ray`` module, if it is installed and recent enough (token authentication)."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("engine='ray' needs ray: pip install 'sketchcore[ray]' "
                          "(or use engine='local').") from err
    found = _version_tuple(getattr(ray, "__version__", ""))
    if found is not None and found < MIN_RAY_VERSION:
        need = ".".join(map(str, MIN_RAY_VERSION))
        raise ImportError(
            f"engine='ray' needs ray>={need} (the first release with token authentication, "
            f"which the build's local cluster uses); ray {ray.__version__} is installed. "
            f"Upgrade it: pip install -U 'ray>={need}' (or pip install -U 'sketchcore[ray]'), "
            "or use engine='local'."
        )
    return ray


def _version_tuple(version: str):
    """``(major, minor, patch)`` of a version string such as ``2.52.1`` or ``3.0.0.dev0``;
    None if it does not start with numbers."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    return None if m is None else tuple(int(g or 0) for g in m.groups())


class LocalCluster:
    """A Ray cluster on this machine, started by :func:`start_local_cluster`; ``shutdown()``
    stops it and puts the authentication environment back as it was."""

    def __init__(self, saved_env: dict) -> None:
        self._saved_env = saved_env
        self._running = True

    def shutdown(self) -> None:
        if not self._running:
            return
        self._running = False
        import ray

        try:
            ray.shutdown()
        finally:
            _restore_env(self._saved_env)
            _reload_auth_config()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def start_local_cluster(num_workers: int) -> LocalCluster:
    """Start a Ray cluster with ``num_workers`` CPUs on this machine only and connect to it.

    Every Ray process of it listens on 127.0.0.1 (none on all interfaces), and token
    authentication is on, with a random token made for this cluster: it is passed to the Ray
    processes in their environment (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``), set in this
    process's environment while the cluster runs, and written nowhere. The cluster is checked
    after the start (node address, authentication mode); if either is not as asked, it is shut
    down and RuntimeError raised. Stop it with ``.shutdown()`` (or use it as a context manager).
    """
    ray = require_ray()
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
    if ray.is_initialized():
        raise RuntimeError("Ray is already initialized in this process; start_local_cluster "
                           "starts a new cluster (call ray.shutdown() first).")
    saved = {k: os.environ.get(k) for k in _AUTH_ENV}
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    try:
        _reload_auth_config()
        with _loopback_node_address(ray):
            # address="local": always a new cluster here (never one named by RAY_ADDRESS)
            ray.init(address="local", num_cpus=num_workers, include_dashboard=False,
                     dashboard_host=LOOPBACK, log_to_driver=False, _node_ip_address=LOOPBACK)
        _check_local_cluster(ray)
    except BaseException:
        try:
            if ray.is_initialized():
                ray.shutdown()
        finally:
            _restore_env(saved)
            _reload_auth_config()
        raise
    return LocalCluster(saved)


@contextmanager
def _loopback_node_address(ray):
    """Let ``ray.init`` keep 127.0.0.1 as the node address.

    ``ray.init`` replaces a loopback ``_node_ip_address`` by this machine's routable address
    unless Ray runs in its single-machine mode (its default on macOS and Windows, where its
    processes bind 127.0.0.1); that mode is a module flag read at import time from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, so it is switched for the duration of the call.
    With 127.0.0.1 as the node address, the GCS, raylet, workers and agents listen on it only.
    """
    try:
        from ray._private import ray_constants
    except ImportError:  # another layout: the check after the start still catches it
        yield
        return
    had = hasattr(ray_constants, "ENABLE_RAY_CLUSTER")
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if had:
            ray_constants.ENABLE_RAY_CLUSTER = saved
        else:
            del ray_constants.ENABLE_RAY_CLUSTER


def _check_local_cluster(ray) -> None:
    """Refuse a cluster that did not come up as asked: loopback node, token authentication."""
    addresses = sorted({n.get("NodeManagerAddress") for n in ray.nodes()})
    if addresses != [LOOPBACK]:
        raise RuntimeError(f"the local Ray cluster came up on {addresses}, not on {LOOPBACK} "
                           f"only (ray {ray.__version__}); refusing to use it.")
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode
    except ImportError:  # the environment asked for it; nothing more to check with
        return
    if get_authentication_mode() != AuthenticationMode.TOKEN:
        raise RuntimeError(f"the local Ray cluster came up without token authentication "
                           f"(ray {ray.__version__}); refusing to use it.")


def _reload_auth_config() -> None:
    """Make this process's Ray read the authentication settings from the environment again:
    Ray caches its configuration (including ``RAY_AUTH_MODE``) and the token on first use."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:
        return
    Config.initialize("")  # the configuration first, then the token (as Ray itself does)
    AuthenticationTokenLoader.instance().reset_cache()


def _restore_env(saved: dict) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _describe_chunks(store, chunks) -> str:
    """``chunk 3 (rows 30-39)`` or ``chunks 3-5 (rows 30-59), 8 (rows 80-89)``: runs of
    consecutive chunks with their rows."""
    runs: list[list[int]] = []
    for c in chunks:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    parts = []
    for a, b in runs:
        rows = f"rows {store.chunk_range(a)[0]}-{store.chunk_range(b)[1] - 1}"
        parts.append(f"{a} ({rows})" if a == b else f"{a}-{b} ({rows})")
    return ("chunk " if len(chunks) == 1 else "chunks ") + ", ".join(parts)


def build_with_ray(store, sketcher, source, missing, ids, batch_size: int, num_workers: int,
                   bar=None) -> int:
    """Write the ``missing`` chunks of ``store`` with Ray actors; returns the rows written.

    Uses the Ray cluster this process is connected to, else starts one with
    :func:`start_local_cluster` and shuts it down at the end. The actors are killed at the end
    whatever happens; a failed shard raises RuntimeError naming its chunks (the chunks written
    before stay complete, so running the same build again finishes the store)."""
    ray = require_ray()
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
    recipe = recipe_of(sketcher)
    shards = split_shards(list(missing), num_workers * SHARDS_PER_WORKER)
    if not shards or not shards[0]:
        return 0
    cluster = None if ray.is_initialized() else start_local_cluster(num_workers)
    actors = []
    try:
        writer = ray.remote(num_cpus=1, max_restarts=0)(ShardWriter)
        recipe_ref, ids_ref = ray.put(recipe), ray.put(ids)
        actors = [writer.remote(str(store.path), recipe_ref, ids_ref, batch_size)
                  for _ in range(min(num_workers, len(shards)))]
        queue = iter(range(len(shards)))
        in_flight = {}  # ObjectRef -> (shard index, actor index)
        per_actor = [0] * len(actors)

        def hand_out(a: int) -> None:
            k = next(queue, None)
            if k is None:
                return
            start = store.chunk_range(shards[k][0])[0]
            stop = store.chunk_range(shards[k][-1])[1]
            ref = actors[a].write.remote(shards[k], source.subset(start, stop), start)
            in_flight[ref] = (k, a)

        for a in range(len(actors)):
            hand_out(a)
        written = 0
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in done:
                k, a = in_flight.pop(ref)
                try:
                    written += int(ray.get(ref))
                except Exception as err:  # noqa: BLE001 - re-raised with the shard named
                    cause = getattr(err, "cause", None)  # the worker's own exception
                    if not isinstance(cause, BaseException):
                        cause = err
                    raise RuntimeError(
                        f"engine='ray': shard {k + 1} of {len(shards)} "
                        f"({_describe_chunks(store, shards[k])}) failed in a Ray worker: "
                        f"{type(cause).__name__}: {cause}\nThe chunks written so far are kept; "
                        "running the same build again resumes the store."
                    ) from err
                per_actor[a] += 1
                hand_out(a)
            if bar is not None:
                missing_rows = sum(hi - lo for lo, hi in map(store.chunk_range,
                                                              store.missing_chunks()))
                bar.update(max(0, store.num_examples - missing_rows - bar.n))
        log.debug("engine='ray': shards written per actor: %s", per_actor)
        return written
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone; never hide the build's own error
                pass
        if cluster is not None:
            cluster.shutdown()
