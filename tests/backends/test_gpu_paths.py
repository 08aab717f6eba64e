"""Every GPU path against the numpy reference: cupy, torch on CUDA, jax on GPU (marked ``gpu``).

For each path: every algorithm x preconditioner, forward and transpose, float32 and float64, at
small and at 2^20-sized inputs, equals the numpy reference to float rounding; the parameters the
kernels use on the device are bit-identical to the host parameters; outputs stay on the input's
device with its dtype; after the first call nothing is copied between host and device (checked
with the CUDA activity profiler: no device-to-host copy, and no host-to-device copy for operators
that keep their parameters); torch on CUDA never synchronizes; the conformance suite passes with
device arrays; per-example gradient sketches of a GPT-2 config (torch) and an MLP (jax) computed
on the device equal the reference sketch of the same gradients.

A path without its library or without a device is skipped with the reason, never passed.
``benchmarks/gpu_check.py`` runs this file (and the cupy kernel tests of test_cupy.py) with
``-m gpu`` on a GPU machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch/cupy

import contextlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import sketchcore as sk  # noqa: E402
from sketchcore.param_cache import arrays_sha256  # noqa: E402
from sketchcore.testing import algorithm_variants  # noqa: E402

pytestmark = pytest.mark.gpu

VARIANTS = algorithm_variants()
VARIANT_IDS = [f"{a}-{o['preconditioner']}" if o else a for a, o in VARIANTS]
RTOL = {"float32": 2e-5, "float64": 1e-12}
#: (N, D, batch): tiny, odd-sized, and large enough for the multi-pass kernels (2^20 < N)
SIZES = {"float32": [(5000, 257, (2, 2)), ((1 << 20) + 3, 4096, (2,))],
         "float64": [(1000, 64, (3,))]}


# ---- the three paths --------------------------------------------------------------------------
class Path:
    """One GPU path: how to put host arrays on its device and bring them back, and why it cannot
    run here (None when it can)."""

    name = ""
    backend = ""

    def __init__(self) -> None:
        self.reason = self._probe()

    def _probe(self) -> str | None:
        raise NotImplementedError

    def put(self, a: np.ndarray):
        raise NotImplementedError

    def get(self, a) -> np.ndarray:
        raise NotImplementedError

    def same_device(self, a, b) -> bool:
        raise NotImplementedError

    def on_gpu(self, a) -> bool:
        raise NotImplementedError

    def xp(self):
        return sk.resolve_backend(self.backend, None).namespace()

    def float64(self):
        return contextlib.nullcontext()

    def sync(self) -> None:
        pass


class CupyPath(Path):
    name, backend = "cupy", "cupy"

    def _probe(self):
        try:
            import cupy
        except Exception as err:  # noqa: BLE001
            return f"cupy is not importable ({type(err).__name__}: {err})"
        try:
            if not cupy.cuda.is_available():
                return "no CUDA device for cupy (cupy.cuda.is_available() is False)"
        except Exception as err:  # noqa: BLE001
            return f"no CUDA device for cupy ({type(err).__name__}: {err})"
        return _backend_reason("cupy")

    def put(self, a):
        import cupy

        return cupy.asarray(a)

    def get(self, a):
        import cupy

        return cupy.asnumpy(a)

    def same_device(self, a, b):
        return a.device.id == b.device.id

    def on_gpu(self, a):
        import cupy

        return isinstance(a, cupy.ndarray)

    def sync(self):
        import cupy

        cupy.cuda.get_current_stream().synchronize()


class TorchCudaPath(Path):
    name, backend = "torch-cuda", "torch"

    def _probe(self):
        try:
            import torch
        except Exception as err:  # noqa: BLE001
            return f"torch is not importable ({type(err).__name__}: {err})"
        if not torch.cuda.is_available():
            return (f"no CUDA device for torch {torch.__version__} "
                    "(torch.cuda.is_available() is False)")
        return _backend_reason("torch")

    def put(self, a):
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to("cuda")

    def get(self, a):
        return a.detach().cpu().numpy()

    def same_device(self, a, b):
        return a.device == b.device

    def on_gpu(self, a):
        return a.device.type == "cuda"

    def sync(self):
        import torch

        torch.cuda.synchronize()


class JaxGpuPath(Path):
    name, backend = "jax-gpu", "jax"

    def _probe(self):
        try:
            import jax
        except Exception as err:  # noqa: BLE001
            return f"jax is not importable ({type(err).__name__}: {err})"
        try:
            gpus = [d for d in jax.devices() if d.platform == "gpu"]
        except Exception as err:  # noqa: BLE001
            return f"jax found no device ({type(err).__name__}: {err})"
        if not gpus:
            return (f"no GPU device for jax {jax.__version__} "
                    f"(jax.default_backend() is {jax.default_backend()!r})")
        return _backend_reason("jax")

    def put(self, a):
        import jax

        gpu = next(d for d in jax.devices() if d.platform == "gpu")
        return jax.device_put(a, gpu)

    def get(self, a):
        return np.asarray(a)

    def same_device(self, a, b):
        return a.devices() == b.devices()

    def on_gpu(self, a):
        return all(d.platform == "gpu" for d in a.devices())

    def float64(self):
        import jax

        ctx = getattr(jax, "enable_x64", None)
        if ctx is not None:
            return ctx(True)
        from jax.experimental import enable_x64  # older releases

        return enable_x64()

    def sync(self):
        pass  # callers block on their outputs


def _backend_reason(name: str) -> str | None:
    info = {b.name: b for b in sk.backends()}.get(name)
    if info is None:
        return f"no backend {name!r} is registered (is sketchcore installed with pip install -e .?)"
    return None if info.usable else f"backend {name!r} is not usable: {info.reason}"


_PATHS = {p.name: p for p in (CupyPath, TorchCudaPath, JaxGpuPath)}
_PROBED: dict[str, Path] = {}


@pytest.fixture(params=list(_PATHS))
def path(request) -> Path:
    name = request.param
    if name not in _PROBED:
        _PROBED[name] = _PATHS[name]()
    p = _PROBED[name]
    if p.reason is not None:
        pytest.skip(f"{name}: {p.reason}")
    return p


_REFERENCE: dict = {}


def _reference(op, direction: str, a: np.ndarray, tag: tuple) -> np.ndarray:
    """The numpy reference's output, computed once for all three paths (the large cases take
    about a second each)."""
    key = (tag, direction, a.dtype.str)
    if key not in _REFERENCE:
        fn = op.apply if direction == "apply" else op.transpose
        _REFERENCE[key] = fn(a, backend="numpy")
    return _REFERENCE[key]


def _close(got, want, rtol, floor):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, floor, 1e-30)
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol:g} * {scale:.3g}"


# ---- outputs against the reference ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("algo", "opts"), VARIANTS, ids=VARIANT_IDS)
def test_outputs_equal_the_numpy_reference(path, algo, opts, dtype):
    with path.float64() if dtype == "float64" else contextlib.nullcontext():
        for n, d, batch in SIZES[dtype]:
            if algo == "dense" and n > 10_000:
                continue  # O(N D) with host-regenerated blocks: covered at the small sizes
            op = sk.Sketch(algo=algo, in_dim=n, out_dim=d, seed=7, **opts)
            rng = np.random.default_rng(n + d)
            x = rng.standard_normal((*batch, n)).astype(dtype)
            y = rng.standard_normal((*batch, d)).astype(dtype)
            xd, yd = path.put(x), path.put(y)
            got, got_t = op.apply(xd), op.transpose(yd)
            for a, like in ((got, xd), (got_t, yd)):
                assert path.on_gpu(a) and path.same_device(a, like), f"{algo}: left the device"
                assert str(a.dtype).endswith(dtype), f"{algo}: dtype {a.dtype} for {dtype} input"
            rows = max(1, int(np.prod(batch)))
            tag = (algo, tuple(sorted(opts.items())), n, d, batch)
            floor = float(np.linalg.norm(x)) / np.sqrt(d * rows)
            _close(path.get(got), _reference(op, "apply", x, tag), RTOL[dtype], floor)
            floor_t = float(np.linalg.norm(y)) / np.sqrt(d * rows)
            _close(path.get(got_t), _reference(op, "transpose", y, tag), RTOL[dtype], floor_t)


# ---- parameters ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("algo", "opts"), VARIANTS, ids=VARIANT_IDS)
def test_device_parameters_are_bit_identical_to_the_host_ones(path, algo, opts):
    """The arrays the kernels read on the device (cached by the first call) equal the host
    parameters bit for bit: float64 as they are, float32 as numpy's rounding of them."""
    for dtype in ("float32", "float64"):
        with path.float64() if dtype == "float64" else contextlib.nullcontext():
            op = sk.Sketch(algo=algo, in_dim=3000, out_dim=96, seed=11, **opts)
            params = op.algorithm.params
            op.apply(np.ones((1, 3000)), backend="numpy")  # every derived host array exists
            op.transpose(np.ones((1, 96)), backend="numpy")
            x = path.put(np.ones((2, 3000), dtype=dtype))
            if path.name != "jax-gpu":  # jax programs hold their parameters as constants
                op.apply(x)
                op.transpose(path.put(np.ones((2, 96), dtype=dtype)))
            xp = path.xp()
            moved = {}
            for name, host in params.host.items():
                index = host.dtype.kind in "iub"
                dev = path.get(params.get(xp, x, name, index=index))
                want = host if index or host.dtype == np.dtype(dtype) else host.astype(dtype)
                assert dev.dtype == want.dtype or index, (name, dev.dtype, want.dtype)
                assert np.array_equal(dev.astype(want.dtype, copy=False).view(np.uint8),
                                      np.ascontiguousarray(want).view(np.uint8)), \
                    f"{algo}: parameter {name!r} ({dtype}) differs from the host copy"
                moved[name] = dev.astype(host.dtype, copy=False)
            if dtype == "float64":
                primary = {k: v for k, v in moved.items() if k not in params.derived}
                assert arrays_sha256(primary) == params.sha256(), f"{algo}: digest differs"


