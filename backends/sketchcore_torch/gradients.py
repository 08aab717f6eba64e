"""Per-example gradients, gradient sketches and HVPs of torch ``nn.Module``s (``torch.func``).

The adapter behind ``sketchcore.gradients.GradientSketcher`` for torch models. Per-example
gradients come from ``vmap(grad(loss of one example))`` over ``functional_call``; a model that
``vmap`` cannot run (data-dependent Python control flow, ``.item()``, unsupported ops) falls back
to a loop over examples with a ``PerExampleLoopWarning`` that quotes the reason.

Sketches never need the whole per-example gradient: in explicit mode each block of parameters
passes through ``_Tap``, an identity whose backward hands the block's cotangent to the block's
sketch and returns it as the gradient of a D-vector ``w``; in implicit mode the block is
``theta0 + Phi^T w``. Either way ``grad`` with respect to ``w`` is the sketch.

Autograd runs ready nodes newest first, so a tap created before the forward pass would run only
after the whole backward pass, holding every layer's per-example gradient until then. In the
blocks layout each single-tensor block is therefore tapped inside a forward pre-hook of the module
that owns the tensor: its tap is created just before the layer runs and executes right after the
layer's backward, so each per-example gradient is sketched and freed as soon as it exists.
Tensors read outside their module's forward (or tied to several names) are tapped up front
instead (found automatically: a lazy tensor whose hook never ran is retried eagerly).
Imported only when torch already is.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
import weakref
from collections.abc import Mapping

import numpy as np
import torch
from torch.func import functional_call, grad, jvp, vmap
from torch.utils import _pytree as pytree

from sketchcore._errors import ShapeError, describe_value, unknown
from sketchcore.gradients import (
    AdapterBase,
    check_adapter_options,
    default_forward,
    first_line,
)

__all__ = ["owns_model", "make_adapter", "TorchGradients"]

_OPTIONS = ("params", "forward", "chunk_size", "randomness")
_RANDOMNESS = ("different", "same", "error")


_first_line = first_line


def owns_model(model) -> bool:
    """Whether ``model`` is a torch ``nn.Module`` (without importing torch if it is not loaded)."""
    mod = sys.modules.get("torch")
    return mod is not None and isinstance(model, mod.nn.Module)


def make_adapter(model, loss_fn, **options):
    """The ``TorchGradients`` adapter of ``model`` (options: params, forward, chunk_size,
    randomness)."""
    check_adapter_options(options, _OPTIONS, "torch")
    return TorchGradients(model, loss_fn, **options)


class _Tap(torch.autograd.Function):
    """Identity on a block's flat parameters whose backward returns ``Phi_b g`` as the gradient
    of the D-vector ``w`` (explicit sketching inside autodiff, vmap-compatible)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(theta, w, plan, block):
        return theta.view_as(theta)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, w, plan, block = inputs
        ctx.plan, ctx.block, ctx.w_dtype = plan, block, w.dtype

    @staticmethod
    def backward(ctx, g):
        return None, ctx.plan.apply(ctx.block, g).to(ctx.w_dtype), None, None


def _normalize(batch):
    """Mappings (e.g. HF ``BatchEncoding``) become plain dicts so pytree can walk them."""
    if isinstance(batch, Mapping) and not isinstance(batch, dict):
        return dict(batch)
    return batch


def _concat_trees(parts):
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


