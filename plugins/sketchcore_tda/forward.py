"""Forward passes without gradients, and model weights on disk, for torch and jax models.

TRAK's out-to-loss weights and the LDS's measured outputs need a model's output on a batch, with
no gradient; the LDS cache keeps trained torch models as state dicts. Models come as the
gradient layer takes them: a torch ``nn.Module`` or a jax pair ``(apply_fn, params)``; batches
go through the same ``forward(model_call, batch)`` convention (``default_forward``). torch and
jax are imported only when a model of theirs is passed.
"""

from __future__ import annotations

import os
import sys

import numpy as np

__all__ = ["model_output", "per_example_values", "to_numpy", "save_state", "load_state",
           "is_torch_model"]


def is_torch_model(model) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _torch_batch(batch, device, dtype):
    """numpy arrays of a batch as torch tensors on ``device`` (floats in the model's dtype)."""
    import torch

    if isinstance(batch, dict):
        return {k: _torch_batch(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_torch_batch(v, device, dtype) for v in batch)
    if isinstance(batch, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(batch))
        return (t.to(dtype) if t.is_floating_point() else t).to(device)
    if isinstance(batch, torch.Tensor) and batch.device != device:
        return batch.to(device)
    return batch


def model_output(model, batch, forward=None):
    """``(output, batch)``: the model's output on ``batch`` without gradients, and the batch as
    the model saw it (numpy arrays moved to torch for a torch model)."""
    from sketchcore.gradients import default_forward

    forward = forward or default_forward
    if is_torch_model(model):
        import torch

        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = first.dtype if first is not None else torch.float32
        batch = _torch_batch(batch, device, dtype)
        with torch.no_grad():
            return forward(model, batch), batch
    if isinstance(model, tuple) and len(model) == 2 and callable(model[0]):
        apply_fn, params = model

        def model_call(*args, **kwargs):
            return apply_fn(params, *args, **kwargs)

        return forward(model_call, batch), batch
    raise TypeError(f"expected a torch nn.Module or a jax pair (apply_fn, params), got "
                    f"{type(model).__name__}.")


def to_numpy(x, dtype=np.float64) -> np.ndarray:
    """A torch tensor or any array as a numpy array of ``dtype``."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def per_example_values(model, fn, data, *, forward=None, batch_size: int = 256) -> np.ndarray:
    """``fn(output, batch)`` (one value per example) over all examples of ``data`` (arrays),
    in batches of ``batch_size``: float64 ``(n,)``."""
    from .sources import as_source

    source = as_source(data)
    if not source.sliceable:
        raise ValueError("per_example_values needs the data as arrays (a tuple/list/dict of numpy "
                         "or torch arrays).")
    out = []
    for _row, batch in source.batches(0, source.num_examples, batch_size):
        output, seen = model_output(model, batch, forward)
        out.append(to_numpy(fn(output, seen)).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0)


def save_state(model, path) -> bool:
    """Write a torch model's state dict to ``path`` (atomically: a temporary file renamed into
    place). Returns False, writing nothing, for models of other frameworks."""
    if not is_torch_model(model):
        return False
    import torch

    tmp = f"{path}.partial-{os.getpid()}"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return True


def load_state(model, path) -> None:
    """Load a state dict written by :func:`save_state` into a torch model (data only:
    ``weights_only=True``, so nothing in the file is run)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
