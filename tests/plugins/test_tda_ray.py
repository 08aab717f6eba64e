"""``engine="ray"`` on a local Ray cluster writes the same store as the single-process build."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("torch")
ray = pytest.importorskip("ray")

import models  # noqa: E402  (tests/models.py: shared model helpers)

from sketchcore_tda.api import SketchStore, build_store  # noqa: E402
from sketchcore_tda.ray_engine import SketcherRecipe, split_shards  # noqa: E402


# Ray workers are fresh processes: they find the torch gradients adapter only through the
# installed backend's entry point, not through a stand-in registered in this process.
INSTALLED = models.ensure_gradients_backend("torch")
needs_installed_backend = pytest.mark.skipif(
    not INSTALLED, reason="the installed torch backend does not declare gradients_module yet")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local 2-CPU Ray cluster with its files under a pytest temp dir, shut down afterwards.

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
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=link)
    yield
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(short, ignore_errors=True)


def small_task():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x = torch.randn(150, 20)
    y = torch.randint(0, 3, (150,))

    def loss_fn(output, batch):
        return torch.nn.functional.cross_entropy(output, batch[1])

    return model, loss_fn, (x, y)


def test_split_shards():
    assert split_shards([0, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]
    assert split_shards([3, 7], 8) == [[3], [7]]
    assert sum(split_shards(list(range(17)), 5), []) == list(range(17))


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
    partial = SketchStore.create(tmp_path / "ray.zarr", src.metadata, num_examples=150,
                                 chunk_rows=16, model=src.metadata["model"])
    for c in (0, 5):
        i, s = src.read_chunk(c)
        partial.write_chunk(c, s, i)
    remote = build_store(tmp_path / "ray.zarr", recipe(), data, ids=ids, batch_size=8,
                         chunk_rows=16, engine="ray", num_workers=2, progress=False)
    assert local.chunks_written == 10 and remote.chunks_written == 8
    assert remote.examples_written == 150 - 32
    a, b = SketchStore.open(tmp_path / "local.zarr"), SketchStore.open(tmp_path / "ray.zarr")
    np.testing.assert_array_equal(a.ids(), b.ids())
    np.testing.assert_array_equal(a.sketches(), b.sketches())
    assert a.metadata == b.metadata


def test_ray_build_needs_array_data(tmp_path):
    model, loss_fn, (x, y) = small_task()
    recipe = SketcherRecipe(model, loss_fn, sketch=dict(algo="qk", out_dim=16, seed=0))
    batches = [(x[i:i + 10], y[i:i + 10]) for i in range(0, 150, 10)]
    with pytest.raises(ValueError, match="engine='ray' needs the data as arrays"):
        build_store(tmp_path / "s.zarr", recipe, batches, num_examples=150, engine="ray",
                    progress=False)