class TorchGradients(AdapterBase):
    """Per-example gradients, sketches and HVPs of one ``nn.Module`` and loss function."""

    vmap_name = "torch.func.vmap"

    def __init__(self, model, loss_fn, *, params=None, forward=None, chunk_size=None,
                 randomness="different"):
        self.model = model
        self.loss_fn = loss_fn
        self.forward = forward or default_forward
        self.chunk_size = self.check_chunk_size(chunk_size)
        if randomness not in _RANDOMNESS:
            raise unknown("randomness", randomness, _RANDOMNESS, "See torch.func.vmap.")
        self.randomness = randomness
        named = dict(model.named_parameters())
        trainable = [n for n, p in named.items() if p.requires_grad]
        names = [trainable[i] for i in self.select(
            trainable, params, nothing=f"trainable parameter of {type(model).__name__}; its "
            "trainable parameters are")]
        self.names = names
        self.tensors = [named[n] for n in names]
        self.shapes = [tuple(p.shape) for p in self.tensors]
        self.sizes = [p.numel() for p in self.tensors]
        self.device = self.tensors[0].device
        self.dtype = self.tensors[0].dtype
        #: dtype of sketches while computing (float64 only for float64 models)
        self.sketch_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        self._vmap_ok: bool | None = None
        self._fwd_ok: bool | None = None
        self._warm = weakref.WeakSet()
        counts: dict[int, int] = {}
        for _, p in model.named_parameters(remove_duplicate=False):
            counts[id(p)] = counts.get(id(p), 0) + 1
        #: selected tensors that may be tapped lazily (owned by one module under one name)
        self._lazy_ok = {n for n, t in zip(self.names, self.tensors) if counts[id(t)] == 1}

    def _prewarm(self, plan):
        """Run each block's sketch and transpose once outside any ``torch.func`` transform, so the
        operators cache plain tensors (a cache filled inside ``jvp`` would hold tensors of a
        finished transform level, which later transforms reject)."""
        if plan in self._warm:
            return
        with torch.no_grad():
            for block in plan.blocks:
                plan.apply(block, torch.zeros(1, block.size, dtype=self.sketch_dtype,
                                              device=self.device))
                plan.transpose(block, torch.zeros(1, plan.out_dim, dtype=self.sketch_dtype,
                                             device=self.device))
        self._warm.add(plan)

    # ---- batches ------------------------------------------------------------------------------
    def _to_device(self, batch):
        def move(x):
            if isinstance(x, np.ndarray):
                t = torch.from_numpy(np.ascontiguousarray(x))
                if t.is_floating_point():
                    t = t.to(self.dtype)
                return t.to(self.device)
            if isinstance(x, torch.Tensor) and x.device != self.device:
                return x.to(self.device, non_blocking=True)
            return x

        return pytree.tree_map(move, _normalize(batch))

    def batch_size(self, batch) -> int:
        for leaf in pytree.tree_leaves(_normalize(batch)):
            shape = getattr(leaf, "shape", None)
            if shape is not None and len(shape) >= 1:
                return int(shape[0])
        raise ShapeError("cannot tell the batch size: no array with a leading axis in "
                         f"{describe_value(batch)}.")

    def _model_loss(self, theta, batch, lazy=None, seen=None):
        """Mean loss of ``batch`` at parameters ``theta``; ``lazy`` maps names to functions that
        build the tensor inside its owner module's forward pre-hook (names go into ``seen``)."""
        def model_call(*args, **kwargs):
            return functional_call(self.model, theta, args, kwargs)

        if not lazy:
            return self.loss_fn(self.forward(model_call, batch), batch)
        owners: dict = {}
        for name in lazy:
            path, _, attr = name.rpartition(".")
            owners.setdefault(self.model.get_submodule(path), []).append((attr, name))

        def hook_for(entries):
            def hook(module, args):
                for attr, name in entries:
                    module._parameters[attr] = lazy[name]()
                    seen.add(name)

            return hook

        handles = [m.register_forward_pre_hook(hook_for(e)) for m, e in owners.items()]
        try:
            return self.loss_fn(self.forward(model_call, batch), batch)
        finally:
            for h in handles:
                h.remove()

    # ---- per-example engine -------------------------------------------------------------------
    def _per_example(self, fn, primal, batch):
        """``grad fn(primal, example)`` for every example (a batch of one): leading axis B."""
        batch = self._to_device(batch)
        leaves, spec = pytree.tree_flatten(batch)
        b = self.batch_size(batch)
        batched = [isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == b
                   for x in leaves]
        return self.in_chunks(b, lambda i0, i1: self._run(
            fn, primal, [x[i0:i1] if m else x for x, m in zip(leaves, batched)], spec, batched),
            _concat_trees)

    def _run(self, fn, primal, leaves, spec, batched):
        def one(p, *xs):
            ex = pytree.tree_unflatten(
                [x.unsqueeze(0) if m else x for x, m in zip(xs, batched)], spec)
            return fn(p, ex)

        in_dims = (None, *[0 if m else None for m in batched])
        return self.vectorized_or_loop(
            lambda: vmap(grad(one), in_dims=in_dims, randomness=self.randomness)(primal, *leaves),
            lambda: self._loop(fn, primal, leaves, spec, batched), type(self.model).__name__)

    def _loop(self, fn, primal, leaves, spec, batched):
        b = next(x.shape[0] for x, m in zip(leaves, batched) if m)
        p_leaves, p_spec = pytree.tree_flatten(primal)
        rows = []
        for i in range(b):
            ex = pytree.tree_unflatten([x[i:i + 1] if m else x for x, m in zip(leaves, batched)],
                                       spec)
            req = [t.detach().requires_grad_(True) for t in p_leaves]
            with torch.enable_grad():
                loss = fn(pytree.tree_unflatten(req, p_spec), ex)
                gs = torch.autograd.grad(loss, req, allow_unused=True)
            rows.append([torch.zeros_like(r) if g is None else g for r, g in zip(req, gs)])
        stacked = [torch.stack([r[j] for r in rows]) for j in range(len(p_leaves))]
        return pytree.tree_unflatten(stacked, p_spec)

    # ---- parameters as functions of w ---------------------------------------------------------
    def _bases(self, plan):
        """Each block's current parameter values as one flat detached vector."""
        out = []
        for block in plan.blocks:
            ts = [self.tensors[i].detach().reshape(-1) for i in block.members]
            out.append(ts[0] if len(ts) == 1 else torch.cat(ts))
        return out

    @staticmethod
    def _block_flat(w, plan, mode, block, base):
        if mode == "explicit":
            return _Tap.apply(base, w, plan, block)
        return base + plan.transpose(block, w).to(base.dtype)

    def _theta(self, w, plan, mode, bases, lazy=None):
        """The selected parameters as a function of the D-vector w (value theta0 at w = 0).
        With a dict ``lazy``, single-tensor blocks are left at theta0 and their builders go into
        ``lazy`` (name -> function) for ``_model_loss`` to call inside the owner's forward."""
        theta = {}
        for block, base in zip(plan.blocks, bases):
            if lazy is not None and len(block.members) == 1 \
                    and self.names[block.members[0]] in self._lazy_ok:
                i = block.members[0]
                theta[self.names[i]] = self.tensors[i].detach()
                lazy[self.names[i]] = (lambda b=block, t=base, s=self.shapes[i]:
                                       self._block_flat(w, plan, mode, b, t).view(s))
                continue
            flat = self._block_flat(w, plan, mode, block, base)
            sizes = [self.sizes[i] for i in block.members]
            parts = torch.split(flat, sizes) if len(sizes) > 1 else (flat,)
            for i, part in zip(block.members, parts):
                theta[self.names[i]] = part.view(self.shapes[i])
        return theta

    def _w0(self, plan):
        return torch.zeros(plan.out_dim, dtype=self.sketch_dtype, device=self.device)

    def _selected(self, idx=None):
        idx = range(len(self.names)) if idx is None else idx
        return {self.names[i]: self.tensors[i].detach() for i in idx}

    @staticmethod
    def _numpy(t, dtype=np.float32):
        return t.detach().to("cpu", torch.float64 if dtype == np.float64 else torch.float32
                             ).numpy().astype(dtype, copy=False)

    # ---- factored layout ----------------------------------------------------------------------
    def factorable(self) -> dict:
        """name -> (rows, cols) of the selected weights of linear, embedding and convolution
        layers, whose per-example gradients the factored layout sketches from layer inputs and
        output gradients (see ``factored.py``)."""
        from .factored import factorable_weights

        return factorable_weights(self.model, self.names, self.tensors)

    def _factored_engine(self, plan):
        from .factored import FactoredEngine

        engines = self.__dict__.setdefault("_engines", weakref.WeakKeyDictionary())
        engine = engines.get(plan)
        if engine is None:
            self._prewarm(plan)
            engine = engines[plan] = FactoredEngine(self, plan)
        return engine

    def factored_block_sketches(self, batch, plan) -> dict:
        """Per-block per-example sketches of the factored engine: block name -> float32 (B, D)
        (the factored sketch is their sum; for tests and diagnostics)."""
        out = self._factored_engine(plan).sketches(self._to_device(batch), per_block=True)
        return {k: self._numpy(v) for k, v in out.items()}

    def per_example_gradient_dict(self, batch, names) -> dict:
        """Exact per-example gradients of the named selected tensors: name -> (B, *shape)."""
        primal = {n: self.tensors[self.names.index(n)].detach() for n in names}
        return self._per_example(self._model_loss, primal, batch)

    # ---- per-example quantities ---------------------------------------------------------------
    def _lazily(self, plan, mode, run):
        """``run(fn)`` with ``fn(w, batch)`` the loss at ``theta(w)``, single-tensor blocks built
        inside their modules' forward; tensors whose hook never ran are retried up front."""
        self._prewarm(plan)
        bases = self._bases(plan)
        while True:
            built, seen = set(), set()

            def fn(w, ex):
                lazy = {} if plan.layout != "flat" else None
                theta = self._theta(w, plan, mode, bases, lazy)
                built.update(lazy or ())
                return self._model_loss(theta, ex, lazy, seen)

            out = run(fn)
            missing = built - seen
            if not missing:
                return out
            self._lazy_ok -= missing

    def per_example_sketches(self, batch, plan, mode):
        if plan.layout == "factored" and mode == "explicit":
            return self._numpy(self._factored_engine(plan).sketches(self._to_device(batch)))
        g = self._lazily(plan, mode, lambda fn: self._per_example(fn, self._w0(plan), batch))
        return self._numpy(g)

    def per_example_gradients(self, batch, idx):
        g = self._per_example(self._model_loss, self._selected(idx), batch)
        b = next(iter(g.values())).shape[0]
        return self._numpy(torch.cat([g[self.names[i]].reshape(b, -1) for i in idx], dim=1))

    # ---- whole-batch quantities ---------------------------------------------------------------
    def batch_gradient_sketch(self, batch, plan, mode):
        batch = self._to_device(batch)

        def run(fn):
            w = self._w0(plan).requires_grad_(True)
            with torch.enable_grad():
                return torch.autograd.grad(fn(w, batch), w)[0]

        return self._numpy(self._lazily(plan, mode, run), np.float64)

    def batch_gradient(self, batch):
        batch = self._to_device(batch)
        theta = {n: t.requires_grad_(True) for n, t in self._selected().items()}
        with torch.enable_grad():
            loss = self._model_loss(theta, batch)
            gs = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
        flat = torch.cat([(torch.zeros_like(t) if g is None else g).reshape(-1)
                          for t, g in zip(theta.values(), gs)])
        return self._numpy(flat, np.float64)

    def batch_loss(self, batch):
        with torch.no_grad():
            return float(self._model_loss(self._selected(), self._to_device(batch)))

    # ---- Hessian-vector products --------------------------------------------------------------
    def _hvp(self, f, primal, tangent):
        """``H t`` of scalar ``f`` at ``primal`` (tensor or dict): forward-over-reverse, or
        reverse-over-reverse where the model has no forward-mode derivatives."""
        if self._fwd_ok is not False:
            try:
                out = jvp(grad(f), (primal,), (tangent,))[1]
            except Exception as err:  # noqa: BLE001 - e.g. an op without a forward-mode formula
                if self._fwd_ok:
                    raise
                warnings.warn(
                    f"forward-mode autodiff fails on {type(self.model).__name__} "
                    f"({type(err).__name__}: {_first_line(err)}); using "
                    "reverse-over-reverse Hessian-vector products instead.", RuntimeWarning,
                    stacklevel=4)
                self._fwd_ok = False
            else:
                self._fwd_ok = True
                return out
        p_leaves, spec = pytree.tree_flatten(primal)
        t_leaves = pytree.tree_leaves(tangent)
        req = [p.detach().requires_grad_(True) for p in p_leaves]
        with torch.enable_grad():
            gs = torch.autograd.grad(f(pytree.tree_unflatten(req, spec)), req, create_graph=True)
            dot = sum((g * t).sum() for g, t in zip(gs, t_leaves))
            hv = torch.autograd.grad(dot, req, allow_unused=True)
        return pytree.tree_unflatten(
            [torch.zeros_like(r) if h is None else h for r, h in zip(req, hv)], spec)

    def _split(self, flat, idx=None):
        idx = range(len(self.names)) if idx is None else idx
        parts = torch.split(flat, [self.sizes[i] for i in idx])
        return {self.names[i]: p.view(self.shapes[i]).to(self.dtype) for i, p in zip(idx, parts)}

    def sketched_hvp(self, batches, weights, plan, mode):
        self._prewarm(plan)
        batches = [self._to_device(b) for b in batches]

        def op(v):
            v = torch.as_tensor(np.asarray(v), device=self.device).to(self.sketch_dtype)
            if mode == "implicit":
                bases = self._bases(plan)
                acc = self.weighted_sum(batches, weights, lambda batch: self._hvp(
                    lambda w: self._model_loss(self._theta(w, plan, mode, bases), batch),
                    self._w0(plan), v))
                return self._numpy(acc, np.float64)
            tangent = {}
            for block in plan.blocks:
                tangent.update(self._split(plan.transpose(block, v), block.members))
            theta = self._selected()
            tangent = {n: tangent[n] for n in theta}
            flat = self.weighted_sum(batches, weights, lambda batch: torch.cat(
                [h.reshape(-1).to(self.sketch_dtype) for h in self._hvp(
                    lambda th: self._model_loss(th, batch), theta, tangent).values()]))
            acc = dict(zip(theta, torch.split(flat, self.sizes)))
            out = None
            for block in plan.blocks:
                flat = torch.cat([acc[self.names[i]].reshape(-1) for i in block.members])
                part = plan.apply(block, flat)
                out = part if out is None else out + part
            return self._numpy(out, np.float64)

        return op

    def hvp(self, batches, weights):
        batches = [self._to_device(b) for b in batches]

        def op(v):
            tangent = self._split(torch.as_tensor(np.asarray(v), device=self.device))
            theta = self._selected()
            acc = self.weighted_sum(batches, weights, lambda batch: torch.cat(
                [h.reshape(-1).to(torch.float64) for h in self._hvp(
                    lambda th: self._model_loss(th, batch), theta, tangent).values()]))
            return self._numpy(acc, np.float64)

        return op

    def hessian(self, batches, weights):
        batches = [self._to_device(b) for b in batches]
        flat0 = torch.cat([t.detach().reshape(-1) for t in self.tensors])
        n = flat0.numel()

        def one(batch):
            def f(flat):
                return self._model_loss(self._split(flat), batch)

            try:
                h = torch.func.hessian(f)(flat0)
            except Exception:  # noqa: BLE001 - no forward mode: one HVP per column
                eye = torch.eye(n, dtype=flat0.dtype, device=self.device)
                h = torch.stack([self._hvp(f, flat0, eye[j]) for j in range(n)], dim=1)
            return h.to(torch.float64)

        return self._numpy(self.weighted_sum(batches, weights, one), np.float64)

    # ---- the model as a function of one flat vector -------------------------------------------
    def unflatten(self, theta) -> dict:
        """name -> tensor for ``functional_call``: the selected parameters as views of the flat
        vector ``theta`` (N,), differentiable in ``theta``; the other parameters detached, so no
        gradient reaches them."""
        frozen = self.__dict__.get("_frozen")
        if frozen is None:
            chosen = set(self.names)
            frozen = self._frozen = {n: p.detach() for n, p in self.model.named_parameters()
                                     if n not in chosen}
        return {**frozen, **self._split(theta)}

    def flat_loss(self, theta, batch):
        """Mean loss of ``batch`` at ``unflatten(theta)`` (e.g. ``theta0 + Phi^T omega``, the
        implicit mode's point), the module itself untouched: for training a flat vector."""
        return self._model_loss(self.unflatten(theta), self._to_device(batch))

    # ---- parameters ---------------------------------------------------------------------------
    def get_flat(self):
        dt = np.float64 if self.dtype == torch.float64 else np.float32
        return self._numpy(torch.cat([t.detach().reshape(-1) for t in self.tensors]), dt)

    def set_flat(self, theta):
        flat = torch.as_tensor(np.asarray(theta), device=self.device)
        with torch.no_grad():
            for t, part in zip(self.tensors, torch.split(flat, self.sizes)):
                t.copy_(part.view(t.shape).to(t.dtype))

    def values_hash(self) -> str:
        h = hashlib.sha256()
        items = list(self.model.named_parameters()) + list(self.model.named_buffers())
        for name, t in items:
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
            flat = t.detach().reshape(-1).contiguous().cpu()
            h.update(flat.view(torch.uint8).numpy().tobytes())
        return h.hexdigest()
