"""Per-example gradients, gradient sketches and HVPs of jax models (``jax.vmap``/``grad``/``jvp``).

The adapter behind ``sketchcore.gradients.GradientSketcher`` for a pair ``(apply_fn, params)``
with ``apply_fn(params, inputs) -> output`` and ``params`` any pytree of arrays (Flax variables,
an Equinox model filtered to its arrays, a dict), or an Equinox module itself (split into its
arrays and the rest). Parameter names are the pytree paths joined by dots (``layers.0.weight``).

Per-example work is ``jit(vmap(grad(loss of one example)))``; a model that ``vmap`` cannot run
falls back to a jitted loop over examples with a ``PerExampleLoopWarning`` that quotes the reason.
Sketching happens inside autodiff as in the torch adapter: explicit mode routes each block through
a ``custom_vjp`` identity whose backward applies the block's sketch; implicit mode evaluates the
model at ``theta0 + Phi^T w``. Sketch parameters are host constants materialized at trace time
(``jax.ensure_compile_time_eval``), so compiled functions never leak tracers into the operator's
parameter cache. Imported only when jax already is.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from sketchcore._errors import ShapeError, describe_value
from sketchcore.gradients import (
    AdapterBase,
    check_adapter_options,
    default_forward,
    first_line,
)

__all__ = ["owns_model", "make_adapter", "JaxGradients", "path_name"]

_OPTIONS = ("params", "forward", "chunk_size")


def _is_jax_array(x) -> bool:
    return isinstance(x, jax.Array)


def _is_equinox_module(model) -> bool:
    eqx = sys.modules.get("equinox")
    return eqx is not None and isinstance(model, eqx.Module)


def owns_model(model) -> bool:
    """Whether ``model`` is ``(apply_fn, params)`` with jax array leaves, or an Equinox module."""
    if "jax" not in sys.modules:
        return False
    if _is_equinox_module(model):
        return True
    if isinstance(model, (tuple, list)) and len(model) == 2 and callable(model[0]):
        return any(_is_jax_array(x) for x in jax.tree_util.tree_leaves(model[1]))
    return False


def make_adapter(model, loss_fn, **options):
    """The ``JaxGradients`` adapter of ``model`` (options: params, forward, chunk_size)."""
    check_adapter_options(options, _OPTIONS, "jax")
    if _is_equinox_module(model):
        import equinox as eqx

        params, static = eqx.partition(model, eqx.is_inexact_array)

        def apply_fn(p, *args, **kwargs):
            return eqx.combine(p, static)(*args, **kwargs)

        model = (apply_fn, params)
    return JaxGradients(model[0], model[1], loss_fn, **options)


def path_name(path) -> str:
    """A pytree key path as a dotted name: ``(DictKey('a'), SequenceKey(0))`` -> ``"a.0"``."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def _constant_eval():
    return jax.ensure_compile_time_eval()


def _make_tap(plan, block, w_dtype):
    """Identity on a block's flat parameters; its backward returns ``Phi_b g`` for ``w``."""

    @jax.custom_vjp
    def tap(theta, w):
        return theta

    def fwd(theta, w):
        return theta, None

    def bwd(_, g):
        with _constant_eval():
            return None, plan.apply(block, g).astype(w_dtype)

    tap.defvjp(fwd, bwd)
    return tap


_first_line = first_line


