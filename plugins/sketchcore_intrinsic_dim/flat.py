"""A model seen as a function of one flat vector of its selected parameters, for the trainers.

The model work is the gradient layer's adapter (``sketchcore.gradients.find_adapter``, the
machinery of ``GradientSketcher``'s implicit mode): it selects the parameters by fnmatch name
patterns, reads them as one flat vector and evaluates the loss functionally at any flat vector
(``flat_loss``). This class adds what training needs: ``theta0`` (the weights as given, in the
framework's arrays), an endless seeded batch stream and a fingerprint of ``theta0``.
"""

from __future__ import annotations

import hashlib

from sketchcore.gradients import find_adapter

from .data import BatchCycler

__all__ = ["FlatModel"]


class FlatModel:
    """``theta0``, ``loss(theta, batch)`` and the batches of one model; ``to_array`` makes the
    framework's array (torch tensor on the model's device, jax array) from a numpy array."""

    def __init__(self, model, loss_fn, train_data, metric_fn, *, to_array, params=None,
                 forward=None, batch_size=32, data_seed=0) -> None:
        if isinstance(params, str):
            params = [params]
        self.adapter = find_adapter(model, loss_fn, params=params, forward=forward)
        self.metric_fn = metric_fn
        #: the selected parameters as given, on the host (numpy) and as the framework's array
        self.theta0_host = self.adapter.get_flat()
        self.theta0 = to_array(self.theta0_host)
        self.num_params = int(self.theta0_host.size)
        self.batches = BatchCycler(train_data, batch_size=batch_size, seed=data_seed,
                                   convert=to_array)

    def fingerprint(self) -> str:
        """sha256 of ``theta0``'s bytes (which starting point the result belongs to)."""
        return hashlib.sha256(self.theta0_host.tobytes()).hexdigest()

    def loss(self, theta, batch):
        """Mean loss of ``batch`` with the selected parameters set to ``theta`` (differentiable)."""
        return self.adapter.flat_loss(theta, batch)
