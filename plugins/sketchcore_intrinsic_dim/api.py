"""The Python API of the intrinsic-dimension analysis.

``intrinsic_dimension(model, loss_fn, train_data, metric, ...)`` runs full fine-tuning (the
target), then for each seed the one-run search for D* and the D*/2 verification (and, if asked,
a bisection over D for comparison), and returns an ``IntrinsicDimReport`` (``.table()``,
``.to_json()``, ``plot_report``). Models: a torch ``nn.Module`` or a jax pair
``(apply_fn, params)``. ``metric`` is higher-is-better: torch ``metric(model)``, jax
``metric(params)``.
"""

from __future__ import annotations

from sketchcore import InvalidOptionError

from .baseline import full_finetune
from .projection import DEFAULT_SKETCH, check_dims
from .results import IntrinsicDimReport, SeedResult
from .search import (DEFAULT_PATIENCE, DimensionSearchError, binary_search, one_run_search,
                     refine_down)

__all__ = ["intrinsic_dimension", "search_dimension", "full_finetune_baseline",
           "make_subspace_trainer", "make_full_trainer", "DimensionSearchError",
           "IntrinsicDimReport", "plot_report", "DEFAULT_SKETCH"]


def _framework(model) -> str:
    from .subspace_jax import is_jax_model

    if is_jax_model(model):
        return "jax"
    if type(model).__module__.split(".")[0] != "builtins":
        try:
            import torch

            if isinstance(model, torch.nn.Module):
                return "torch"
        except ImportError:  # pragma: no cover - torch absent
            pass
    raise InvalidOptionError(
        f"model must be a torch nn.Module or a jax pair (apply_fn, params); got "
        f"{type(model).__name__}."
    )


def make_subspace_trainer(model, loss_fn, train_data, metric, *, d_max, sketch=None, seed=0,
                          **options):
    """A fresh subspace trainer (omega = 0) for the model's framework."""
    if _framework(model) == "jax":
        from .subspace_jax import JaxSubspaceTrainer as cls
    else:
        from .subspace import TorchSubspaceTrainer as cls
    return cls(model, loss_fn, train_data, metric, d_max=d_max, sketch=sketch, seed=seed,
               **options)


def make_full_trainer(model, loss_fn, train_data, metric, *, seed=0, **options):
    """A full fine-tuning trainer (all selected parameters) for the model's framework."""
    if _framework(model) == "jax":
        from .subspace_jax import JaxFullTrainer as cls
    else:
        from .subspace import TorchFullTrainer as cls
    return cls(model, loss_fn, train_data, metric, seed=seed, **options)


def full_finetune_baseline(model, loss_fn, train_data, metric, *, max_steps, check_every=50,
                           lr=1e-3, optimizer=None, seed=0, progress=True, **options):
    """Full fine-tuning for ``max_steps`` (its best evaluated metric sets the default target)."""
    trainer = make_full_trainer(model, loss_fn, train_data, metric, seed=seed, lr=lr,
                                optimizer=optimizer, **options)
    return full_finetune(trainer, check_every=check_every, max_steps=max_steps,
                         progress=progress)


def search_dimension(model, loss_fn, train_data, metric, *, target, d_max, d_start=16,
                     check_every=50, max_steps=2000, delta=None, patience=DEFAULT_PATIENCE,
                     sketch=None, seed=0, progress=True, **options):
    """One seed of the one-run search; raises ``DimensionSearchError`` past ``d_max``."""
    check_dims(d_start, d_max)
    trainer = make_subspace_trainer(model, loss_fn, train_data, metric, d_max=d_max,
                                    sketch=sketch, seed=seed, **options)
    return one_run_search(trainer, target=target, d_start=d_start, check_every=check_every,
                          max_steps=max_steps, delta=delta, patience=patience,
                          progress=progress, desc=f"search seed={seed}")


