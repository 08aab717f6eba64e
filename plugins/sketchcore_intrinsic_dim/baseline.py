"""Full fine-tuning with the same data and step budget: the metric the target is a fraction of."""

from __future__ import annotations

import time

from .results import BaselineResult, Check

__all__ = ["full_finetune"]


def full_finetune(trainer, *, check_every: int, max_steps: int, progress: bool = True,
                  desc: str = "full fine-tuning") -> BaselineResult:
    """Train all selected parameters for ``max_steps``, evaluating every ``check_every`` steps;
    the result's ``metric`` is the best evaluation (the search also stops at its first success)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    checks = [Check(0, trainer.num_params, trainer.evaluate())]
    losses = []
    with tqdm(total=max_steps, desc=desc, disable=not progress, leave=False) as bar:
        for step in range(1, max_steps + 1):
            losses.append(trainer.step())
            bar.update(1)
            if step % check_every == 0 or step == max_steps:
                m = trainer.evaluate()
                checks.append(Check(step, trainer.num_params, m, sum(losses) / len(losses)))
                losses.clear()
                bar.set_postfix(metric=f"{m:.4f}")
    metrics = [c.metric for c in checks]
    return BaselineResult(metric=max(metrics), final_metric=metrics[-1], steps=max_steps,
                          checks=checks, seconds=time.perf_counter() - t0)
