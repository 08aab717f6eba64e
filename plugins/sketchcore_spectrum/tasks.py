"""Built-in models for the spectrum CLI, docs and benchmarks, trained here on bundled data.

- ``digits_mlp``: a 64-32-10 tanh MLP on scikit-learn's bundled 8x8 digits (N = 2410, small
  enough for the exact Hessian and ``eigh``).
- ``gpt2_text``: a GPT-2-config transformer (transformers, random init, 6 layers, width 128,
  ASCII tokens; about 1.2M parameters) on a character corpus made of the source text of a fixed
  list of standard-library modules (ships with Python; nothing is downloaded). ``stdlib_text``
  is ``sketchcore_examples.corpora.stdlib_source_text``, re-exported.

A ``SpectrumTask`` holds the model, the loss, the batches whose mean loss defines the Hessian,
and a seeded training loop (``train(steps, callback)``) used by the evolution study. A user's own
task is any ``module:function`` returning a ``SpectrumTask``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sketchcore_examples.corpora import stdlib_source_text as stdlib_text

__all__ = ["SpectrumTask", "digits_mlp", "gpt2_text", "stdlib_text", "load_task", "BUILTIN"]


@dataclass
class SpectrumTask:
    """A model, its mean loss ``loss_fn(output, batch)``, the Hessian batches, and training.

    ``train_batch(step)`` returns the training batch of a step (seeded, deterministic).
    """

    name: str
    model: Any
    loss_fn: Callable
    hessian_batches: list
    train_batch: Callable[[int], Any]
    lr: float = 1e-3
    forward: Callable | None = None
    info: dict = field(default_factory=dict)
    steps_trained: int = 0

    def train(self, steps: int, *, callback: Callable | None = None, progress: bool = True):
        """Adam for ``steps`` steps from the current weights; ``callback(step, model)`` runs
        before the first step and after every step (``step`` counts all steps trained so far)."""
        import torch

        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            from sketchcore import InvalidOptionError

            raise InvalidOptionError(f"steps must be a non-negative integer, got {steps!r}.")
        opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad],
                               lr=self.lr)
        it = range(steps)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=f"training {self.name}", unit="step")
        if callback is not None:
            callback(self.steps_trained, self.model)
        self.model.train()
        for _ in it:
            batch = self.train_batch(self.steps_trained)
            out = self.model(batch[0]) if self.forward is None else self.forward(self.model, batch)
            loss = self.loss_fn(out, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.steps_trained += 1
            if callback is not None:
                self.model.eval()
                callback(self.steps_trained, self.model)
                self.model.train()
        self.model.eval()
        return self


def digits_mlp(hidden: int = 32, train_steps: int = 200, hessian_examples: int = 512,
               batch_size: int = 64, seed: int = 0, lr: float = 1e-2) -> SpectrumTask:
    """64 -> ``hidden`` -> 10 tanh MLP on sklearn's digits, trained ``train_steps`` Adam steps.

    The Hessian batches are 2 batches of ``hessian_examples / 2`` held-in training examples.
    """
    import torch

    from sketchcore_examples.digits import digits_mlp as mlp, load_digits
    from sketchcore_examples.training import cross_entropy

    torch.manual_seed(seed)
    x, y = (torch.from_numpy(a) for a in load_digits(flat=True, seed=seed))
    model = mlp(hidden, "tanh", flatten=False)
    n = len(y)

    def train_batch(step):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, n, (batch_size,), generator=g)
        return (x[idx], y[idx])

    half = hessian_examples // 2
    hessian_batches = [(x[:half], y[:half]), (x[half:2 * half], y[half:2 * half])]
    task = SpectrumTask("digits-mlp", model, cross_entropy, hessian_batches, train_batch, lr=lr,
                        info={"num_classes": 10})
    if train_steps:
        task.train(train_steps, progress=False)
    return task


def gpt2_text(n_layer: int = 6, n_embd: int = 128, n_head: int = 4, seq_len: int = 64,
              batch_size: int = 16, hessian_batches: int = 2, train_steps: int = 100,
              seed: int = 0, lr: float = 1e-3) -> SpectrumTask:
    """A GPT-2-config causal LM on ASCII characters of standard-library source text
    (``stdlib_text``).

    Defaults give ~1.2M parameters. The last 10% of the corpus is held out; the Hessian batches
    are ``hessian_batches`` fixed batches of ``batch_size`` training windows.
    """
    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from sketchcore_examples.gpt2 import gpt2_lm

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    raw = np.frombuffer(stdlib_text().encode("ascii"), dtype=np.uint8)
    ids = torch.tensor(raw.astype(np.int64))
    split = int(0.9 * len(ids))
    train_ids = ids[:split]
    model = gpt2_lm(vocab_size=128, seq_len=seq_len, n_layer=n_layer, n_embd=n_embd,
                    n_head=n_head, attn_implementation="eager").eval()

    def windows(starts):
        x = torch.stack([train_ids[s:s + seq_len] for s in starts.tolist()])
        t = torch.stack([train_ids[s + 1:s + seq_len + 1] for s in starts.tolist()])
        return (x, t)

    def loss_fn(out, batch):
        logits = out.logits if hasattr(out, "logits") else out[0]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch[1].reshape(-1))

    hi = len(train_ids) - seq_len - 1

    def train_batch(step):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return windows(torch.randint(0, hi, (batch_size,), generator=g))

    g = torch.Generator().manual_seed(seed + 7919)
    hb = [windows(torch.randint(0, hi, (batch_size,), generator=g)) for _ in range(hessian_batches)]
    task = SpectrumTask("gpt2-text", model, loss_fn, hb, train_batch, lr=lr,
                        info={"num_params": sum(p.numel() for p in model.parameters())})
    if train_steps:
        task.train(train_steps, progress=False)
    return task


BUILTIN = {"digits-mlp": digits_mlp, "gpt2-text": gpt2_text}


def load_task(spec: str, **kwargs) -> SpectrumTask:
    """A built-in task name (``digits-mlp``, ``gpt2-text``) or ``module:function`` returning a
    ``SpectrumTask``; ``kwargs`` go to the builder."""
    if spec in BUILTIN:
        return BUILTIN[spec](**kwargs)
    if ":" not in spec:
        from sketchcore._errors import unknown

        raise unknown("task", spec, BUILTIN, "Or pass 'module:function' returning a SpectrumTask.")
    import importlib

    mod, _, fn = spec.partition(":")
    task = getattr(importlib.import_module(mod), fn)(**kwargs)
    if not isinstance(task, SpectrumTask):
        from sketchcore import InvalidOptionError

        raise InvalidOptionError(f"{spec} returned {type(task).__name__}; it must return a "
                        "sketchcore_spectrum.tasks.SpectrumTask.")
    return task