def intrinsic_dimension(model, loss_fn, train_data, metric, *, d_max, d_start=16, seeds=(0,),
                        sketch=None, target=None, target_fraction=0.9, check_every=50,
                        max_steps=2000, delta=None, patience=DEFAULT_PATIENCE, lr=1e-2,
                        optimizer=None, baseline_lr=1e-3, baseline_optimizer=None,
                        baseline_steps=None, verify=True, refine=True, verify_steps=None,
                        bisect=False, params=None, forward=None,
                        batch_size=32, unit_columns=True, progress=True) -> IntrinsicDimReport:
    """D* for each seed, with the baseline and the D*/2 verification.

    ``target``: the metric to reach; ``None`` runs full fine-tuning for ``baseline_steps``
    (default ``max_steps``) and uses ``target_fraction`` of its best metric. Each seed seeds the
    projection and the batch order; ``theta0`` is the model's weights as given. ``patience``:
    checks without progress (by ``delta``, default 1% of the gap to the target) before ``d``
    doubles. The D*/2 run gets ``verify_steps`` (default: as many steps as that seed's search
    used); when it reaches the target anyway and ``refine`` is on, D*/4, ... follow until one
    stays below it (``SeedResult.refined_dimension``). ``bisect=True`` also
    runs a bisection over powers of two for the same seed (its steps are counted).
    A seed whose search fails is recorded with its error, not raised. ``params`` (torch: fnmatch
    patterns of the tensors to train) and ``forward(model_call, batch)`` mean what they mean in
    ``sketchcore.gradients.GradientSketcher``, whose adapters run the model.
    """
    check_dims(d_start, d_max)
    if isinstance(seeds, int):
        seeds = [seeds]
    if not seeds:
        raise InvalidOptionError("seeds must list at least one seed, e.g. seeds=[0, 1, 2].")
    if target is None and not 0 < target_fraction <= 1.5:
        raise InvalidOptionError(
            f"target_fraction must be in (0, 1.5], got {target_fraction}; e.g. 0.9 = 90% of full "
            f"fine-tuning's metric, or pass target= directly."
        )
    common = dict(forward=forward, batch_size=batch_size, params=params)
    baseline = None
    if target is None:
        baseline = full_finetune_baseline(
            model, loss_fn, train_data, metric, max_steps=baseline_steps or max_steps,
            check_every=check_every, lr=baseline_lr, optimizer=baseline_optimizer,
            progress=progress, **common)
        target = target_fraction * baseline.metric
        fraction = target_fraction
    else:
        fraction = None
    sub = dict(common, d_max=d_max, sketch=sketch, lr=lr, optimizer=optimizer,
               unit_columns=unit_columns)

    def fresh(seed):
        return make_subspace_trainer(model, loss_fn, train_data, metric, seed=seed, **sub)

    results = []
    first = None
    for seed in seeds:
        trainer = fresh(seed)
        first = first or trainer
        try:
            found = one_run_search(trainer, target=target, d_start=d_start,
                                   check_every=check_every, max_steps=max_steps, delta=delta,
                                   patience=patience, progress=progress,
                                   desc=f"search seed={seed}")
            rec = SeedResult(seed=seed, search=found)
        except DimensionSearchError as err:
            rec = SeedResult(seed=seed, search=err.result, error=str(err))
        used_delta = rec.search.delta
        if verify and rec.dimension is not None:
            rec.verifications = refine_down(
                lambda s=seed: fresh(s), rec.dimension, target=target, check_every=check_every,
                max_steps=verify_steps or rec.search.steps, delta=used_delta, patience=patience,
                refine=refine, progress=progress, desc=f"verify seed={seed}")
        if bisect:
            rec.binary = binary_search(lambda s=seed: fresh(s), target=target, d_start=d_start,
                                       d_max=d_max, check_every=check_every,
                                       max_steps=max_steps, delta=used_delta, patience=patience,
                                       progress=progress)
        results.append(rec)
    config = dict(d_start=d_start, check_every=check_every, max_steps=max_steps, delta=delta,
                  patience=patience, refine=refine,
                  lr=lr, baseline_lr=baseline_lr, batch_size=batch_size,
                  unit_columns=unit_columns, optimizer="adam" if optimizer is None else "custom",
                  params=params, framework=_framework(model))
    return IntrinsicDimReport(
        num_params=first.num_params, d_max=first.d_max, sketch=first.op.describe(),
        target=float(target), target_fraction=fraction, baseline=baseline, seeds=results,
        config=config, fingerprint=first.flat.fingerprint())


def plot_report(report, path, *, title=None):
    """Metric vs step for every seed with the d doublings marked (writes ``path``)."""
    from .plots import plot_report as _plot

    return _plot(report, path, title=title)

