"""Subspace training of jax models: ``(apply_fn, params)`` with ``apply_fn(params, inputs)``.

The params' floating-point leaves are the flat ``theta`` of the jax gradients adapter
(``FlatModel``, in pytree order); a jitted step differentiates
``omega -> loss(theta0 + s Phi^T omega)`` with respect to the free blocks of ``omega`` and
applies an optax transformation (default ``optax.adam(lr)``) to each block.
"""

from __future__ import annotations

from sketchcore import InvalidOptionError

from .flat import FlatModel
from .projection import column_scale, make_projection

__all__ = ["JaxSubspaceTrainer", "JaxFullTrainer", "is_jax_model"]


def is_jax_model(model) -> bool:
    return isinstance(model, tuple) and len(model) == 2 and callable(model[0])


class _JaxFlatModel(FlatModel):
    """``FlatModel`` of a jax pair; the metric gets the params pytree."""

    def __init__(self, model, loss_fn, train_data, metric_fn, **options) -> None:
        import jax.numpy as jnp

        if not is_jax_model(model):
            raise InvalidOptionError(
                f"a jax model is a pair (apply_fn, params) with apply_fn(params, inputs); got "
                f"{type(model).__name__}."
            )
        super().__init__(model, loss_fn, train_data, metric_fn, to_array=jnp.asarray, **options)

    def params_of(self, theta):
        """The params pytree at the flat ``theta``."""
        return self.adapter.unflatten(theta)

    def evaluate(self, theta) -> float:
        return float(self.metric_fn(self.params_of(theta)))


class JaxSubspaceTrainer:
    """The jax twin of ``TorchSubspaceTrainer``: train ``omega`` (first ``d`` of ``d_max`` free).

    ``optimizer``: an optax ``GradientTransformation`` (default ``optax.adam(lr)``). As in torch,
    the free coordinates are blocks, one per ``set_dim`` growth, each with its own optimizer state
    (so Adam's bias correction counts each block's own steps); coordinates beyond ``d`` are
    constants, never differentiated or updated. The step is jitted; it is traced again only when
    the number of blocks changes (at most log2(d_max / d_start) + 1 times).
    """

    def __init__(self, model, loss_fn, train_data, metric_fn, *, d_max, sketch=None, seed=0,
                 optimizer=None, lr=1e-2, forward=None, batch_size=32, unit_columns=True,
                 params=None) -> None:
        import jax
        import jax.numpy as jnp
        import optax

        if params is not None:
            raise InvalidOptionError("params= (name patterns) is for torch models; for jax pass "
                                     "the sub-pytree to train as the model's params.")
        self.flat = _JaxFlatModel(model, loss_fn, train_data, metric_fn, forward=forward,
                                  batch_size=batch_size, data_seed=seed)
        self.num_params = self.flat.num_params
        self.op = make_projection(sketch, self.num_params, d_max, seed)
        self.d_max = self.op.out_dim
        self.scale = column_scale(self.op, unit_columns)
        self.dtype = self.flat.theta0.dtype
        self.tx = optimizer if optimizer is not None else optax.adam(lr)
        self.blocks: tuple = ()
        self.states: tuple = ()
        self.d = 0
        self.steps = 0
        flat, op, scale, tx, d_max = self.flat, self.op, self.scale, self.tx, self.d_max

        def omega_of(blocks):
            used = sum(b.shape[0] for b in blocks)
            return jnp.concatenate([*blocks, jnp.zeros(d_max - used, dtype=flat.theta0.dtype)])

        def theta_of(omega):
            # the operator caches its parameters as arrays: build them from concrete values even
            # inside a trace (a cached tracer would leak into the next trace)
            with jax.ensure_compile_time_eval():
                return flat.theta0 + scale * op.transpose(omega)

        def loss_of(omega, batch):
            return flat.loss(theta_of(omega), batch)

        def step(blocks, states, batch):
            loss, grads = jax.value_and_grad(lambda bs: loss_of(omega_of(bs), batch))(blocks)
            new_blocks, new_states = [], []
            for b, g, st in zip(blocks, grads, states):
                updates, st = tx.update(g, st, b)
                new_blocks.append(optax.apply_updates(b, updates))
                new_states.append(st)
            return tuple(new_blocks), tuple(new_states), loss

        self.omega_of = omega_of
        self.theta_of = jax.jit(theta_of)
        self.loss_of = loss_of
        self._step = jax.jit(step)

    def set_dim(self, d: int) -> None:
        import jax.numpy as jnp

        if not 1 <= d <= self.d_max or d < self.d:
            raise InvalidOptionError(
                f"d must grow within 1..d_max={self.d_max} (now {self.d}), got {d}."
            )
        if d == self.d:
            return
        block = jnp.zeros(d - self.d, dtype=self.dtype)
        self.blocks = (*self.blocks, block)
        self.states = (*self.states, self.tx.init(block))
        self.d = d

    @property
    def omega(self):
        return self.omega_of(self.blocks)

    def theta(self):
        return self.theta_of(self.omega)

    def step(self) -> float:
        if self.d == 0:
            raise InvalidOptionError("call set_dim(d) before step().")
        batch = next(self.flat.batches)
        self.blocks, self.states, loss = self._step(self.blocks, self.states, batch)
        self.steps += 1
        return float(loss)

    def evaluate(self) -> float:
        return self.flat.evaluate(self.theta())

    def trained_params(self):
        """The trained parameters as the original pytree."""
        return self.flat.params_of(self.theta())


class JaxFullTrainer:
    """Full fine-tuning of all params with the same data pipeline (the baseline)."""

    def __init__(self, model, loss_fn, train_data, metric_fn, *, seed=0, optimizer=None, lr=1e-3,
                 forward=None, batch_size=32, params=None) -> None:
        import jax
        import optax

        if params is not None:
            raise InvalidOptionError("params= (name patterns) is for torch models.")
        self.flat = _JaxFlatModel(model, loss_fn, train_data, metric_fn, forward=forward,
                                  batch_size=batch_size, data_seed=seed)
        self.num_params = self.flat.num_params
        self.theta_ = self.flat.theta0
        self.tx = optimizer if optimizer is not None else optax.adam(lr)
        self.opt_state = self.tx.init(self.theta_)
        self.steps = 0
        flat, tx = self.flat, self.tx

        def step(theta, opt_state, batch):
            loss, grad = jax.value_and_grad(flat.loss)(theta, batch)
            updates, opt_state = tx.update(grad, opt_state, theta)
            return optax.apply_updates(theta, updates), opt_state, loss

        self._step = jax.jit(step)

    def step(self) -> float:
        batch = next(self.flat.batches)
        self.theta_, self.opt_state, loss = self._step(self.theta_, self.opt_state, batch)
        self.steps += 1
        return float(loss)

    def evaluate(self) -> float:
        return self.flat.evaluate(self.theta_)