class JaxGradients(AdapterBase):
    """Per-example gradients, sketches and HVPs of one jax model and loss function."""

    vmap_name = "jax.vmap"

    def __init__(self, apply_fn, tree, loss_fn, *, params=None, forward=None, chunk_size=None):
        chunk_size = self.check_chunk_size(chunk_size)
        self.apply_fn = apply_fn
        self.loss_fn = loss_fn
        self.forward = forward or default_forward
        self.chunk_size = chunk_size
        flat, self.treedef = jax.tree_util.tree_flatten_with_path(tree)
        self.all_names = [path_name(p) for p, _ in flat]
        self.leaves = [x for _, x in flat]
        trainable = [i for i, x in enumerate(self.leaves)
                     if _is_jax_array(x) and jnp.issubdtype(x.dtype, jnp.inexact)]
        sel = [trainable[i] for i in self.select(
            [self.all_names[i] for i in trainable], params,
            nothing="floating-point array of the params pytree; its array leaves are")]
        self.sel = sel
        self.names = [self.all_names[i] for i in sel]
        self.shapes = [tuple(self.leaves[i].shape) for i in sel]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.dtype = self.leaves[sel[0]].dtype
        self.device = next(iter(self.leaves[sel[0]].devices()))
        self.sketch_dtype = jnp.float64 if self.dtype == jnp.float64 else jnp.float32
        self._vmap_ok: bool | None = None
        self._compiled: dict = {}

    @property
    def params(self):
        """The current params pytree (``set_flat_params`` replaces the selected leaves)."""
        return jax.tree_util.tree_unflatten(self.treedef, self.leaves)

    # ---- batches ------------------------------------------------------------------------------
    def _to_device(self, batch):
        if isinstance(batch, Mapping) and not isinstance(batch, dict):
            batch = dict(batch)

        def move(x):
            if isinstance(x, np.ndarray):
                if np.issubdtype(x.dtype, np.floating):
                    x = x.astype(self.dtype)
                return jax.device_put(x, self.device)
            return x

        return jax.tree_util.tree_map(move, batch)

    def batch_size(self, batch) -> int:
        for leaf in jax.tree_util.tree_leaves(batch):
            shape = getattr(leaf, "shape", None)
            if shape is not None and len(shape) >= 1:
                return int(shape[0])
        raise ShapeError("cannot tell the batch size: no array with a leading axis in "
                         f"{describe_value(batch)}.")

    # ---- the model as a function of the selected leaves --------------------------------------
    def _full(self, sel_leaves, other):
        leaves = list(other)
        for i, x in zip(self.sel, sel_leaves):
            leaves[i] = x
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def _others(self):
        return [None if i in self.sel else x for i, x in enumerate(self.leaves)]

    def _current(self):
        return [self.leaves[i] for i in self.sel]

    def _model_loss(self, params, batch):
        def model_call(*args, **kwargs):
            return self.apply_fn(params, *args, **kwargs)

        return self.loss_fn(self.forward(model_call, batch), batch)

    def _theta(self, w, plan, mode, sel_leaves):
        """Selected leaves as a function of the D-vector w (value ``sel_leaves`` at w = 0)."""
        out = list(sel_leaves)
        for block in plan.blocks:
            parts = [sel_leaves[i].reshape(-1) for i in block.members]
            base = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
            if mode == "explicit":
                flat = _make_tap(plan, block, w.dtype)(base, w)
            else:
                with _constant_eval():
                    flat = base + plan.transpose(block, w).astype(base.dtype)
            offsets = np.cumsum([self.sizes[i] for i in block.members])[:-1]
            for i, part in zip(block.members, jnp.split(flat, offsets) if len(offsets) else [flat]):
                out[i] = part.reshape(self.shapes[i])
        return out

    def _w0(self, plan):
        return jnp.zeros(plan.out_dim, dtype=self.sketch_dtype)

    def _split(self, flat, idx):
        offsets = np.cumsum([self.sizes[i] for i in idx])[:-1]
        parts = jnp.split(flat, offsets) if len(offsets) else [flat]
        return [p.reshape(self.shapes[i]).astype(self.dtype) for i, p in zip(idx, parts)]

    # ---- per-example engine -------------------------------------------------------------------
    def _per_example(self, key, fn, primal, batch):
        """``grad fn(primal, example, sel, other)`` per example (a batch of one): leading axis B.
        ``key`` names the compiled function for reuse."""
        batch = self._to_device(batch)
        b = self.batch_size(batch)
        axes = jax.tree_util.tree_map(
            lambda x: 0 if getattr(x, "ndim", 0) >= 1 and x.shape[0] == b else None, batch)
        sel, other = self._current(), self._others()

        def run(i0, i1):
            sub = jax.tree_util.tree_map(lambda x, a: x[i0:i1] if a == 0 else x, batch, axes)
            return self._run(key, fn, primal, sub, axes, sel, other)

        return self.in_chunks(b, run, lambda parts: jax.tree_util.tree_map(
            lambda *xs: jnp.concatenate(xs), *parts))

    def _run(self, key, fn, primal, batch, axes, sel, other):
        def one(p, ex, s, o):
            ex = jax.tree_util.tree_map(lambda x, a: x[None] if a == 0 else x, ex, axes)
            return fn(p, ex, s, o)

        def vectorized():
            ckey = ("vmap", key, jax.tree_util.tree_structure(axes), str(axes))
            f = self._compiled.get(ckey)
            if f is None:
                f = jax.jit(jax.vmap(jax.grad(one), in_axes=(None, axes, None, None)))
                self._compiled[ckey] = f
            return f(primal, batch, sel, other)

        def loop():
            ckey = ("loop", key)
            g = self._compiled.get(ckey)
            if g is None:
                g = self._compiled[ckey] = jax.jit(jax.grad(fn))
            b = self.batch_size(batch)
            rows = [g(primal, jax.tree_util.tree_map(lambda x, a: x[i:i + 1] if a == 0 else x,
                                                     batch, axes), sel, other)
                    for i in range(b)]
            return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *rows)

        return self.vectorized_or_loop(vectorized, loop, "this model")

    # ---- factored layout ----------------------------------------------------------------------
    def factorable(self) -> dict:
        """name -> (rows, cols) of the selected Dense kernels and Embed tables of a Flax linen
        model (``(module.apply, variables)``), sketched from layer inputs and output gradients in
        the factored layout (see ``factored.py``)."""
        from .factored import factorable_weights, require_flax

        require_flax(self.apply_fn)
        return factorable_weights(self.names, self.shapes)

    def _factored_engine(self, plan):
        from .factored import FactoredEngine, require_flax

        key = ("factored-engine", plan)
        engine = self._compiled.get(key)
        if engine is None:
            engine = self._compiled[key] = FactoredEngine(self, plan, require_flax(self.apply_fn))
        return engine

    def factored_block_sketches(self, batch, plan) -> dict:
        """Per-block per-example sketches of the factored engine: block name -> float32 (B, D)
        (the factored sketch is their sum; for tests and diagnostics)."""
        out = self._factored_engine(plan).sketches(self._to_device(batch), per_block=True)
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}

    def per_example_gradient_list(self, batch, idx):
        """Exact per-example gradients of the selected leaves ``idx``: a list of (B, *shape)."""
        idx = list(idx)

        def fn(sub, ex, sel, other):
            sel = list(sel)
            for i, x in zip(idx, sub):
                sel[i] = x
            return self._model_loss(self._full(sel, other), ex)

        primal = [self._current()[i] for i in idx]
        return self._per_example(("grads", tuple(idx)), fn, primal, batch)

    # ---- per-example quantities ---------------------------------------------------------------
    def per_example_sketches(self, batch, plan, mode):
        if plan.layout == "factored" and mode == "explicit":
            out = self._factored_engine(plan).sketches(self._to_device(batch))
            return np.asarray(out, dtype=np.float32)

        def fn(w, ex, sel, other):
            return self._model_loss(self._full(self._theta(w, plan, mode, sel), other), ex)

        g = self._per_example(("sketch", plan, mode), fn, self._w0(plan), batch)
        return np.asarray(g, dtype=np.float32)

    def per_example_gradients(self, batch, idx):
        idx = list(idx)

        def fn(sub, ex, sel, other):
            sel = list(sel)
            for i, x in zip(idx, sub):
                sel[i] = x
            return self._model_loss(self._full(sel, other), ex)

        primal = [self._current()[i] for i in idx]
        g = self._per_example(("grads", tuple(idx)), fn, primal, batch)
        b = g[0].shape[0]
        flat = jnp.concatenate([x.reshape(b, -1).astype(jnp.float32) for x in g], axis=1)
        return np.asarray(flat, dtype=np.float32)

    # ---- whole-batch quantities ---------------------------------------------------------------
    def _jit(self, key, build):
        f = self._compiled.get(key)
        if f is None:
            f = self._compiled[key] = jax.jit(build())
        return f

    def batch_gradient_sketch(self, batch, plan, mode):
        def build():
            def f(w, batch, sel, other):
                return self._model_loss(self._full(self._theta(w, plan, mode, sel), other), batch)

            return jax.grad(f)

        g = self._jit(("batch-sketch", plan, mode), build)
        out = g(self._w0(plan), self._to_device(batch), self._current(), self._others())
        return np.asarray(out, dtype=np.float64)

    def _loss_of_sel(self, sel, batch, other):
        return self._model_loss(self._full(sel, other), batch)

    def batch_gradient(self, batch):
        g = self._jit(("batch-grad",), lambda: jax.grad(self._loss_of_sel))
        gs = g(self._current(), self._to_device(batch), self._others())
        # float64 models (jax_enable_x64) keep float64, like torch; others compute in float32
        return np.asarray(jnp.concatenate([x.reshape(-1).astype(self.sketch_dtype) for x in gs]),
                          dtype=np.float64)

    def batch_loss(self, batch):
        f = self._jit(("batch-loss",), lambda: self._loss_of_sel)
        return float(f(self._current(), self._to_device(batch), self._others()))

    # ---- Hessian-vector products --------------------------------------------------------------
    def sketched_hvp(self, batches, weights, plan, mode):
        batches = [self._to_device(b) for b in batches]

        def build():
            if mode == "implicit":
                def hv(v, batch, sel, other):
                    def f(w):
                        return self._model_loss(self._full(self._theta(w, plan, mode, sel), other),
                                                batch)

                    return jax.jvp(jax.grad(f), (self._w0(plan),), (v,))[1]

                return hv

            def hv(v, batch, sel, other):
                tangent = list(sel)
                for block in plan.blocks:
                    with _constant_eval():
                        lifted = plan.transpose(block, v)
                    for i, t in zip(block.members, self._split(lifted, block.members)):
                        tangent[i] = t
                f = lambda s: self._loss_of_sel(s, batch, other)  # noqa: E731
                h = jax.jvp(jax.grad(f), (list(sel),), (tangent,))[1]
                out = None
                for block in plan.blocks:
                    flat = jnp.concatenate([h[i].reshape(-1).astype(v.dtype)
                                            for i in block.members])
                    with _constant_eval():
                        part = plan.apply(block, flat)
                    out = part if out is None else out + part
                return out

            return hv

        hv = self._jit(("sketched-hvp", plan, mode), build)

        def op(v):
            v = jnp.asarray(np.asarray(v), dtype=self.sketch_dtype)
            sel, other = self._current(), self._others()
            acc = self.weighted_sum(batches, weights, lambda batch: hv(v, batch, sel, other))
            return np.asarray(acc, dtype=np.float64)

        return op

    def hvp(self, batches, weights):
        batches = [self._to_device(b) for b in batches]
        idx = list(range(len(self.sel)))

        def build():
            def hv(v, batch, sel, other):
                f = lambda s: self._loss_of_sel(s, batch, other)  # noqa: E731
                h = jax.jvp(jax.grad(f), (list(sel),), (self._split(v, idx),))[1]
                return jnp.concatenate([x.reshape(-1).astype(v.dtype) for x in h])

            return hv

        hv = self._jit(("hvp",), build)

        def op(v):
            v = jnp.asarray(np.asarray(v), dtype=self.sketch_dtype)
            sel, other = self._current(), self._others()
            return self.weighted_sum(batches, weights, lambda batch: np.asarray(
                hv(v, batch, sel, other), dtype=np.float64))

        return op

    def hessian(self, batches, weights):
        idx = list(range(len(self.sel)))

        def f(flat, batch, other):
            return self._loss_of_sel(self._split(flat, idx), batch, other)

        h_fn = self._jit(("hessian",), lambda: jax.hessian(f))
        flat0 = jnp.concatenate([x.reshape(-1) for x in self._current()])
        return self.weighted_sum(batches, weights, lambda batch: np.asarray(
            h_fn(flat0, self._to_device(batch), self._others()), dtype=np.float64))

    # ---- the model as a function of one flat vector -------------------------------------------
    def unflatten(self, theta):
        """The params pytree with the selected leaves taken from the flat vector ``theta`` (N,)
        and the others as they are (differentiable, usable under ``jit``)."""
        return self._full(self._split(theta, list(range(len(self.sel)))), self._others())

    def flat_loss(self, theta, batch):
        """Mean loss of ``batch`` at ``unflatten(theta)`` (e.g. ``theta0 + Phi^T omega``, the
        implicit mode's point): for training a flat vector."""
        return self._model_loss(self.unflatten(theta), self._to_device(batch))

    # ---- parameters ---------------------------------------------------------------------------
    def get_flat(self):
        dt = np.float64 if self.dtype == jnp.float64 else np.float32
        return np.concatenate([np.asarray(x.astype(jnp.float32) if dt == np.float32 else x,
                                          dtype=dt).reshape(-1) for x in self._current()])

    def set_flat(self, theta):
        flat = jnp.asarray(np.asarray(theta))
        for i, x in zip(self.sel, self._split(flat, list(range(len(self.sel))))):
            self.leaves[i] = jax.device_put(x.astype(self.leaves[i].dtype), self.device)

    def values_hash(self) -> str:
        h = hashlib.sha256()
        for name, x in zip(self.all_names, self.leaves):
            a = np.asarray(x)
            h.update(f"{name}|{a.shape}|{a.dtype}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()
