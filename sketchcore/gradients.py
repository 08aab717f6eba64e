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
* ``"factored"``: the blocks layout, except that the weight of every layer whose per-example
  gradient is a sum of outer products ``G = sum_t u_t v_t^T`` (linear, embedding and convolution
  layers; the adapter says which, ``factorable()``) gets a Kronecker map
  ``Phi_l vec(G) = vec(R G C^T)`` (``KroneckerSketch``: ``R`` sketches the weight's first axis,
  ``C`` the rest, ``k_rows * k_cols = out_dim``). Then ``Phi_l vec(G) = sum_t (R u_t) x (C v_t)``
  is computed from the layer's inputs and output gradients without forming ``G``
  (``per_example_sketches`` in explicit mode); everything else about the map is as in
  ``"blocks"``. The sketch's algorithm, seed and options make ``R`` and ``C`` (seeds hashed from
  the seed, the tensor's name and the side); ``factor_algo`` in the sketch dict gives the
  factors another algorithm (used without the sketch's options).

Modes: ``"explicit"`` sketches the computed gradient (autodiff hands each block's cotangent to
``Sketch.apply``); ``"implicit"`` differentiates ``omega -> L(theta0 + Phi^T omega)`` at 0 through
``Sketch.transpose``. Both give the same numbers up to float rounding.

Averages over several batches (``loss``, ``mean_gradient``, ``mean_gradient_sketch``, the HVP
operators, ``hessian``) weight each batch's mean loss by its number of examples, i.e. they are
the mean over all examples (equal weights for equal batch sizes).
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._deprecated import renamed_method
from ._errors import InvalidOptionError, ShapeError, SketchcoreError, describe_value, unknown
from .kron_plans import next_pow2

__all__ = ["GradientSketcher", "SketchPlan", "Block", "KroneckerSketch", "AdapterBase",
           "find_adapter",
           "default_forward", "PerExampleLoopWarning", "MaterializedGradientWarning",
           "DEFAULT_SKETCH", "LAYOUTS", "MODES", "SMALL_BLOCKS", "block_seed", "factor_seed",
           "kronecker_dims"]

LAYOUTS = ("flat", "blocks", "factored")
MODES = ("explicit", "implicit")
SMALL_BLOCKS = ("group", "pad")
#: the sketch a ``GradientSketcher`` uses when none is given (copied, never mutated)
DEFAULT_SKETCH = {"algo": "affd", "out_dim": 4096, "seed": 0}
#: the algorithm of the Kronecker factors of the factored layout when the sketch gives no
#: ``factor_algo`` (None: the sketch's own ``algo``, with its options)
DEFAULT_FACTOR_ALGO = None
#: largest N for which ``hessian`` builds the dense (N, N) matrix
MAX_HESSIAN_PARAMS = 3000


class PerExampleLoopWarning(UserWarning):
    """The framework could not vectorize per-example gradients of this model (the message says
    why); they are computed one example at a time instead (correct, slower)."""


class MaterializedGradientWarning(UserWarning):
    """The factored layout could not sketch a layer's weight from its inputs and output
    gradients (the message says why: e.g. the tensor is also read outside its layer's forward);
    its per-example gradient is materialized and sketched with the same map (same numbers,
    slower)."""


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


def factor_seed(seed: int, name: str, side: str) -> int:
    """The seed of the ``side`` (``"rows"`` or ``"cols"``) factor of tensor ``name``'s Kronecker
    map in a factored-layout sketch with seed ``seed`` (a hash, like ``block_seed``)."""
    digest = hashlib.blake2b(f"sketchcore/gradient-factors/{seed}/{name}/{side}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little")


def kronecker_dims(out_dim: int, rows: int, cols: int) -> tuple[int, int] | None:
    """``(k_rows, k_cols)`` with ``k_rows * k_cols == out_dim`` for the Kronecker map of a
    ``rows x cols`` weight, or None when there is none.

    The rule: the most balanced factorization (the variance of the estimate grows like
    ``1/k_rows + 1/k_cols``, see docs/algorithms.md), each factor at most its side's padded size
    ``next_pow2(side)`` (what the structured sketches accept); on a tie the larger factor goes to
    the longer side (the rows on equal sides). ``out_dim = 2^(2m)`` gives ``(2^m, 2^m)``.
    """
    best = None
    caps = (next_pow2(rows), next_pow2(cols))
    a = 1
    while a * a <= out_dim:
        if out_dim % a == 0:
            small, large = a, out_dim // a
            pairs = [(large, small), (small, large)] if rows >= cols else \
                [(small, large), (large, small)]
            for kr, kc in pairs:
                if kr <= caps[0] and kc <= caps[1]:
                    score = large / small
                    if best is None or score < best[0]:
                        best = (score, (kr, kc))
                    break
        a += 1
    return None if best is None else best[1]


class KroneckerSketch:
    """``Phi vec(G) = vec(R G C^T)``: the Kronecker map ``R x C`` of a ``rows x cols`` weight
    (row-major ``vec``), ``R`` a ``k_rows x rows`` and ``C`` a ``k_cols x cols`` sketch of the
    library (any algorithm), ``k_rows * k_cols = out_dim``.

    ``E[R^T R] = I`` and ``E[C^T C] = I`` make ``<Phi x, Phi y>`` unbiased. For a per-example
    gradient ``G = sum_t u_t v_t^T``, ``Phi vec(G) = sum_t (R u_t) x (C v_t)``, which is how the
    factored layout computes it without forming ``G``. ``R`` and ``C`` are materialized once as
    dense matrices on the host (float64, through the numpy reference backend: ``Phi^T`` of the
    identity) and moved into each array library once: applying them is two small matmuls per
    token, ``k_rows * rows + k_cols * cols`` multiply-adds. Has the part of the ``Sketch``
    interface the gradient layer uses: ``apply``, ``transpose``, ``describe``, ``in_dim``,
    ``out_dim``, ``algo``, ``seed``, ``options``.
    """

    def __init__(self, *, algo: str, rows: int, cols: int, out_dim: int, seed: int, name: str,
                 **options):
        from .api import Sketch

        dims = kronecker_dims(out_dim, rows, cols)
        if dims is None:
            raise ShapeError(
                f"no Kronecker map of out_dim={out_dim} fits a {rows} x {cols} weight ({name}): "
                "out_dim must be k_rows * k_cols with k_rows <= next_pow2(rows) and k_cols <= "
                "next_pow2(cols).")
        self.name = name
        self.rows, self.cols = int(rows), int(cols)
        self.k_rows, self.k_cols = dims
        self.in_dim = self.rows * self.cols
        self.out_dim = int(out_dim)
        self.algo = algo
        self.seed = seed
        self.options = dict(options)
        self.row_sketch = Sketch(algo=algo, in_dim=self.rows, out_dim=self.k_rows,
                                 seed=factor_seed(seed, name, "rows"), **options)
        self.col_sketch = Sketch(algo=algo, in_dim=self.cols, out_dim=self.k_cols,
                                 seed=factor_seed(seed, name, "cols"), **options)
        self._params = None

    def __repr__(self) -> str:
        return (f"KroneckerSketch({self.name!r}, {self.rows} x {self.cols} -> "
                f"{self.k_rows} x {self.k_cols}, algo={self.algo!r})")

    def host_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(R, C)`` as float64 numpy matrices of shapes ``(k_rows, rows)``, ``(k_cols, cols)``."""
        p = self._cache()
        return p.host["R"], p.host["C"]

    def _cache(self):
        if self._params is None:
            from .param_cache import ParamCache

            p = ParamCache()
            for key, op in (("R", self.row_sketch), ("C", self.col_sketch)):
                eye = np.eye(op.out_dim, dtype=np.float64)
                p.add(key, np.ascontiguousarray(np.asarray(op.transpose(eye, backend="numpy"),
                                                           dtype=np.float64)))
            self._params = p
        return self._params

    def matrices(self, like):
        """``(R, C)`` in ``like``'s array library, device and floating dtype (cached)."""
        from .array_namespace import namespace_of

        xp = namespace_of(like)
        p = self._cache()
        return p.get(xp, like, "R"), p.get(xp, like, "C")

    @staticmethod
    def _float(xp, x):
        if x.dtype != xp.float32 and x.dtype != xp.float64:
            x = xp.astype(x, xp.float32)
        return x

    def apply(self, g):
        """``vec(R G C^T)`` for ``g`` of shape ``(..., rows * cols)``: ``(..., out_dim)``."""
        from .array_namespace import namespace_of

        xp = namespace_of(g)
        g = self._float(xp, g)
        if g.shape[-1] != self.in_dim:
            raise ShapeError(f"{self!r} expects a last axis of size {self.in_dim}, got "
                             f"{tuple(g.shape)}.")
        lead = tuple(g.shape[:-1])
        r, c = self.matrices(g)
        m = xp.reshape(g, (*lead, self.rows, self.cols))
        # the cheaper order of the two products
        if self.k_rows * self.cols * (self.rows + self.k_cols) <= \
                self.k_cols * self.rows * (self.cols + self.k_rows):
            out = xp.matmul(xp.matmul(r, m), xp.permute_dims(c, (1, 0)))
        else:
            out = xp.matmul(r, xp.matmul(m, xp.permute_dims(c, (1, 0))))
        return xp.reshape(out, (*lead, self.out_dim))

    __call__ = apply

    def transpose(self, v):
        """``vec(R^T V C)`` for ``v`` of shape ``(..., out_dim)``: ``(..., rows * cols)``."""
        from .array_namespace import namespace_of

        xp = namespace_of(v)
        v = self._float(xp, v)
        lead = tuple(v.shape[:-1])
        r, c = self.matrices(v)
        m = xp.reshape(v, (*lead, self.k_rows, self.k_cols))
        out = xp.matmul(xp.matmul(xp.permute_dims(r, (1, 0)), m), c)
        return xp.reshape(out, (*lead, self.in_dim))

    def describe(self) -> dict:
        """What identifies this map: both factors' descriptions (with their parameter digests)."""
        return {"algo": "kronecker", "in_dim": self.in_dim, "out_dim": self.out_dim,
                "shape": [self.rows, self.cols], "factor_dims": [self.k_rows, self.k_cols],
                "rows": self.row_sketch.describe(), "cols": self.col_sketch.describe()}


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
    summed. Framework-neutral: ``apply``/``transpose`` call the ``Sketch`` on whatever array they get
    (numpy, torch, jax, also inside ``vmap``/``grad``/``jit``).

    ``factorable`` (factored layout): tensor name -> ``(rows, cols)``, the weights the adapter can
    sketch from layer inputs and output gradients, viewed as matrices of their first axis by the
    rest. Each one with at least ``out_dim`` entries and a ``kronecker_dims`` factorization gets a
    ``KroneckerSketch`` block; every other tensor is placed as in the blocks layout."""

    def __init__(self, sizes, names, spec, layout: str, small_blocks: str = "group",
                 factorable=None):
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
        options = {k: v for k, v in spec.items()
                   if k not in ("algo", "out_dim", "seed", "factor_algo")}
        factor_algo = spec.get("factor_algo")
        if factor_algo is not None and layout != "factored":
            raise InvalidOptionError(
                f"factor_algo={factor_algo!r} chooses the Kronecker factors of the factored "
                f"layout; this sketcher's layout is {layout!r}. Drop it, or use "
                "layout='factored'.")
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
        factorable = dict(factorable or {}) if layout == "factored" else {}
        for i, (name, size) in enumerate(zip(self.names, self.sizes)):
            kron = factorable.get(name)
            if kron is not None and size >= self.out_dim \
                    and kronecker_dims(self.out_dim, *kron) is not None:
                op = KroneckerSketch(
                    algo=factor_algo or DEFAULT_FACTOR_ALGO or algo, rows=kron[0],
                    cols=kron[1], out_dim=out_dim, seed=seed, name=name,
                    **({} if (factor_algo or DEFAULT_FACTOR_ALGO) else options))
                self.blocks.append(Block(name, [i], size, size, op))
            elif size >= self.out_dim:
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
            from .array_namespace import namespace_of
            from .kernels import pad_last

            g = pad_last(namespace_of(g), g, block.in_dim)
        return block.sketch.apply(g)

    def transpose(self, block: Block, v):
        """``Phi_b^T v`` for ``v`` of shape ``(..., out_dim)``: ``(..., block.size)``."""
        if block.sketch is None:
            return v
        x = block.sketch.transpose(v)
        return x[..., : block.size] if block.in_dim != block.size else x

    # ---- whole-vector maps on numpy (references, small N) -------------------------------------
    def _columns(self, block: Block) -> np.ndarray:
        return np.concatenate([np.arange(self.offsets[i], self.offsets[i] + self.sizes[i])
                               for i in block.members])

    def apply_sketch(self, x) -> np.ndarray:
        """``Phi x`` for numpy ``x`` of shape ``(..., N)`` in this layout: ``(..., D)`` (the sum of
        ``apply`` over the blocks; named as on ``GradientSketcher``)."""
        x = np.asarray(x)
        if x.shape[-1] != self.num_params:
            raise ShapeError(f"expected a last axis of size N={self.num_params}, got {x.shape}.")
        out = None
        for b in self.blocks:
            part = np.asarray(self.apply(b, np.ascontiguousarray(x[..., self._columns(b)])))
            out = part if out is None else out + part
        return out

    def transpose_sketch(self, v) -> np.ndarray:
        """``Phi^T v`` for numpy ``v`` of shape ``(..., D)``: ``(..., N)`` (``transpose`` of each
        block)."""
        v = np.asarray(v)
        if v.shape[-1] != self.out_dim:
            raise ShapeError(f"expected a last axis of size D={self.out_dim}, got {v.shape}.")
        out = np.zeros((*v.shape[:-1], self.num_params), dtype=np.result_type(v, np.float32))
        for b in self.blocks:
            out[..., self._columns(b)] = np.asarray(self.transpose(b, v))
        return out

    lift = renamed_method("SketchPlan", "lift", "transpose")
    sketch_vectors = renamed_method("SketchPlan", "sketch_vectors", "apply_sketch")
    lift_vectors = renamed_method("SketchPlan", "lift_vectors", "transpose_sketch")

    @property
    def kronecker_blocks(self) -> list[Block]:
        """The blocks with a Kronecker map (factored layout)."""
        return [b for b in self.blocks if isinstance(b.sketch, KroneckerSketch)]

    def describe(self) -> dict:
        """What identifies this layout (stored next to sketches)."""
        return {
            "layout": self.layout,
            "sketch": None if self.identity else {k: _plain(v) for k, v in self.spec.items()},
            "blocks": [{"name": b.name, "size": b.size, "in_dim": b.in_dim,
                        **({"factor_dims": [b.sketch.k_rows, b.sketch.k_cols]}
                           if isinstance(b.sketch, KroneckerSketch) else {})}
                       for b in self.blocks],
        }


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


# ---- what every framework adapter shares ------------------------------------------------------


def first_line(err: BaseException) -> str:
    """The first line of an error's message, at most 300 characters ("(no message)" if empty),
    for warnings that must never fail themselves and hide the error they report."""
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else "(no message)"


def check_adapter_options(options: dict, allowed, framework: str) -> None:
    """Refuse keyword options an adapter does not take, listing the ones it does."""
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise unknown(f"option for {framework} models:", bad[0], allowed,
                      "Pass only these keyword options to GradientSketcher.")


class AdapterBase:
    """The framework-neutral part of a gradients adapter (torch, jax): option checks, selection
    of parameters by name pattern, the loop over chunks of a batch, the vectorized-or-loop
    fallback with its ``PerExampleLoopWarning``, and batch-weighted sums. A subclass sets
    ``self.chunk_size`` (``check_chunk_size``) and ``self._vmap_ok = None``."""

    #: how the fallback warning names the vectorizing transform ("torch.func.vmap", "jax.vmap")
    vmap_name = "vmap"

    @staticmethod
    def check_chunk_size(chunk_size):
        if chunk_size is not None and (isinstance(chunk_size, bool) or
                                       not isinstance(chunk_size, int) or chunk_size < 1):
            raise InvalidOptionError(f"chunk_size must be None or a positive integer, got "
                                     f"{describe_value(chunk_size)}.")
        return chunk_size

    @staticmethod
    def select(names, patterns, *, nothing: str) -> list[int]:
        """Indices of ``names`` matching any fnmatch pattern (all for None); ``nothing`` is the
        error's text after ``params=...`` when none matches (the candidates are appended)."""
        if patterns is None:
            picked = list(range(len(names)))
        else:
            picked = [i for i, n in enumerate(names)
                      if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
        if not picked:
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise InvalidOptionError(
                f"params={describe_value(patterns)} selects no {nothing}: {shown or '(none)'}.")
        return picked

    def in_chunks(self, b: int, run, concat):
        """``run(i0, i1)`` on chunks of ``chunk_size`` examples (all at once by default), the
        results joined by ``concat(parts)``."""
        step = self.chunk_size or b
        parts = [run(i0, min(i0 + step, b)) for i0 in range(0, b, step)]
        return parts[0] if len(parts) == 1 else concat(parts)

    def vectorized_or_loop(self, vectorized, loop, model_name: str):
        """``vectorized()``; if it fails the first time, warn (``PerExampleLoopWarning``, quoting
        the error) and use ``loop()`` from then on. Once it has worked, its errors propagate."""
        if self._vmap_ok is not False:
            try:
                out = vectorized()
            except Exception as err:  # noqa: BLE001 - any failure of vmap: fall back, say why
                if self._vmap_ok:
                    raise
                warnings.warn(
                    f"{self.vmap_name} cannot run {model_name} ({type(err).__name__}: "
                    f"{first_line(err)}); computing per-example gradients in a loop, one example "
                    "at a time.", PerExampleLoopWarning, stacklevel=5)
                self._vmap_ok = False
            else:
                self._vmap_ok = True
                return out
        return loop()

    @staticmethod
    def weighted_sum(items, weights, fn):
        """``sum_i fn(items[i]) * weights[i]`` (the mean over several batches)."""
        acc = None
        for item, w in zip(items, weights):
            value = fn(item) * w
            acc = value if acc is None else acc + value
        return acc


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
    ``"flat" | "blocks" | "factored"``; ``mode``: ``"explicit" | "implicit"``;
    ``forward(model_call, batch)`` maps a batch to the model output (default: first element of a
    tuple/list batch, keyword arguments of a dict batch without ``"labels"``, or the array
    itself). ``small_blocks``: ``"group" | "pad"`` (blocks and factored layouts, see the module
    docstring). Other keyword options go to the framework adapter (torch and jax:
    ``chunk_size``, examples per vectorized call, default the whole batch; torch: ``randomness``
    for ``torch.func.vmap``, default ``"different"``).

    The factored layout computes per-example sketches in explicit mode from ONE batched forward
    and backward pass of the sum of per-example losses (``loss_fn`` on each example's slice of
    the output and batch, as if it were a batch of one), so the examples of a batch must not
    interact in the forward pass (no batch normalization in training mode).
    """

    def __init__(self, model, loss_fn, sketch=DEFAULT_SKETCH, params=None, layout="flat",
                 mode="explicit", forward=None, *, small_blocks="group", **options):
        if layout not in LAYOUTS:
            raise unknown("layout", layout, LAYOUTS,
                          "'flat' sketches the concatenated parameter vector, 'blocks' each "
                          "tensor, 'factored' linear layers from their inputs and output "
                          "gradients.")
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
        factorable = None
        if layout == "factored":
            if not hasattr(self.adapter, "factorable"):
                raise InvalidOptionError(
                    f"layout='factored' is not supported for {type(model).__name__} models by "
                    f"{type(self.adapter).__module__}; use layout='blocks'.")
            factorable = self.adapter.factorable()
        self.plan = SketchPlan(self.adapter.sizes, self.adapter.names, sketch, layout,
                               small_blocks, factorable)

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

    def apply_sketch(self, x) -> np.ndarray:
        """``Phi x`` for numpy ``x (..., N)`` in this sketcher's layout: ``(..., D)``. Named
        ``apply_sketch`` rather than ``apply`` because a sketcher is applied to a model's batches
        (``sketch_batch``, ``full_gradients``); this applies only its sketch ``Phi`` to vectors
        you already have (``Sketch.apply``'s ``Phi``, block by block in this layout)."""
        return self.plan.apply_sketch(x)

    def transpose_sketch(self, v) -> np.ndarray:
        """``Phi^T v`` for numpy ``v (..., D)``: ``(..., N)`` (e.g. ``theta0 + Phi^T omega``);
        the transpose of ``apply_sketch``."""
        return self.plan.transpose_sketch(v)

    sketch_vectors = renamed_method("GradientSketcher", "sketch_vectors", "apply_sketch")
    lift_vectors = renamed_method("GradientSketcher", "lift_vectors", "transpose_sketch")

