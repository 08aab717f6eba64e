"""Factored per-example gradient sketches of torch models: linear layers from their inputs and
output gradients, in one batched forward and backward pass (``layout="factored"``).

For a weight whose per-example gradient is a sum of outer products, ``G = sum_t u_t v_t^T``
(``nn.Linear``: ``u = dL/dy_t``, ``v = x_t``; Hugging Face ``Conv1D``: the transpose;
``nn.Embedding``: ``u`` the one-hot of token t, ``v = dL/dy_t``; ``nn.Conv2d``: ``u = dL/dy`` at
an output position, ``v`` the unfolded input patch there), the block's Kronecker map gives
``vec(R G C^T) = sum_t (R u_t) x (C v_t)``: a forward hook projects the layer's input (``C x_t``,
or ``R x_t``, or a gather of ``R``'s columns for token ids) and keeps only that, a hook on the
layer's output receives ``dL/dy`` in the backward pass, projects it and adds
``(R u)^T (C v)`` (one batched matmul over tokens) to the example's sketch. No parameter takes
part in autograd, so the backward pass computes no weight gradient at all.

The other tensors of such layers (biases, LayerNorm weights, weights too small for a Kronecker
block) get exact per-example gradients from the same hooks (``sum_t dL/dy_t``,
``sum_t dL/dy_t * x_hat_t``, ``sum_t u_t v_t^T``), sketched by their block maps. Tensors of any
other module, and tensors the first pass finds read outside their layer's forward (watched with a
``TorchFunctionMode``), take the materialized path: ``vmap(grad)`` over them alone, then their
block maps (``MaterializedGradientWarning`` says which and why).

Per-example losses: ``loss_fn`` on each example's slice of the batched output and batch (a batch
of one, as in the vectorized path); their SUM is differentiated, so each example's output
gradients are its own loss's (examples never mix as long as the model's forward keeps them apart:
batch normalization in training mode is refused).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch.func import functional_call
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from sketchcore._errors import InvalidOptionError, ShapeError
from sketchcore.gradients import KroneckerSketch, MaterializedGradientWarning

__all__ = ["FactoredEngine", "layer_kind", "factorable_weights"]


# ---- which modules are handled -------------------------------------------------------------


def _is_hf_conv1d(m) -> bool:
    cls = type(m)
    return (cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")
            and hasattr(m, "nf") and getattr(m, "weight", None) is not None
            and m.weight.dim() == 2)


def layer_kind(m) -> str | None:
    """``"linear" | "conv1d" | "embedding" | "conv2d" | "layernorm"`` for a module whose forward
    is the library's own (subclasses that override ``forward`` are not recognized), else None."""
    nn = torch.nn
    cls = type(m)
    if isinstance(m, nn.Linear) and cls.forward is nn.Linear.forward:
        return "linear"
    if _is_hf_conv1d(m):
        return "conv1d"
    if isinstance(m, nn.Embedding) and cls.forward is nn.Embedding.forward \
            and m.max_norm is None and not m.scale_grad_by_freq:
        return "embedding"
    if isinstance(m, nn.Conv2d) and cls.forward is nn.Conv2d.forward and m.groups == 1 \
            and m.padding_mode == "zeros" and not isinstance(m.padding, str):
        return "conv2d"
    if isinstance(m, nn.LayerNorm) and cls.forward is nn.LayerNorm.forward \
            and m.elementwise_affine:
        return "layernorm"
    return None


_KRON_KINDS = ("linear", "conv1d", "embedding", "conv2d")


def _owners(model):
    """id(parameter) -> [(module, kind, attr)] over handled modules, and id -> registration
    count over all modules (a tensor registered elsewhere too is not handled)."""
    owners: dict[int, list] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        kind = layer_kind(m)
        if kind is None:
            continue
        for attr in ("weight", "bias"):
            p = m._parameters.get(attr)
            if p is not None and (kind != "embedding" or attr == "weight"):
                entry = (m, kind, attr)
                if all(e[0] is not m for e in owners.get(id(p), [])):
                    owners.setdefault(id(p), []).append(entry)
    counts: dict[int, int] = {}
    for m in {id(m): m for _, m in model.named_modules(remove_duplicate=False)}.values():
        for p in m._parameters.values():
            if p is not None:
                counts[id(p)] = counts.get(id(p), 0) + 1
    return owners, counts


