"""Factored per-example gradient sketches of Flax linen models (``layout="factored"``).

The model is ``(module.apply, variables)``. A method interceptor (``flax.linen.intercept_methods``)
wraps every call of an ``nn.Dense`` or ``nn.Embed`` whose weight is selected: it ``sow``s the
call's input into the ``intermediates`` collection and ``perturb``s its output, so one
``jax.grad`` of the SUM of per-example losses with respect to the (zero) perturbations gives each
call's output gradient ``dL/dy`` per example. For a Dense kernel (``d_in x d_out``) the Kronecker
block's ``vec(R G C^T) = sum_t (R x_t) x (C dL/dy_t)``; for an Embed table the rows side is a
gather of ``R``'s columns by token id. Biases get ``sum_t dL/dy_t``. All of it is one jitted
function: forward, backward, projections and the batched sum over tokens; no weight gradient is
computed.

Per-example losses: ``loss_fn`` on each example as a batch of one, vectorized with ``jax.vmap``
over the batched output and batch (as the vectorized path does). Every selected tensor that no
intercepted call owns (LayerNorm scales, convolution kernels, ...) takes the materialized path:
``vmap(grad)`` over those tensors alone, then their block maps. A kernel read outside its
module's call is not seen by the interceptor; the first batch checks every in-pass block
against the block map of the batch's summed gradient (exact by linearity) and moves a tensor that
fails to the materialized path, with a ``MaterializedGradientWarning``.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from sketchcore._errors import InvalidOptionError, ShapeError
from sketchcore.gradients import KroneckerSketch, MaterializedGradientWarning

__all__ = ["flax_module", "FactoredEngine", "factorable_weights"]

_IN, _OUT = "sketchcore_in", "sketchcore_out"


def flax_module(apply_fn):
    """The Flax linen module of ``apply_fn`` when it is a module's bound ``apply``, else None."""
    import sys

    linen = sys.modules.get("flax.linen")
    if linen is None:
        return None
    owner = getattr(apply_fn, "__self__", None)
    if isinstance(owner, linen.Module) and getattr(apply_fn, "__func__", None) is linen.Module.apply:
        return owner
    return None


def _kind(module):
    import flax.linen as nn

    if type(module) is nn.Dense:
        return "dense"
    if type(module) is nn.Embed:
        return "embed"
    return None


def factorable_weights(names, shapes) -> dict:
    """name -> (rows, cols) of the 2-d ``params`` leaves called ``kernel`` (Dense: ``d_in x
    d_out``) or ``embedding`` (Embed: ``vocab x features``): the Kronecker candidates."""
    out = {}
    for name, shape in zip(names, shapes):
        parts = name.split(".")
        if len(shape) == 2 and parts[0] == "params" and parts[-1] in ("kernel", "embedding"):
            out[name] = (int(shape[0]), int(shape[1]))
    return out


def _param_name(module, attr):
    return ".".join(("params", *(str(p) for p in module.path), attr))


