"""Sketched per-example gradients and Hessian-vector products of real models.

``GradientSketcher(model, loss_fn, sketch=dict(algo="affd", out_dim=4096, seed=0))`` turns a
torch ``nn.Module`` or a jax ``(apply_fn, params)`` pair into per-example gradient sketches
``(B, D)``, exact per-example gradients, mean gradients, losses, sketched and exact HVPs and the
exact Hessian of small models. This module is framework-neutral: it builds the sketch layout
(``SketchPlan``) and finds the framework's adapter through the backend registry (the backend
whose ``gradients_module`` says ``owns_model(model)``); the adapter does the autodiff.

Layouts (how the N selected parameters meet the sketch):

* ``"flat"``: one ``Sketch`` of the concatenated N-vector (the paper's form).
* ``"blocks"``: an independent sketch per parameter tensor, outputs summed,
  ``Phi x = sum_l Phi_l x_l``. Each block's seed is a hash of ``(seed, block name)``. A tensor
  smaller than ``out_dim`` cannot be sketched on its own by the structured sketches (they need
  ``out_dim <= in_dim``); by default (``small_blocks="group"``) all such tensors are concatenated
  into one block, zero-padded to ``out_dim`` if still smaller, so the small tensors cost one
  transform instead of one each; ``small_blocks="pad"`` zero-pads each small tensor to
  ``out_dim`` and sketches it alone. Zero-padding keeps the map a valid sketch: ``Phi_l`` applied
  to ``(x_l, 0)``. Every block sum is a sketch of the concatenated gradient with
  ``E <Phi x, Phi y> = <x, y>``, and each tensor's per-example gradient is sketched as soon as
  autodiff produces it, so the ``(B, N)`` matrix is never held.

Modes: ``"explicit"`` sketches the computed gradient (autodiff hands each block's cotangent to
``Sketch.apply``); ``"implicit"`` differentiates ``omega -> L(theta0 + Phi^T omega)`` at 0 through
``Sketch.transpose``. Both give the same numbers up to float rounding.

Averages over several batches (``loss``, ``mean_gradient``, ``mean_gradient_sketch``, the HVP
operators, ``hessian``) weight each batch's mean loss by its number of examples, i.e. they are
the mean over all examples (equal weights for equal batch sizes).
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from dataclasses import dataclass, field

import numpy as np

from ._errors import InvalidOptionError, ShapeError, SketchcoreError, unknown

__all__ = ["GradientSketcher", "SketchPlan", "Block", "find_adapter", "default_forward",
           "PerExampleLoopWarning", "DEFAULT_SKETCH", "LAYOUTS", "MODES", "SMALL_BLOCKS", "block_seed"]

LAYOUTS = ("flat", "blocks")
MODES = ("explicit", "implicit")
SMALL_BLOCKS = ("group", "pad")
#: the sketch a ``GradientSketcher`` uses when none is given (copied, never mutated)
DEFAULT_SKETCH = {"algo": "affd", "out_dim": 4096, "seed": 0}
#: largest N for which ``hessian`` builds the dense (N, N) matrix
MAX_HESSIAN_PARAMS = 3000


class PerExampleLoopWarning(UserWarning):
    """The framework could not vectorize per-example gradients of this model (the message says
    why); they are computed one example at a time instead (correct, slower)."""


def default_forward(model_call, batch):
    """The model output of ``batch``: ``model(batch[0])`` for a tuple/list batch,
    ``model(**batch without "labels")`` for a dict batch, ``model(batch)`` for an array."""
    if isinstance(batch, (tuple, list)):
        return model_call(batch[0])
    if isinstance(batch, dict):
        return model_call(**{k: v for k, v in batch.items() if k != "labels"})
    return model_call(batch)


def block_seed(seed: int, name: str) -> int:
    """The seed of block ``name`` of a blocks-layout sketch with seed ``seed`` (a hash, so blocks
    never share randomness, whatever their names or number)."""
    digest = hashlib.blake2b(f"sketchcore/gradient-blocks/{seed}/{name}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass
class Block:
    """One independently sketched piece of the parameter vector.

    ``members`` are indices into the selected tensors (in flattening order), ``size`` their total
    number of entries, ``in_dim`` the input size of ``sketch`` (``> size`` when zero-padded), and
    ``sketch`` a ``sketchcore.Sketch`` or None for the identity (no sketching).
    """

    name: str
    members: list[int]
    size: int
    in_dim: int
    sketch: object | None = field(repr=False)


class SketchPlan:
    """How the selected parameter tensors are sketched: a list of ``Block``s whose sketches are
    summed. Framework-neutral: ``apply``/``lift`` call the ``Sketch`` on whatever array they get
    (numpy, torch, jax, also inside ``vmap``/``grad``/``jit``)."""

    def __init__(self, sizes, names, spec, layout: str, small_blocks: str = "group"):
        from .api import Sketch

        self.sizes = [int(s) for s in sizes]
        self.names = list(names)
        self.num_params = sum(self.sizes)
        self.layout = layout
        offsets = np.cumsum([0, *self.sizes])
        self.offsets = [int(o) for o in offsets[:-1]]
        if spec is None:
            self.out_dim = self.num_params
            self.identity = True
            self.blocks = [Block("all", list(range(len(self.sizes))), self.num_params,
                                 self.num_params, None)]
            self.spec = None
            return
        self.identity = False
        if isinstance(spec, Sketch):
            if layout == "flat" and spec.in_dim != self.num_params:
                raise ShapeError(
                    f"the given Sketch maps {spec.in_dim} -> {spec.out_dim}, but the selected "
                    f"parameters have N={self.num_params} entries; build it with "
                    f"in_dim={self.num_params}, or pass sketch=dict(algo=..., out_dim=..., seed=...)."
                )
            flat_op = spec if layout == "flat" else None
            spec = {"algo": spec.algo, "out_dim": spec.out_dim, "seed": spec.seed,
                    **spec.options}
        else:
            flat_op = None
            if not isinstance(spec, dict):
                raise InvalidOptionError(
                    f"sketch must be a dict like dict(algo='affd', out_dim=4096, seed=0), a "
                    f"sketchcore.Sketch, or None (no sketch), got {type(spec).__name__}."
                )
            missing = [k for k in ("algo", "out_dim", "seed") if k not in spec]
            if missing:
                raise InvalidOptionError(
                    f"sketch dict {spec!r} lacks {missing}; pass e.g. "
                    "dict(algo='affd', out_dim=4096, seed=0)."
                )
        self.spec = dict(spec)
        algo, out_dim, seed = spec["algo"], spec["out_dim"], spec["seed"]
        options = {k: v for k, v in spec.items() if k not in ("algo", "out_dim", "seed")}
        self.out_dim = int(out_dim)

        def build(in_dim, seed_):
            return Sketch(algo=algo, in_dim=in_dim, out_dim=out_dim, seed=seed_, **options)

        if layout == "flat":
            op = flat_op or build(self.num_params, seed)
            self.blocks = [Block("all", list(range(len(self.sizes))), self.num_params,
                                 self.num_params, op)]
            return
        if small_blocks not in SMALL_BLOCKS:
            raise unknown("small_blocks", small_blocks, SMALL_BLOCKS,
                          "'group' sketches all tensors smaller than out_dim as one block.")
        self.blocks = []
        small = []
        for i, (name, size) in enumerate(zip(self.names, self.sizes)):
            if size >= self.out_dim:
                self.blocks.append(Block(name, [i], size, size, build(size, block_seed(seed, name))))
            elif small_blocks == "pad":
                self.blocks.append(Block(name, [i], size, self.out_dim,
                                         build(self.out_dim, block_seed(seed, name))))
            else:
                small.append(i)
        if small:
            size = sum(self.sizes[i] for i in small)
            name = "small-tensors:" + ",".join(self.names[i] for i in small)
            in_dim = max(size, self.out_dim)
            self.blocks.append(Block(name, small, size, in_dim, build(in_dim, block_seed(seed, name))))

    # ---- per-block maps (any array library, batched over leading axes) ------------------------
    def apply(self, block: Block, g):
        """``Phi_b g`` for ``g`` of shape ``(..., block.size)``: ``(..., out_dim)``."""
        if block.sketch is None:
            return g
        if block.in_dim != block.size:
            from ._namespace import namespace_of
            from .kernels import pad_last

            g = pad_last(namespace_of(g), g, block.in_dim)
        return block.sketch.apply(g)

    def lift(self, block: Block, v):
        """``Phi_b^T v`` for ``v`` of shape ``(..., out_dim)``: ``(..., block.size)``."""
        if block.sketch is None:
            return v
        x = block.sketch.transpose(v)
        return x[..., : block.size] if block.in_dim != block.size else x

    # ---- whole-vector maps on numpy (references, small N) -------------------------------------
    def _columns(self, block: Block) -> np.ndarray:
        return np.concatenate([np.arange(self.offsets[i], self.offsets[i] + self.sizes[i])
                               for i in block.members])

    def sketch_vectors(self, x) -> np.ndarray:
        """``Phi x`` for numpy ``x`` of shape ``(..., N)`` in this layout: ``(..., D)``."""
        x = np.asarray(x)
        if x.shape[-1] != self.num_params:
            raise ShapeError(f"expected a last axis of size N={self.num_params}, got {x.shape}.")
        out = None
        for b in self.blocks:
            part = np.asarray(self.apply(b, np.ascontiguousarray(x[..., self._columns(b)])))
            out = part if out is None else out + part
        return out

    def lift_vectors(self, v) -> np.ndarray:
        """``Phi^T v`` for numpy ``v`` of shape ``(..., D)``: ``(..., N)``."""
        v = np.asarray(v)
        if v.shape[-1] != self.out_dim:
            raise ShapeError(f"expected a last axis of size D={self.out_dim}, got {v.shape}.")
        out = np.zeros((*v.shape[:-1], self.num_params), dtype=np.result_type(v, np.float32))
        for b in self.blocks:
            out[..., self._columns(b)] = np.asarray(self.lift(b, v))
        return out

    def describe(self) -> dict:
        """What identifies this layout (stored next to sketches)."""
        return {
            "layout": self.layout,
            "sketch": None if self.identity else {k: _plain(v) for k, v in self.spec.items()},
            "blocks": [{"name": b.name, "size": b.size, "in_dim": b.in_dim} for b in self.blocks],
        }


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def find_adapter(model, loss_fn, **options):
    """The gradients adapter of ``model``'s framework, found through the backend registry: the
    first backend whose ``gradients_module`` says ``owns_model(model)``."""
    from .registry import registry

    reg = registry()
    tried = []
    for be in reg.backends.values():
        path = getattr(be, "gradients_module", None)
        if not path:
            continue
        tried.append(f"{be.name} ({path})")
        # a model of a framework cannot exist before that framework is imported: skip cheaply
        if be.array_module and be.array_module not in sys.modules:
            continue
        module = importlib.import_module(path)
        if module.owns_model(model):
            return module.make_adapter(model, loss_fn, **options)
    raise SketchcoreError(
        f"no registered backend handles models of type {type(model).__module__}."
        f"{type(model).__qualname__}; backends with gradient support: {tried or 'none'}. "
        "Pass a torch nn.Module, or a jax pair (apply_fn, params); see `sketchcore info`."
    )


def _is_array(x) -> bool:
    shape = getattr(x, "shape", None)
    return shape is not None and hasattr(x, "dtype") and len(shape) >= 1


def _leading(x) -> int:
    return int(x.shape[0])


def _slice(x, i0, i1):
    if isinstance(x, dict):
        return {k: _slice(v, i0, i1) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_slice(v, i0, i1) for v in x)
    return x[i0:i1]


def _array_columns(data):
    """``(length, columns)`` when ``data`` is an arrays dataset (one array, a tuple/list of
    arrays with one leading length, or a dict of such arrays), else None (an iterable of
    batches)."""
    if _is_array(data):
        return _leading(data), data
    if isinstance(data, (tuple, list)) and data and all(_is_array(a) for a in data):
        lengths = {_leading(a) for a in data}
        if len(lengths) == 1:
            return lengths.pop(), data
    if isinstance(data, dict) and data and all(_is_array(a) for a in data.values()):
        lengths = {_leading(a) for a in data.values()}
        if len(lengths) == 1:
            return lengths.pop(), data
    return None


class GradientSketcher:
    """Per-example gradient sketches and sketched HVPs of a model (see the module docstring).

    ``model``: a torch ``nn.Module`` (incl. HF transformers models) or a jax pair
    ``(apply_fn, params)`` with ``apply_fn(params, inputs) -> output``. ``loss_fn(output, batch)``
    returns the MEAN loss over the examples of ``batch``. ``sketch``: a dict
    ``dict(algo=..., out_dim=..., seed=..., **algorithm options)`` (default
    ``dict(algo="affd", out_dim=4096, seed=0)``), a ``sketchcore.Sketch`` built
    for N (flat layout; in the blocks layout its algorithm, out_dim, seed and options are used
    per block), or None for no sketch (D = N). ``params``: None for all trainable parameters, or
    fnmatch patterns of names to include (e.g. ``["transformer.h.0.*"]``). ``layout``:
    ``"flat" | "blocks"``; ``mode``: ``"explicit" | "implicit"``; ``forward(model_call, batch)``
    maps a batch to the model output (default: first element of a tuple/list batch, keyword
    arguments of a dict batch without ``"labels"``, or the array itself). ``small_blocks``:
    ``"group" | "pad"`` (blocks layout, see the module docstring). Other keyword options go to
    the framework adapter (torch and jax: ``chunk_size``, examples per vectorized call, default
    the whole batch; torch: ``randomness`` for ``torch.func.vmap``, default ``"different"``).
    """

    def __init__(self, model, loss_fn, sketch=DEFAULT_SKETCH, params=None, layout="flat",
                 mode="explicit", forward=None, *, small_blocks="group", **options):
        if layout not in LAYOUTS:
            raise unknown("layout", layout, LAYOUTS,
                          "'flat' sketches the concatenated parameter vector, 'blocks' each tensor.")
        if mode not in MODES:
            raise unknown("mode", mode, MODES,
                          "'explicit' sketches the gradient, 'implicit' differentiates through Phi^T.")
        if not callable(loss_fn):
            raise InvalidOptionError(
                f"loss_fn must be callable as loss_fn(output, batch) -> scalar mean loss, got "
                f"{loss_fn!r}.")
        if forward is not None and not callable(forward):
            raise InvalidOptionError(
                f"forward must be None or callable as forward(model_call, batch), got {forward!r}.")
        if params is not None:
            if isinstance(params, str):
                params = [params]
            params = list(params)
            if not params or not all(isinstance(p, str) for p in params):
                raise InvalidOptionError(
                    f"params must be None (all trainable) or a non-empty list of fnmatch name "
                    f"patterns such as ['h.0.*'], got {params!r}.")
        self.layout = layout
        self.mode = mode
        self.adapter = find_adapter(model, loss_fn, params=params, forward=forward, **options)
        self.plan = SketchPlan(self.adapter.sizes, self.adapter.names, sketch, layout,
                               small_blocks)

    # ---- identity -------------------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        """N, the number of selected parameter entries."""
        return self.plan.num_params

    @property
    def out_dim(self) -> int:
        """D, the sketch size (N when there is no sketch)."""
        return self.plan.out_dim

    @property
    def param_names(self) -> list[str]:
        """Names of the selected tensors, in flattening order."""
        return list(self.adapter.names)

    @property
    def param_shapes(self) -> list[tuple]:
        """Shapes of the selected tensors, in flattening order."""
        return [tuple(s) for s in self.adapter.shapes]

    def fingerprint(self) -> dict:
        """Model identity: the selected names and shapes, and a sha256 of every parameter value
        (selected or not, plus torch buffers) with its name, shape and dtype."""
        return {"shapes": [list(s) for s in self.param_shapes], "names": self.param_names,
                "hash": self.adapter.values_hash()}

    def __repr__(self) -> str:
        return (f"GradientSketcher(N={self.num_params}, D={self.out_dim}, layout={self.layout!r}, "
                f"mode={self.mode!r}, blocks={len(self.plan.blocks)}, "
                f"sketch={self.plan.spec!r})")

    # ---- per-example ------------------------------------------------------------------------------
    def sketch_batch(self, batch) -> np.ndarray:
        """Per-example gradient sketches of one batch: float32 ``(B, D)``."""
        return self.adapter.per_example_sketches(batch, self.plan, self.mode)

    def full_gradients(self, batch) -> np.ndarray:
        """Exact per-example gradients of the selected parameters: float32 ``(B, N)``."""
        return self.adapter.per_example_gradients(batch, list(range(len(self.adapter.names))))

    def layer_gradients(self, batch, layer: str) -> np.ndarray:
        """Exact per-example gradients of the selected tensors whose name starts with ``layer``
        (the layer-selection baseline): float32 ``(B, n_layer)``."""
        idx = [i for i, n in enumerate(self.adapter.names) if n.startswith(layer)]
        if not idx:
            prefixes = sorted({n.rsplit(".", 1)[0] for n in self.adapter.names})
            raise unknown("layer prefix", layer, prefixes,
                          "Give the start of a selected parameter name.")
        return self.adapter.per_example_gradients(batch, idx)

    def stream(self, data, batch_size: int = 32, ids=None, progress: bool = True):
        """Iterate a dataset and yield ``(ids int64 (b,), sketches float32 (b, D))`` per batch.

        ``data``: arrays (one array, a tuple/list of arrays, or a dict of arrays, all with the
        same leading length) sliced into batches of ``batch_size``; or any iterable of batches (a
        torch DataLoader, a generator; pass ``iter(list_of_batches)`` for a list of bare-array
        batches). ``ids``: per-example ids (length of the dataset), default the running example
        index. Only one batch of gradients exists at a time.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise InvalidOptionError(f"batch_size must be a positive integer, got {batch_size!r}.")
        columns = _array_columns(data)
        if columns is not None:
            total, arrays = columns
            batches = (_slice(arrays, i, min(i + batch_size, total))
                       for i in range(0, total, batch_size))
        else:
            if not hasattr(data, "__iter__"):
                raise InvalidOptionError(
                    f"stream() needs arrays or an iterable of batches, got {type(data).__name__}.")
            batches = iter(data)
            total = None
            dataset = getattr(data, "dataset", None)
            try:
                total = len(dataset) if dataset is not None else None
            except TypeError:
                total = None
        if ids is not None:
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            if total is not None and len(ids) != total:
                raise ShapeError(f"ids has {len(ids)} entries but the dataset has {total} examples.")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="ex", unit_scale=True, desc="sketching gradients",
                       smoothing=0.1)
        start = 0
        try:
            for batch in batches:
                sk = self.sketch_batch(batch)
                b = sk.shape[0]
                if ids is None:
                    batch_ids = np.arange(start, start + b, dtype=np.int64)
                else:
                    if start + b > len(ids):
                        raise ShapeError(f"ids has {len(ids)} entries but the data has more "
                                         f"examples (at least {start + b}).")
                    batch_ids = ids[start:start + b]
                start += b
                if bar is not None:
                    bar.update(b)
                yield batch_ids, sk
        finally:
            if bar is not None:
                bar.close()

    # ---- whole-batch quantities ----------------------------------------------------------------
    def _weighted(self, batches):
        batches = list(batches) if not isinstance(batches, list) else batches
        if not batches:
            raise InvalidOptionError("batches is empty; pass a list with at least one batch.")
        sizes = [self.adapter.batch_size(b) for b in batches]
        total = float(sum(sizes))
        return batches, [s / total for s in sizes]

    def _accumulate(self, batches, one):
        acc, count = None, 0
        for batch in batches:
            b = self.adapter.batch_size(batch)
            value = np.asarray(one(batch), dtype=np.float64) * b
            acc = value if acc is None else acc + value
            count += b
        if acc is None:
            raise InvalidOptionError("batches is empty; pass at least one batch.")
        return acc / count

    def mean_gradient_sketch(self, batches) -> np.ndarray:
        """Sketch of the gradient of the mean loss over ``batches``: float32 ``(D,)``."""
        return self._accumulate(
            batches, lambda b: self.adapter.batch_gradient_sketch(b, self.plan, self.mode)
        ).astype(np.float32)

    def mean_gradient(self, batches) -> np.ndarray:
        """Exact gradient of the mean loss over ``batches``: float32 ``(N,)``."""
        return self._accumulate(batches, self.adapter.batch_gradient).astype(np.float32)

    def loss(self, batches) -> float:
        """Mean loss over ``batches``."""
        return float(self._accumulate(batches, self.adapter.batch_loss))

    def hvp_operator(self, batches):
        """``v (D,) -> Phi H Phi^T v`` (float64 ``(D,)``), H the Hessian of the mean loss over
        ``batches`` (kept as a list), by forward-over-reverse autodiff in this sketcher's mode."""
        batches, weights = self._weighted(batches)
        fn = self.adapter.sketched_hvp(batches, weights, self.plan, self.mode)
        d = self.out_dim

        def op(v):
            v = np.asarray(v)
            if v.shape != (d,):
                raise ShapeError(f"hvp_operator expects a vector of shape ({d},), got {v.shape}.")
            return np.asarray(fn(v), dtype=np.float64)

        return op

    def hvp_full_operator(self, batches):
        """``v (N,) -> H v`` (float64 ``(N,)``): the exact HVP (a reference for small models)."""
        batches, weights = self._weighted(batches)
        fn = self.adapter.hvp(batches, weights)
        n = self.num_params

        def op(v):
            v = np.asarray(v)
            if v.shape != (n,):
                raise ShapeError(f"hvp_full_operator expects shape ({n},), got {v.shape}.")
            return np.asarray(fn(v), dtype=np.float64)

        return op

    def hessian(self, batches, *, max_params: int = MAX_HESSIAN_PARAMS) -> np.ndarray:
        """The exact dense Hessian ``(N, N)`` (float64) of the mean loss over ``batches``."""
        if self.num_params > max_params:
            raise InvalidOptionError(
                f"hessian() builds an (N, N) matrix and N={self.num_params} > max_params="
                f"{max_params}; select fewer parameters (params=[...]), raise max_params, or use "
                "hvp_full_operator / hvp_operator.")
        batches, weights = self._weighted(batches)
        return np.asarray(self.adapter.hessian(batches, weights), dtype=np.float64)

    # ---- parameters and the sketch as plain maps -----------------------------------------------
    def get_flat_params(self) -> np.ndarray:
        """The selected parameters as one vector ``(N,)`` (float32 for fp32/bf16 models)."""
        return self.adapter.get_flat()

    def set_flat_params(self, theta) -> None:
        """Write ``theta (N,)`` into the selected parameters (cast to their dtype)."""
        theta = np.asarray(theta)
        if theta.shape != (self.num_params,):
            raise ShapeError(f"set_flat_params expects shape ({self.num_params},), got "
                             f"{theta.shape}.")
        self.adapter.set_flat(theta)

    def sketch_vectors(self, x) -> np.ndarray:
        """``Phi x`` for numpy ``x (..., N)`` in this sketcher's layout: ``(..., D)``."""
        return self.plan.sketch_vectors(x)

    def lift_vectors(self, v) -> np.ndarray:
        """``Phi^T v`` for numpy ``v (..., D)``: ``(..., N)`` (e.g. ``theta0 + Phi^T omega``)."""
        return self.plan.lift_vectors(v)

