"""Model output functions for TRAK: what is differentiated, and how much each example counts.

TRAK linearizes a *model output function* ``f(z; theta)`` rather than the loss, and weights each
training example by its out-to-loss term ``Q = -dL/df`` (Park et al. 2023, section 3). For
classification with cross-entropy the output is the margin of the correct class,
``f = log(p / (1 - p))`` with ``p`` its softmax probability, and ``Q = 1 - p``.

An :class:`OutputFunction` carries both as functions of ``(model output, batch)`` returning one
value per example. They are written against the array API, so the same function runs on torch
tensors (also inside ``torch.func.vmap``, where the per-example gradient is taken) and on jax
arrays. Nothing here imports torch or jax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["OutputFunction", "MARGIN", "margin", "margin_out_to_loss", "resolve_output",
           "logits_and_labels"]


@dataclass(frozen=True)
class OutputFunction:
    """A model output function and its out-to-loss weight.

    ``values(output, batch)``: ``f(z; theta)`` of every example of the batch, shape ``(B,)``
    (differentiable: TRAK's features are its per-example gradients). ``out_to_loss(output,
    batch)``: TRAK's ``Q`` per example, shape ``(B,)`` (``-dL/df``; computed without gradients).
    ``name`` is recorded in the stores built with it, so a store is only ever scored with the
    function it was built from.
    """

    name: str
    values: Callable
    out_to_loss: Callable

    def mean(self, output, batch):
        """The mean of ``values`` over the batch: the scalar ``GradientSketcher`` differentiates
        (it takes per-example gradients on batches of one example)."""
        v = self.values(output, batch)
        from array_api_compat import array_namespace

        return array_namespace(v).mean(v)


def logits_and_labels(output, batch):
    """The logits of a classifier's output (``output.logits`` for Hugging Face outputs, else the
    output itself) and the labels of the batch (``batch[1]`` of a tuple/list batch,
    ``batch["labels"]`` of a dict batch)."""
    logits = getattr(output, "logits", output)
    if isinstance(batch, dict):
        if "labels" not in batch:
            raise ValueError(f"the margin needs the labels: a dict batch must have a 'labels' "
                             f"entry, got keys {sorted(batch)}; or pass your own OutputFunction.")
        labels = batch["labels"]
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        labels = batch[1]
    else:
        raise ValueError(f"the margin needs the labels: a batch must be (inputs, labels, ...) or a "
                         f"dict with 'labels', got {type(batch).__name__}; or pass your own "
                         "OutputFunction.")
    if getattr(logits, "ndim", 0) != 2:
        raise ValueError(f"the margin needs logits of shape (batch, classes), got shape "
                         f"{tuple(getattr(logits, 'shape', ()))}; pass your own OutputFunction "
                         "for other outputs.")
    return logits, labels


def _split(logits, labels):
    """``(xp, logit of the correct class (B,), logsumexp of the other classes (B,), logsumexp of
    all classes (B,))``."""
    from array_api_compat import array_namespace, device

    xp = array_namespace(logits)
    classes = xp.arange(logits.shape[-1], device=device(logits))
    mask = xp.reshape(labels, (-1, 1)) == xp.reshape(classes, (1, -1))
    correct = xp.sum(xp.where(mask, logits, xp.zeros_like(logits)), axis=-1)
    others = _logsumexp(xp, xp.where(mask, xp.full_like(logits, -float("inf")), logits))
    return xp, correct, others, _logsumexp(xp, logits)


def _logsumexp(xp, x):
    # the max is subtracted and added back: its derivative cancels, the result stays exact
    m = xp.max(x, axis=-1, keepdims=True)
    return xp.reshape(m, (-1,)) + xp.log(xp.sum(xp.exp(x - m), axis=-1))


def margin(output, batch):
    """TRAK's classification output per example: ``log(p / (1 - p))`` with ``p`` the softmax
    probability of the correct class, i.e. its logit minus the logsumexp of the others."""
    _xp, correct, others, _all = _split(*logits_and_labels(output, batch))
    return correct - others


def margin_out_to_loss(output, batch):
    """``Q = 1 - p`` per example (``-d cross-entropy / d margin``), computed as
    ``exp(logsumexp(others) - logsumexp(all))``, which keeps its digits when ``p`` is near 1."""
    xp, _correct, others, all_ = _split(*logits_and_labels(output, batch))
    return xp.exp(others - all_)


#: the default output function: the margin of the correct class, weighted by ``1 - p``
MARGIN = OutputFunction("margin", margin, margin_out_to_loss)

_BUILT_IN = {"margin": MARGIN}


def resolve_output(output) -> OutputFunction:
    """An :class:`OutputFunction`, or the name of a built-in one (``"margin"``)."""
    if isinstance(output, OutputFunction):
        return output
    if isinstance(output, str) and output in _BUILT_IN:
        return _BUILT_IN[output]
    raise ValueError(f"unknown model output function {output!r}; pass one of "
                     f"{sorted(_BUILT_IN)} or a sketchcore_tda.api.OutputFunction(name, values, "
                     "out_to_loss).")