def factorable_weights(model, names, tensors) -> dict:
    """name -> ``(rows, cols)`` of the selected weights every owner of which is a handled linear,
    embedding or convolution layer (the Kronecker candidates of the factored layout)."""
    owners, counts = _owners(model)
    out = {}
    for name, t in zip(names, tensors):
        entries = owners.get(id(t), [])
        if entries and len(entries) == counts.get(id(t), 0) and t.dim() >= 2 \
                and all(k in _KRON_KINDS and a == "weight" for _, k, a in entries):
            out[name] = (int(t.shape[0]), int(t.numel() // t.shape[0]))
    return out


# ---- the per-example loss -------------------------------------------------------------------


def _examples(x, b: int) -> list:
    """The ``b`` examples of a batched pytree, each as a batch of one (tensors with leading axis
    ``b`` are split into views: the backward of a split is one concatenation, where slicing
    each example would allocate a full-batch gradient per example)."""
    if isinstance(x, torch.Tensor):
        return list(x.split(1)) if x.dim() >= 1 and x.shape[0] == b else [x] * b
    if isinstance(x, Mapping):
        cols = {k: _examples(v, b) for k, v in x.items()}
        out = []
        for i in range(b):
            items = {k: v[i] for k, v in cols.items()}
            if type(x) is dict:
                out.append(items)
                continue
            try:
                out.append(type(x)(**items))
            except TypeError:
                out.append(items)
        return out
    if isinstance(x, (tuple, list)):
        cols = [_examples(v, b) for v in x]
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return [type(x)(*(c[i] for c in cols)) for i in range(b)]
        return [type(x)(c[i] for c in cols) for i in range(b)]
    return [x] * b


# ---- outside-use watch ---------------------------------------------------------------------


class _Watch(TorchFunctionMode):
    """Records watched tensors (id -> name) used by a torch function outside the forward of a
    module that owns them (``active`` is the stack of running handled modules' owned ids)."""

    def __init__(self, watched: dict[int, str]):
        super().__init__()
        self.watched = watched
        self.active: list[set] = []
        self.outside: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "__get__":   # attribute reads (.dtype, .shape, ...)
            return func(*args, **kwargs)
        for x in pytree.tree_leaves((args, kwargs)):
            if isinstance(x, torch.Tensor):
                name = self.watched.get(id(x))
                if name is not None and not (self.active and id(x) in self.active[-1]):
                    self.outside.add(name)
        return func(*args, **kwargs)


# ---- the engine ----------------------------------------------------------------------------


class _Task:
    """What one handled module contributes: its Kronecker weight block (if any, in-pass), and
    the names of its tensors whose per-example gradients it materializes."""

    __slots__ = ("module", "kind", "kron", "kron_name", "mat_weight", "mat_bias")

    def __init__(self, module, kind):
        self.module, self.kind = module, kind
        self.kron = None          # the KroneckerSketch of the weight's block
        self.kron_name = None
        self.mat_weight = None    # name of the weight if materialized here
        self.mat_bias = None      # name of the bias if materialized here


class FactoredEngine:
    """Per-example sketches of one ``TorchGradients`` adapter and one factored ``SketchPlan``."""

    def __init__(self, adapter, plan):
        self.adapter = adapter
        self.plan = plan
        self.model = adapter.model
        self._checked = False
        self._setup(demoted=set())

    def _setup(self, demoted: set):
        adapter, plan = self.adapter, self.plan
        owners, counts = _owners(self.model)
        kron_of = {b.members[0]: b for b in plan.kronecker_blocks}
        self.in_pass: set[str] = set()       # names whose contribution the hooks compute
        tasks: dict[int, _Task] = {}
        for i, (name, t) in enumerate(zip(adapter.names, adapter.tensors)):
            entries = owners.get(id(t), [])
            if name in demoted or not entries or len(entries) != counts.get(id(t), 0):
                continue
            block = kron_of.get(i)
            for m, kind, attr in entries:
                task = tasks.setdefault(id(m), _Task(m, kind))
                if attr == "weight" and block is not None:
                    task.kron, task.kron_name = block.sketch, name
                elif attr == "weight":
                    task.mat_weight = name
                else:
                    task.mat_bias = name
            self.in_pass.add(name)
        self.tasks = list(tasks.values())
        self.materialized = [n for n in adapter.names if n not in self.in_pass]
        # blocks whose output is plan.apply of materialized per-example gradients
        self.mat_blocks = [b for b in plan.blocks
                           if not (isinstance(b.sketch, KroneckerSketch)
                                   and adapter.names[b.members[0]] in self.in_pass)]
        self.kron_in_pass = {adapter.names[b.members[0]] for b in plan.kronecker_blocks} \
            & self.in_pass
        self.watched_names = set(self.in_pass)

    # ---- one pass --------------------------------------------------------------------------
    def sketches(self, batch, per_block: bool = False):
        """Per-example sketches ``(B, D)`` of a batch already on the device (float32, or
        float64 for float64 models); with ``per_block`` a dict block name -> ``(B, D)``."""
        for m in self.model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training:
                raise InvalidOptionError(
                    f"layout='factored' runs the batch through {type(self.model).__name__} in one "
                    f"pass, and {type(m).__name__} in training mode mixes the examples of a "
                    "batch; call model.eval() first, or use layout='blocks'.")
        adapter = self.adapter
        b = adapter.batch_size(batch)

        def run(i0, i1):
            sub = pytree.tree_map(lambda x: x[i0:i1] if isinstance(x, torch.Tensor)
                                  and x.dim() >= 1 and x.shape[0] == b else x, batch)
            return self._chunk(sub, i1 - i0, per_block)

        return adapter.in_chunks(b, run, lambda parts: (
            {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if per_block
            else torch.cat(parts)))

    def _chunk(self, batch, b, per_block):
        while True:
            watch = None if self._checked else _Watch({})
            out = self._pass(batch, b, per_block, watch)
            if watch is None:
                break
            self._checked = True
            if not watch.outside:
                break
            bad = sorted(watch.outside)
            warnings.warn(
                f"layout='factored': {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} "
                "is read outside the forward of its layer, so its sketch cannot come from the "
                "layer's inputs and output gradients alone; its per-example gradient is "
                "materialized and sketched with the same map (exact, slower).",
                MaterializedGradientWarning, stacklevel=5)
            self._setup(demoted=set(bad) | (set(self.adapter.names) - self.in_pass))
        if self.materialized:
            mat = self.adapter.per_example_gradient_dict(batch, self.materialized)
            out_mat, grads = out
            grads.update(mat)
            out = out_mat, grads
        acc, grads = out
        result = {} if per_block else acc
        if per_block:
            result.update(acc)
        for block in self.mat_blocks:
            flat = torch.cat([grads[self.adapter.names[i]].reshape(b, -1).to(self._dtype)
                              for i in block.members], dim=1)
            part = self.plan.apply(block, flat)
            if per_block:
                result[block.name] = part
            else:
                result = result + part
        return result

    @property
    def _dtype(self):
        return self.adapter.sketch_dtype

    def _pass(self, batch, b, per_block, watch):
        """One forward/backward pass with hooks: (acc (B, D) or dict of per-block (B, D),
        {name: (B, size) materialized gradients from the hooks})."""
        adapter, plan = self.adapter, self.plan
        dtype, device = self._dtype, adapter.device
        d = plan.out_dim
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        if watch is not None:
            sel = set(self.watched_names)
            watch.watched = {id(params[n]): n for n in sel if n in params}
        acc = {} if per_block else torch.zeros(b, d, dtype=dtype, device=device)
        grads: dict[str, torch.Tensor] = {}
        dummy = torch.zeros((), dtype=dtype, device=device, requires_grad=True)

        def add_kron(name, contrib):
            nonlocal acc
            contrib = contrib.reshape(b, d)
            if per_block:
                acc[name] = acc[name] + contrib if name in acc else contrib
            else:
                acc += contrib

        def add_grad(name, g):
            g = g.reshape(b, -1)
            grads[name] = grads[name] + g if name in grads else g

        def batch_major(task, x):
            """``x`` with the examples on its leading axis: an input shared by all examples
            (leading axis 1, broadcast later, like GPT-2's position ids) is expanded."""
            if x.dim() >= 1 and x.shape[0] == b:
                return x, False
            if x.dim() >= 1 and x.shape[0] == 1:
                return x.expand(b, *x.shape[1:]), True
            raise ShapeError(
                f"layout='factored': a {type(task.module).__name__} layer got an input of "
                f"shape {tuple(x.shape)} whose leading axis is not the batch ({b} examples); "
                "the factored layout needs every handled layer to see the examples on the "
                "leading axis. Use layout='blocks' for this model.")

        def make_hooks(task):
            owned = {id(params[n]) for n in (task.kron_name, task.mat_weight, task.mat_bias)
                     if n is not None and n in params}

            def pre(module, args, kwargs):
                if watch is not None:
                    watch.active.append(owned)

            def post(module, args, kwargs, output):
                if watch is not None:
                    watch.active.pop()
                x = args[0] if args else next(iter(kwargs.values()))
                x, shared = batch_major(task, x)
                saved = self._save(task, module, x.detach())
                if shared:   # each example gets its own copy, hence its own output gradient
                    output = output.expand(b, *output.shape[1:])
                if not output.requires_grad:
                    output = output + dummy.to(output.dtype)

                def on_grad(g):
                    self._backward(task, module, saved, g, b, add_kron, add_grad)

                output.register_hook(on_grad)
                return output

            return pre, post

        handles = []
        try:
            for task in self.tasks:
                pre, post = make_hooks(task)
                handles.append(task.module.register_forward_pre_hook(pre, with_kwargs=True))
                handles.append(task.module.register_forward_hook(post, with_kwargs=True))

            def model_call(*args, **kwargs):
                return functional_call(self.model, params, args, kwargs)

            with torch.enable_grad():
                if watch is not None:
                    with watch:
                        output = adapter.forward(model_call, batch)
                else:
                    output = adapter.forward(model_call, batch)
                total = None
                for out_i, ex_i in zip(_examples(output, b), _examples(batch, b)):
                    li = adapter.loss_fn(out_i, ex_i)
                    total = li if total is None else total + li
                if total.requires_grad:
                    torch.autograd.grad(total, [dummy], allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        if per_block:
            for name in self.kron_in_pass:
                acc.setdefault(name, torch.zeros(b, d, dtype=dtype, device=device))
        for name in self.in_pass - self.kron_in_pass:
            grads.setdefault(name, torch.zeros(b, adapter.sizes[adapter.names.index(name)],
                                               dtype=dtype, device=device))
        return acc, grads

    # ---- per-kind work ---------------------------------------------------------------------
    def _save(self, task, module, x):
        """What the backward hook needs from the input ``x`` (projected when in a Kronecker
        block, raw when a weight gradient is materialized)."""
        kind, dtype = task.kind, self._dtype
        b = x.shape[0]
        saved = {}
        if kind == "embedding":
            ids = x.reshape(b, -1)
            keep = None if module.padding_idx is None else (ids != module.padding_idx)
            saved["ids"], saved["keep"] = ids, keep
            if task.kron is not None:
                r, _ = task.kron.matrices(torch.zeros((), dtype=dtype, device=x.device))
                rows = r.t()[ids]                                   # (B, T, k_r)
                if keep is not None:
                    rows = rows * keep.unsqueeze(-1).to(dtype)
                saved["u"] = rows
            return saved
        if kind == "layernorm":   # the normalized input: layer_norm without its affine part
            xhat = torch.nn.functional.layer_norm(x.to(dtype), module.normalized_shape, None,
                                                  None, module.eps)
            saved["xhat"] = xhat.reshape(b, -1, *module.normalized_shape)
            return saved
        if kind == "conv2d":
            a = torch.nn.functional.unfold(x.to(dtype), module.kernel_size, module.dilation,
                                           module.padding, module.stride)   # (B, cols, L)
            a = a.transpose(1, 2)                                           # (B, L, cols)
        else:
            a = x.to(dtype).reshape(b, -1, x.shape[-1])                     # (B, T, d_in)
        if task.kron is not None:
            r, c = task.kron.matrices(a)
            proj = r if kind == "conv1d" else c          # the input is the rows side of Conv1D
            saved["v" if kind != "conv1d" else "u"] = torch.matmul(a, proj.t())
        if task.mat_weight is not None:
            saved["a"] = a
        return saved

    def _backward(self, task, module, saved, g, b, add_kron, add_grad):
        kind, dtype = task.kind, self._dtype
        if kind == "conv2d":
            delta = g.to(dtype).reshape(b, g.shape[1], -1).transpose(1, 2)   # (B, L, C_out)
        elif kind == "layernorm":
            delta = g.to(dtype).reshape(b, -1, *module.normalized_shape)
            if task.mat_weight is not None:
                add_grad(task.mat_weight, (delta * saved["xhat"]).sum(dim=1))
            if task.mat_bias is not None:
                add_grad(task.mat_bias, delta.sum(dim=1))
            return
        else:
            delta = g.to(dtype).reshape(b, -1, g.shape[-1])                  # (B, T, d_out)
        if kind == "embedding" and saved["keep"] is not None:
            delta = delta * saved["keep"].unsqueeze(-1).to(dtype)
        if task.kron is not None:
            r, c = task.kron.matrices(delta)
            if kind in ("linear", "conv2d"):
                u, v = torch.matmul(delta, r.t()), saved["v"]
            else:                                   # conv1d, embedding: delta is the cols side
                u, v = saved["u"], torch.matmul(delta, c.t())
            add_kron(task.kron_name, torch.bmm(u.transpose(1, 2), v))
        if task.mat_weight is not None:
            if kind in ("linear", "conv2d"):
                add_grad(task.mat_weight, torch.bmm(delta.transpose(1, 2), saved["a"]))
            elif kind == "conv1d":
                add_grad(task.mat_weight, torch.bmm(saved["a"].transpose(1, 2), delta))
            else:                                   # embedding: rows of the one-hot side
                num = module.num_embeddings
                out = torch.zeros(b, num, delta.shape[-1], dtype=dtype, device=delta.device)
                out.scatter_add_(1, saved["ids"].unsqueeze(-1).expand_as(delta), delta)
                add_grad(task.mat_weight, out)
        if task.mat_bias is not None:
            add_grad(task.mat_bias, delta.sum(dim=1))
