"""Subspace training of torch models: only ``omega`` in ``theta = theta0 + s Phi^T omega`` learns.

``theta0`` (the model's current, e.g. pretrained, weights) is frozen; the flat ``theta`` goes
through the torch gradients adapter (``FlatModel``: split into the parameter tensors, loss by
``torch.func.functional_call``), so the module itself is never modified during training. Memory
is O(N): ``theta0``, one ``theta`` and the sketch's own O(N) parameters; no ``N x D`` matrix.
``d`` of the ``D_max`` coordinates of ``omega`` are free (``set_dim``); the rest are not
parameters and never move.
"""

from __future__ import annotations

from sketchcore import InvalidOptionError

from .flat import FlatModel
from .projection import column_scale, make_projection

__all__ = ["TorchSubspaceTrainer", "TorchFullTrainer"]


class _TorchFlatModel(FlatModel):
    """``FlatModel`` of an ``nn.Module``, plus evaluation and loading into the module."""

    def __init__(self, model, loss_fn, train_data, metric_fn, **options) -> None:
        import torch

        self.torch = torch
        super().__init__(model, loss_fn, train_data, metric_fn, **options,
                         to_array=lambda a: torch.as_tensor(a, device=self.adapter.device))

    def evaluate(self, theta) -> float:
        """``metric_fn(model)`` with ``theta`` loaded into the module (eval mode), then restored."""
        model = self.adapter.model
        was_training = model.training
        self.load(theta)
        model.eval()
        try:
            with self.torch.no_grad():
                value = float(self.metric_fn(model))
        finally:
            self.adapter.set_flat(self.theta0_host)
            model.train(was_training)
        return value

    def load(self, theta) -> None:
        """Write ``theta`` into the module's selected parameters (to keep the trained model)."""
        self.adapter.set_flat(theta.detach().cpu().numpy())


def _make_optimizer(optimizer, params, lr):
    import torch

    if optimizer is None:
        return torch.optim.Adam(params, lr=lr)
    if isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidOptionError(
            "optimizer must be a factory such as `lambda params: torch.optim.SGD(params, lr=0.1)` "
            "(the trained vector is created inside), not an optimizer instance."
        )
    return optimizer(params)


class TorchSubspaceTrainer:
    """Train ``omega`` (size ``d_max``, first ``d`` coordinates free) of a torch model.

    ``sketch``: an algorithm name, a dict (``algo`` + options) or a ``Sketch`` of shape
    ``(N, d_max)``; ``seed`` seeds the projection and the batch order. ``optimizer``: a factory
    ``params -> torch.optim.Optimizer`` (default Adam with ``lr``). ``unit_columns`` scales
    ``Phi^T`` by ``sqrt(d_max/N)`` so its columns have unit norm on average.

    Nested subspaces: the free coordinates are held as blocks, one leaf tensor per ``set_dim``
    growth, each added to the optimizer as its own parameter group. Coordinates beyond ``d`` are
    not parameters at all (exactly zero, no gradient, no optimizer state), and a newly freed block
    starts with fresh state: Adam's bias correction counts its own steps, so new coordinates do
    not take the oversized first steps a shared step counter would give them.
    """

    def __init__(self, model, loss_fn, train_data, metric_fn, *, d_max, sketch=None, seed=0,
                 optimizer=None, lr=1e-2, params=None, forward=None, batch_size=32,
                 unit_columns=True) -> None:
        import torch

        self.torch = torch
        self.flat = _TorchFlatModel(model, loss_fn, train_data, metric_fn, params=params,
                                    forward=forward, batch_size=batch_size, data_seed=seed)
        self.num_params = self.flat.num_params
        self.op = make_projection(sketch, self.num_params, d_max, seed)
        self.d_max = self.op.out_dim
        self.scale = column_scale(self.op, unit_columns)
        self._factory = (optimizer, lr)
        if isinstance(optimizer, torch.optim.Optimizer):
            _make_optimizer(optimizer, [], lr)  # raises the explanatory error
        self.blocks = []
        self.optimizer = None
        self.d = 0
        self.steps = 0

    def set_dim(self, d: int) -> None:
        """Free the first ``d`` coordinates (``d`` may only grow: the subspaces are nested)."""
        if not 1 <= d <= self.d_max or d < self.d:
            raise InvalidOptionError(
                f"d must grow within 1..d_max={self.d_max} (now {self.d}), got {d}."
            )
        if d == self.d:
            return
        t0 = self.flat.theta0
        block = self.torch.zeros(d - self.d, dtype=t0.dtype, device=t0.device,
                                 requires_grad=True)
        self.blocks.append(block)
        if self.optimizer is None:
            self.optimizer = _make_optimizer(self._factory[0], [block], self._factory[1])
        else:
            self.optimizer.add_param_group({"params": [block]})
        self.d = d

    @property
    def omega(self):
        """The full ``d_max`` vector: the free blocks, then zeros (differentiable)."""
        t0 = self.flat.theta0
        rest = self.torch.zeros(self.d_max - self.d, dtype=t0.dtype, device=t0.device)
        return self.torch.cat([*self.blocks, rest])

    def theta_at(self, omega):
        """``theta0 + s Phi^T omega`` for any ``omega`` of size ``d_max``."""
        return self.flat.theta0 + self.scale * self.op.transpose(omega)

    def theta(self):
        return self.theta_at(self.omega)

    def loss_at(self, batch, omega=None):
        return self.flat.loss(self.theta_at(self.omega if omega is None else omega), batch)

    def step(self) -> float:
        """One optimizer step on the next batch; returns the batch loss."""
        if self.d == 0:
            raise InvalidOptionError("call set_dim(d) before step().")
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.loss_at(next(self.flat.batches))
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return float(loss.detach())

    def evaluate(self) -> float:
        with self.torch.no_grad():
            return self.flat.evaluate(self.theta())

    def load_into_model(self) -> None:
        """Write the trained ``theta`` into the model's parameters."""
        with self.torch.no_grad():
            self.flat.load(self.theta())


class TorchFullTrainer:
    """Full fine-tuning of the same parameters with the same data pipeline (the baseline)."""

    def __init__(self, model, loss_fn, train_data, metric_fn, *, seed=0, optimizer=None,
                 lr=1e-3, params=None, forward=None, batch_size=32) -> None:
        import torch

        self.torch = torch
        self.flat = _TorchFlatModel(model, loss_fn, train_data, metric_fn, params=params,
                                    forward=forward, batch_size=batch_size, data_seed=seed)
        self.num_params = self.flat.num_params
        self.theta_ = self.flat.theta0.clone().requires_grad_(True)
        self.optimizer = _make_optimizer(optimizer, [self.theta_], lr)
        self.steps = 0

    def step(self) -> float:
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.flat.loss(self.theta_, next(self.flat.batches))
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return float(loss.detach())

    def evaluate(self) -> float:
        return self.flat.evaluate(self.theta_)