class FactoredEngine:
    """Per-example sketches of one ``JaxGradients`` adapter and one factored ``SketchPlan``."""

    def __init__(self, adapter, plan, module):
        self.adapter, self.plan, self.module = adapter, plan, module
        self._handled: set[str] | None = None
        self._checked = False
        self._compiled = {}

    # ---- discovery -------------------------------------------------------------------------
    def _interceptor(self, record, handled, counter, b):
        import flax.linen as nn

        def icpt(next_fun, args, kwargs, ctx):
            m = ctx.module
            kind = _kind(m)
            if ctx.method_name != "__call__" or kind is None:
                return next_fun(*args, **kwargs)
            weight = _param_name(m, "kernel" if kind == "dense" else "embedding")
            if record is not None:
                record.add(weight)
                if kind == "dense" and m.use_bias:
                    record.add(_param_name(m, "bias"))
                return next_fun(*args, **kwargs)
            if weight not in handled:
                return next_fun(*args, **kwargs)
            x = args[0] if args else next(iter(kwargs.values()))
            if x.ndim == 0 or x.shape[0] != b:
                raise ShapeError(
                    f"layout='factored': {type(m).__name__} {'.'.join(m.path)} got an input of "
                    f"shape {x.shape} whose leading axis is not the batch ({b} examples); use "
                    "layout='blocks' for this model.")
            k = counter.get(m.path, 0)
            counter[m.path] = k + 1
            m.sow("intermediates", f"{_IN}_{k}", x)
            return m.perturb(f"{_OUT}_{k}", next_fun(*args, **kwargs))

        return nn.intercept_methods(icpt)

    def _run_model(self, variables, batch, icpt, mutable):
        holder = {}

        def model_call(*args, **kwargs):
            if not mutable:
                return self.module.apply(variables, *args, **kwargs)
            out, state = self.module.apply(variables, *args, mutable=mutable, **kwargs)
            holder["state"] = state
            return out

        with icpt:
            out = self.adapter.forward(model_call, batch)
        return out, holder.get("state", {})

    def _discover(self, batch):
        """The selected tensors owned by intercepted calls (found in a shape-only trace)."""
        adapter = self.adapter
        record: set[str] = set()
        icpt = self._interceptor(record, None, {}, adapter.batch_size(batch))
        jax.eval_shape(lambda v, bt: self._run_model(v, bt, icpt, False)[0], adapter.params, batch)
        selected = set(adapter.names)
        return record & selected

    def _loss_sum(self, out, batch, b):
        """Sum over examples of ``loss_fn`` on each example as a batch of one (vmapped)."""
        def axes(tree):
            return jax.tree_util.tree_map(
                lambda x: 0 if getattr(x, "ndim", 0) >= 1 and x.shape[0] == b else None, tree)

        ax_out, ax_in = axes(out), axes(batch)

        def one(o, ex):
            o = jax.tree_util.tree_map(lambda x, a: x[None] if a == 0 else x, o, ax_out)
            ex = jax.tree_util.tree_map(lambda x, a: x[None] if a == 0 else x, ex, ax_in)
            return self.adapter.loss_fn(o, ex)

        return jnp.sum(jax.vmap(one, in_axes=(ax_out, ax_in))(out, batch))

    def _summed_gradient(self, batch, idx):
        """Gradient of the sum of per-example losses with respect to selected leaves ``idx``."""
        adapter = self.adapter
        key = ("summed", tuple(idx))
        f = self._compiled.get(key)
        if f is None:
            def loss(sub, sel, other, bt):
                sel = list(sel)
                for i, x in zip(idx, sub):
                    sel[i] = x
                variables = adapter._full(sel, other)

                def model_call(*args, **kwargs):
                    return self.module.apply(variables, *args, **kwargs)

                out = adapter.forward(model_call, bt)
                return self._loss_sum(out, bt, adapter.batch_size(bt))

            f = self._compiled[key] = jax.jit(jax.grad(loss))
        sel = adapter._current()
        return f([sel[i] for i in idx], sel, adapter._others(), batch)

    # ---- the jitted pass -------------------------------------------------------------------
    def _core(self, handled: frozenset, per_block: bool):
        adapter, plan = self.adapter, self.plan
        b_names = {b.name: b for b in plan.kronecker_blocks}

        def core(sel, other, mats, batch):
            variables = adapter._full(sel, other)
            b = adapter.batch_size(batch)
            dtype = adapter.sketch_dtype

            def run(perts, mutable):
                v = dict(variables)
                if perts is not None:
                    v["perturbations"] = perts
                icpt = self._interceptor(None, handled, {}, b)
                return self._run_model(v, batch, icpt, mutable)

            shapes = jax.eval_shape(lambda: run(None, ["perturbations", "intermediates"]))[1]
            perts = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                           shapes.get("perturbations", {}))

            def total(p):
                out, state = run(p, ["intermediates"])
                return self._loss_sum(out, batch, b), state.get("intermediates", {})

            deltas, inter = jax.grad(total, has_aux=True)(perts)
            d = plan.out_dim
            acc = {} if per_block else jnp.zeros((b, d), dtype)
            grads = {}

            def walk(tree, path=()):
                if isinstance(tree, dict) and any(str(k).startswith(f"{_OUT}_") for k in tree):
                    yield path, tree
                    return
                if isinstance(tree, dict):
                    for k, v in tree.items():
                        yield from walk(v, (*path, k))

            for path, outs in walk(deltas):
                node = inter
                for p in path:
                    node = node[p]
                for key, delta in outs.items():
                    k = key[len(_OUT) + 1:]
                    x = node[f"{_IN}_{k}"][0]
                    delta = delta.astype(dtype).reshape(b, -1, delta.shape[-1])
                    prefix = ".".join(("params", *(str(p) for p in path)))
                    if f"{prefix}.kernel" in handled:
                        weight, kind = f"{prefix}.kernel", "dense"
                    else:
                        weight, kind = f"{prefix}.embedding", "embed"
                    block = b_names.get(weight)
                    if kind == "dense":
                        a = x.astype(dtype).reshape(b, -1, x.shape[-1])
                    else:
                        ids = x.reshape(b, -1)
                    if block is not None:
                        r, c = mats[weight]
                        u = jnp.matmul(a, r.T) if kind == "dense" else r.T[ids]
                        contrib = jnp.einsum("btk,btj->bkj", u, jnp.matmul(delta, c.T))
                        contrib = contrib.reshape(b, d)
                        if per_block:
                            acc[weight] = acc.get(weight, 0) + contrib
                        else:
                            acc = acc + contrib
                    elif weight in handled:
                        if kind == "dense":
                            g = jnp.einsum("bti,bto->bio", a, delta)
                        else:
                            rows = adapter.shapes[adapter.names.index(weight)][0]
                            g = jnp.einsum("btv,bto->bvo", jax.nn.one_hot(ids, rows, dtype=dtype),
                                           delta)
                        grads[weight] = grads.get(weight, 0) + g.reshape(b, -1)
                    bias = f"{prefix}.bias"
                    if kind == "dense" and bias in handled:
                        grads[bias] = grads.get(bias, 0) + delta.sum(axis=1)
            return acc, grads

        return jax.jit(core)

    # ---- entry -----------------------------------------------------------------------------
    def sketches(self, batch, per_block: bool = False):
        adapter, plan = self.adapter, self.plan
        if self._handled is None:
            self._handled = self._discover(batch)
        b = adapter.batch_size(batch)
        axes = jax.tree_util.tree_map(
            lambda x: 0 if getattr(x, "ndim", 0) >= 1 and x.shape[0] == b else None, batch)

        def run(i0, i1):
            return self._chunk(jax.tree_util.tree_map(lambda x, a: x[i0:i1] if a == 0 else x,
                                                      batch, axes), per_block)

        return adapter.in_chunks(b, run, lambda parts: (
            {k: jnp.concatenate([p[k] for p in parts]) for k in parts[0]} if per_block
            else jnp.concatenate(parts)))

    def _chunk(self, batch, per_block):
        adapter, plan = self.adapter, self.plan
        b = adapter.batch_size(batch)
        like = jnp.zeros((), adapter.sketch_dtype)
        while True:
            handled = frozenset(self._handled)
            kron = [blk for blk in plan.kronecker_blocks if blk.name in handled]
            check = not self._checked
            key = (handled, per_block or check)
            f = self._compiled.get(key)
            if f is None:
                f = self._compiled[key] = self._core(handled, per_block or check)
            mats = {blk.name: blk.sketch.matrices(like) for blk in kron}
            acc, grads = f(adapter._current(), adapter._others(), mats, batch)
            if not check:
                break
            self._checked = True
            bad = self._failed_blocks(acc, batch)
            if not bad:
                break
            warnings.warn(
                f"layout='factored': {', '.join(sorted(bad))} is read outside the Dense/Embed "
                "call that owns it, so its sketch cannot come from that call's inputs and output "
                "gradients alone; its per-example gradient is materialized and sketched with the "
                "same map (exact, slower).", MaterializedGradientWarning, stacklevel=5)
            self._handled -= bad | {n.rsplit(".", 1)[0] + ".bias" for n in bad}
        rest = [n for n in adapter.names if n not in self._handled]
        if rest:
            idx = [adapter.names.index(n) for n in rest]
            mat = adapter.per_example_gradient_list(batch, idx)
            for n, g in zip(rest, mat):
                grads[n] = g.reshape(b, -1)
        out = dict(acc) if isinstance(acc, dict) else acc
        if isinstance(out, dict) and not per_block:
            total = None
            for v in out.values():
                total = v if total is None else total + v
            out = total if total is not None else jnp.zeros((b, plan.out_dim),
                                                            adapter.sketch_dtype)
        for block in plan.blocks:
            if isinstance(block.sketch, KroneckerSketch) and block.name in self._handled:
                if per_block and block.name not in out:
                    out[block.name] = jnp.zeros((b, plan.out_dim), adapter.sketch_dtype)
                continue
            parts = []
            for i in block.members:
                name = adapter.names[i]
                g = grads.get(name)
                if g is None:
                    g = jnp.zeros((b, adapter.sizes[i]), adapter.sketch_dtype)
                parts.append(g.astype(adapter.sketch_dtype))
            flat = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
            part = plan.apply(block, flat)
            if per_block:
                out[block.name] = part
            else:
                out = out + part
        return out

    def _failed_blocks(self, per_block, batch) -> set:
        """In-pass Kronecker blocks whose per-example sketches do not sum to the block map of the
        batch's summed gradient (a kernel also read outside its call)."""
        adapter, plan = self.adapter, self.plan
        kron = [blk for blk in plan.kronecker_blocks if blk.name in self._handled]
        if not kron:
            return set()
        summed = self._summed_gradient(batch, [blk.members[0] for blk in kron])
        bad = set()
        for blk, g in zip(kron, summed):
            s = np.asarray(per_block.get(blk.name, np.zeros((1, plan.out_dim))), np.float64)
            ref = np.asarray(plan.apply(blk, jnp.asarray(g.reshape(1, -1))), np.float64)[0]
            scale = np.linalg.norm(s, axis=1).sum() + np.linalg.norm(ref) + 1e-30
            if np.linalg.norm(s.sum(0) - ref) > 1e-4 * scale:
                bad.add(blk.name)
        return bad


def require_flax(apply_fn):
    module = flax_module(apply_fn)
    if module is None:
        raise InvalidOptionError(
            "layout='factored' for jax models needs a Flax linen model passed as "
            "(module.apply, variables) (its Dense and Embed calls are intercepted); for other jax "
            "models use layout='blocks'.")
    return module