# ---- devices, dtypes, no host round trip ---------------------------------------------------------
def _cuda_activity(run):
    """(kernel launches, device-to-host copies, host-to-device copies) seen by the CUDA activity
    profiler (CUPTI, through torch) while ``run()`` executes; None when it cannot be used."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except Exception:  # noqa: BLE001
        return None
    if not torch.cuda.is_available():
        return None
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
    names = [e.name for e in prof.events()]
    copies = [n for n in names if "memcpy" in n.lower()]
    kernels = [n for n in names if n not in copies and "memset" not in n.lower()]
    return (len(kernels), [n for n in copies if "DtoH" in n], [n for n in copies if "HtoD" in n])


@pytest.mark.parametrize(("algo", "opts"), VARIANTS, ids=VARIANT_IDS)
def test_no_host_round_trip_after_the_first_call(path, algo, opts):
    op = sk.Sketch(algo=algo, in_dim=(1 << 16) + 5, out_dim=512, seed=3, **opts)
    rng = np.random.default_rng(0)
    x = path.put(rng.standard_normal((4, op.in_dim)).astype(np.float32))
    y = path.put(rng.standard_normal((4, 512)).astype(np.float32))
    out = {}

    def run():
        out["y"], out["x"] = op.apply(x), op.transpose(y)
        for a in out.values():
            getattr(a, "block_until_ready", lambda: None)()
        path.sync()

    run()  # first call: parameters move to the device, programs compile
    seen = _cuda_activity(run)
    if seen is None:
        pytest.skip("the CUDA activity profiler (torch.profiler with a CUDA torch) is not "
                    "available to watch the copies")
    kernels, dtoh, htod = seen
    if kernels == 0:
        pytest.skip("the CUDA activity profiler recorded no kernel at all: it cannot see "
                    f"{path.name}'s launches here")
    assert path.on_gpu(out["y"]) and path.same_device(out["y"], x)
    assert path.on_gpu(out["x"]) and path.same_device(out["x"], y)
    assert not dtoh, f"{algo}: device-to-host copies after the first call: {dtoh}"
    if op.nbytes > 0:  # the dense baseline regenerates its blocks on the host by design
        assert not htod, f"{algo}: host-to-device copies after the first call: {htod}"


@pytest.mark.parametrize(("algo", "opts"), [v for v in VARIANTS if v[0] != "dense"],
                         ids=[i for i in VARIANT_IDS if i != "dense"])
def test_torch_cuda_never_synchronizes(algo, opts):
    p = _PROBED.setdefault("torch-cuda", TorchCudaPath())
    if p.reason is not None:
        pytest.skip(f"torch-cuda: {p.reason}")
    import torch

    op = sk.Sketch(algo=algo, in_dim=20_000, out_dim=256, seed=5, **opts)
    x = torch.randn(3, 20_000, device="cuda")
    y = torch.randn(3, 256, device="cuda")
    op.apply(x), op.transpose(y)  # first call: parameters move to the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        op.apply(x), op.transpose(y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ---- conformance suite with device arrays --------------------------------------------------------
def test_conformance_suite_on_the_device(path):
    import array_api_compat.numpy as anp

    from sketchcore.testing import check_backend

    if path.name == "cupy":
        pytest.skip("cupy: test_cupy.py::test_gpu_backend_conforms runs the suite")
    be = sk.resolve_backend(path.backend, None)
    if path.name == "torch-cuda":
        base = type(be)

        class TorchOnCuda(base):
            def asarray(self, x):
                return base.asarray(self, x).to("cuda")

        be = TorchOnCuda()
    assert check_backend(be, reference=sk.Backend(anp)) > 40


# ---- per-example gradients on the device ---------------------------------------------------------
def _layouts():
    from sketchcore.gradients import LAYOUTS

    return list(LAYOUTS)


@pytest.mark.parametrize("layout", ["flat", "blocks", "factored"])
def test_torch_cuda_gradient_sketches_equal_the_reference(layout):
    p = _PROBED.setdefault("torch-cuda", TorchCudaPath())
    if p.reason is not None:
        pytest.skip(f"torch-cuda: {p.reason}")
    if layout not in _layouts():
        pytest.skip(f"layout {layout!r} does not exist in this version (layouts: {_layouts()})")
    pytest.importorskip("transformers")
    import models

    from sketchcore.gradients import GradientSketcher

    model = models.tiny_gpt2(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=32).cuda()
    batch = models.token_batch(4, seq_len=16, vocab_size=256)
    gs = GradientSketcher(model, models.causal_lm_loss, layout=layout,
                          sketch=dict(algo="affd", out_dim=1024, seed=0))
    assert gs.adapter.device.type == "cuda"
    got = gs.sketch_batch(batch)
    full = gs.full_gradients(batch)
    assert got.shape == (4, 1024) and np.all(np.isfinite(got))
    _close(got, gs.apply_sketch(full), 1e-3, float(np.linalg.norm(full)) / np.sqrt(1024 * 4))
    implicit = GradientSketcher(model, models.causal_lm_loss, layout=layout, mode="implicit",
                                sketch=dict(algo="affd", out_dim=1024, seed=0))
    _close(implicit.sketch_batch(batch), got, 1e-3, float(np.linalg.norm(got)) / np.sqrt(4096))


@pytest.mark.parametrize("layout", ["flat", "blocks"])
def test_jax_gpu_gradient_sketches_equal_the_reference(layout):
    p = _PROBED.setdefault("jax-gpu", JaxGpuPath())
    if p.reason is not None:
        pytest.skip(f"jax-gpu: {p.reason}")
    pytest.importorskip("equinox")
    import jax
    import models

    from sketchcore.gradients import GradientSketcher

    apply_fn, params = models.jax_mlp((64, 32, 10), seed=0)
    params = jax.device_put(params, next(d for d in jax.devices() if d.platform == "gpu"))
    rng = np.random.default_rng(0)
    batch = (rng.standard_normal((6, 64)).astype(np.float32), rng.integers(0, 10, 6))
    gs = GradientSketcher((apply_fn, params), models.jax_cross_entropy, layout=layout,
                          sketch=dict(algo="affd", out_dim=256, seed=0))
    assert gs.adapter.device.platform == "gpu"
    got = gs.sketch_batch(batch)
    full = gs.full_gradients(batch)
    _close(got, gs.apply_sketch(full), 1e-4, float(np.linalg.norm(full)) / np.sqrt(256 * 6))
