"""The random projection ``theta = theta0 + s * Phi^T omega`` shared by both frameworks."""

from __future__ import annotations

import math

import sketchcore as sk
from sketchcore import InvalidOptionError

__all__ = ["DEFAULT_SKETCH", "make_projection", "column_scale", "sketch_label", "check_dims"]

#: the FFT-preconditioned AFJL, one of the sketches the paper used for intrinsic dimension
DEFAULT_SKETCH = {"algo": "afjl", "preconditioner": "fft"}


def make_projection(spec, num_params: int, d_max: int, seed: int) -> sk.Sketch:
    """A ``Sketch`` from ``num_params`` to ``d_max``: ``spec`` is an algorithm name, a dict of
    ``algo`` plus options (a ``seed`` key overrides ``seed``), or an already built ``Sketch``."""
    if spec is None:
        spec = DEFAULT_SKETCH
    if isinstance(spec, sk.Sketch):
        if (spec.in_dim, spec.out_dim) != (num_params, d_max):
            raise InvalidOptionError(
                f"the given Sketch maps {spec.in_dim} -> {spec.out_dim}, but this model has "
                f"{num_params} trainable parameters and d_max={d_max}; build it with "
                f"in_dim={num_params}, out_dim={d_max}, or pass a dict such as "
                f"{{'algo': {spec.algo!r}}}."
            )
        return spec
    if isinstance(spec, str):
        spec = {"algo": spec}
    if not isinstance(spec, dict) or "algo" not in spec:
        raise InvalidOptionError(
            f"sketch must be an algorithm name, a dict with 'algo' and options, or a "
            f"sketchcore.Sketch; got {spec!r}. Algorithms: {sk.algorithms()}."
        )
    opts = dict(spec)
    algo = opts.pop("algo")
    opts.pop("out_dim", None)
    seed = opts.pop("seed", seed)
    return sk.Sketch(algo=algo, in_dim=num_params, out_dim=d_max, seed=seed, **opts)


def column_scale(op: sk.Sketch, unit_columns: bool) -> float:
    """``sqrt(D/N)`` makes the columns of ``s Phi^T`` unit-norm on average (``E ||Phi^T e_j||^2
    = N/D`` for every sketch), so optimizer step sizes mean the same for any ``N`` and ``D``."""
    return math.sqrt(op.out_dim / op.in_dim) if unit_columns else 1.0


def sketch_label(op: sk.Sketch) -> str:
    """A short name for tables: the algorithm and its non-default preconditioner."""
    pre = op.options.get("preconditioner")
    return f"{op.algo}-{pre}" if pre and pre != "hadamard" else op.algo


def check_dims(d_start: int, d_max: int) -> None:
    for name, v in (("d_start", d_start), ("d_max", d_max)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidOptionError(f"{name} must be a positive integer, got {v!r}.")
    if d_start > d_max:
        raise InvalidOptionError(
            f"d_start={d_start} exceeds d_max={d_max}; lower d_start or raise d_max."
        )
