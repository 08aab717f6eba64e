"""Small real models and data for tests and benchmarks, built here with random or locally trained
weights and bundled data only (nothing is downloaded).

torch: ``tiny_gpt2`` (a transformers GPT-2 from a config) with ``token_batch`` and
``causal_lm_loss``; ``digits_cnn`` with ``digits_data`` (scikit-learn's bundled 8x8 digits) and
``cross_entropy``; ``wide_mlp`` (many square layers, for memory tests); ``ItemCallingNet`` (calls
``.item()`` in forward, which ``torch.func.vmap`` cannot run).
jax: ``jax_mlp`` (an Equinox MLP as ``(apply_fn, params)``) with ``jax_cross_entropy``;
``CallbackMLP`` helpers (``jax_callback_mlp``) whose input goes through ``jax.pure_callback``
without a batching rule, which ``jax.vmap`` cannot run.

Every builder takes a ``seed`` and returns the same model for the same arguments. Heavy libraries
are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import warnings

import numpy as np

# the shared example data and losses (scikit-learn's digits: ``digits_data(n, flat=, seed=)``)
from sketchcore_examples.digits import load_digits as digits_data  # noqa: F401
from sketchcore_examples.gpt2 import causal_lm_loss  # noqa: F401
from sketchcore_examples.training import cross_entropy  # noqa: F401

# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def token_batch(n: int, seq_len: int = 16, vocab_size: int = 256, *, seed: int = 0,
                framework: str = "torch"):
    """A causal-LM batch ``{"input_ids", "labels"}`` of random tokens with some repeated
    structure (each sequence repeats a random motif), so examples differ in meaningful ways."""
    rng = np.random.default_rng(seed)
    motif_len = rng.integers(2, 6, size=n)
    ids = np.empty((n, seq_len), dtype=np.int64)
    for i in range(n):
        motif = rng.integers(0, vocab_size, size=motif_len[i])
        ids[i] = np.resize(motif, seq_len)
        noise = rng.random(seq_len) < 0.2
        ids[i, noise] = rng.integers(0, vocab_size, size=int(noise.sum()))
    if framework == "numpy":
        return {"input_ids": ids, "labels": ids.copy()}
    import torch

    t = torch.from_numpy(ids)
    return {"input_ids": t, "labels": t.clone()}


# --------------------------------------------------------------------------------------------
# torch models and losses
# --------------------------------------------------------------------------------------------


def tiny_gpt2(n_layer: int = 2, n_embd: int = 64, n_head: int = 4, vocab_size: int = 256,
              n_positions: int = 32, *, seed: int = 0, dtype=None):
    """A transformers ``GPT2LMHeadModel`` with random weights, eager attention, in eval mode
    (no dropout, so gradients are deterministic)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                     n_positions=n_positions, bos_token_id=0, eos_token_id=0,
                     attn_implementation="eager")
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    if dtype is not None:
        model = model.to(dtype)
    return model


def digits_cnn(channels: int = 4, *, seed: int = 0):
    """A small CNN for 8x8 digits: conv(1->channels, 3x3) -> tanh -> linear(channels*36 -> 10).
    With the default 4 channels it has 1,490 parameters (small enough for a dense Hessian)."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, channels, 3),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(channels * 36, 10),
    )


def wide_mlp(width: int = 512, depth: int = 40, *, seed: int = 0):
    """``depth`` square ``Linear(width, width)`` layers with tanh, then a 10-way head: many
    equally sized tensors (``width=512, depth=40``: 10.5M parameters)."""
    import torch

    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    layers.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*layers)


def _item_calling_net_class():
    import torch

    class ItemCallingNet(torch.nn.Module):
        """An MLP that normalizes its input by a Python float taken with ``.item()``: fine for
        autograd, impossible for ``torch.func.vmap`` (data-dependent Python value)."""

        def __init__(self, d_in: int = 64, hidden: int = 16, d_out: int = 10):
            super().__init__()
            self.fc1 = torch.nn.Linear(d_in, hidden)
            self.fc2 = torch.nn.Linear(hidden, d_out)

        def forward(self, x):
            scale = max(float(x.abs().max().item()), 1.0)
            return self.fc2(torch.tanh(self.fc1(x / scale)))

    return ItemCallingNet


def item_calling_net(*, seed: int = 0):
    """An ``ItemCallingNet`` (see its docstring) for 64 input features and 10 classes."""
    import torch

    torch.manual_seed(seed)
    return _item_calling_net_class()()


# --------------------------------------------------------------------------------------------
# jax models and losses
# --------------------------------------------------------------------------------------------


def jax_mlp(sizes=(64, 32, 10), *, seed: int = 0, dtype=None):
    """An Equinox MLP as ``(apply_fn, params)``: ``apply_fn(params, x)`` maps a batch
    ``(B, sizes[0])`` to logits ``(B, sizes[-1])``; ``params`` is the MLP's array pytree."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    model = eqx.nn.MLP(sizes[0], sizes[-1], width_size=sizes[1], depth=len(sizes) - 2,
                       activation=jnp.tanh, key=jax.random.PRNGKey(seed))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    if dtype is not None:
        params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)

    def apply_fn(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    return apply_fn, params


def jax_cross_entropy(output, batch):
    """Mean cross-entropy of logits ``output`` against labels ``batch[1]`` (jax)."""
    import jax
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(output.astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(logp, batch[1][:, None].astype(jnp.int32), axis=1))


def jax_callback_mlp(sizes=(64, 16, 10), *, seed: int = 0):
    """Like ``jax_mlp``, but the inputs pass through ``jax.pure_callback`` (a host tanh) with no
    batching rule, so ``jax.vmap`` cannot run the model while ``jax.grad`` can (the callback
    touches only the data, not the parameters)."""
    import jax

    apply_mlp, params = jax_mlp(sizes, seed=seed)

    def host_tanh(x):
        return np.tanh(np.asarray(x)).astype(np.float32)

    def apply_fn(p, x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = jax.pure_callback(host_tanh, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
        return apply_mlp(p, x)

    return apply_fn, params


# --------------------------------------------------------------------------------------------
# gradient backends
# --------------------------------------------------------------------------------------------


def ensure_gradients_backend(framework: str) -> bool:
    """Check that the registry has a backend whose ``gradients_module`` serves ``framework``
    (``"torch"`` or ``"jax"``), as the installed backend packages declare; raise otherwise, so a
    broken registration fails the tests instead of being papered over."""
    from sketchcore.registry import registry

    module = f"sketchcore_{framework}.gradients"
    if any(getattr(b, "gradients_module", None) == module for b in registry().backends.values()):
        return True
    raise RuntimeError(f"no registered backend sets gradients_module={module!r}; is the "
                       f"sketchcore_{framework} backend installed (pip install -e .)?")
