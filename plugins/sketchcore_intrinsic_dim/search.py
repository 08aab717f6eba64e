"""The one-run search for the intrinsic dimension, its D*/2 verification, and a bisection baseline.

Framework-neutral: a *trainer* has ``set_dim(d)`` (free the first ``d`` coordinates of omega; d only
grows), ``step() -> loss`` and ``evaluate() -> metric`` (higher is better). ``make_trainer()``
returns a fresh trainer (same projection, omega = 0) for every independent run.
"""

from __future__ import annotations

import math
import time

from sketchcore import InvalidOptionError, SketchcoreError

from .results import BinarySearchResult, Check, RunResult, SearchResult

__all__ = ["DimensionSearchError", "one_run_search", "train_fixed_dim", "binary_search",
           "refine_down", "default_delta", "Plateau", "DEFAULT_PATIENCE"]

#: checks without progress before the search doubles d (see ``Plateau``)
DEFAULT_PATIENCE = 2


class DimensionSearchError(SketchcoreError, RuntimeError):
    """The search did not reach the target (past d_max, or out of steps); ``.result`` holds the
    partial record (checks, doublings)."""

    def __init__(self, message: str, result: SearchResult) -> None:
        super().__init__(message)
        self.result = result


def default_delta(target: float, start_metric: float) -> float:
    """1% of the gap between the starting metric and the target: a scale-free plateau test."""
    return 0.01 * abs(target - start_metric) or 1e-8


def _bar(total, desc, progress):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)


class Plateau:
    """The doubling rule: a plateau is ``patience`` checks in a row that beat the best metric so
    far by less than ``delta``.

    ALGORITHMS.md's rule compares each check with the previous one (``patience=1`` and the last
    metric instead of the best). On real tasks the evaluated metric is noisy (accuracy on a few
    hundred examples, minibatch Adam), so one unlucky check doubled ``d`` while training at that
    ``d`` was still improving, and the D*/2 verification then reached the target the search had
    given up on. Comparing with the best metric (a dip does not count as progress when it
    recovers) and asking for ``patience`` stale checks (default 2) keeps the rule scale-free and
    cheap while giving every ``d`` at least ``patience * check_every`` steps.
    """

    def __init__(self, delta: float, patience: int, start: float) -> None:
        self.delta, self.patience = delta, patience
        self.best, self.stale = start, 0

    def update(self, metric: float) -> bool:
        """Record a check; True when the run has plateaued (the counter then restarts)."""
        if metric - self.best >= self.delta:
            self.stale = 0
        else:
            self.stale += 1
        self.best = max(self.best, metric)
        if self.stale >= self.patience:
            self.stale = 0
            return True
        return False


def _check_patience(patience: int) -> None:
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
        raise InvalidOptionError(
            f"patience must be a positive int (checks without progress before doubling d), got "
            f"{patience!r}; the default 2 tolerates one noisy check, 1 is the paper's rule.")


def one_run_search(trainer, *, target: float, d_start: int, check_every: int, max_steps: int,
                   delta: float | None = None, patience: int = DEFAULT_PATIENCE,
                   progress: bool = True, desc: str = "search") -> SearchResult:
    """Train in nested subspaces: every ``check_every`` steps evaluate; stop at the target; double
    ``d`` after ``patience`` checks that improve the best metric by less than ``delta``
    (see ``Plateau``).

    Raises ``DimensionSearchError`` when ``d`` would have to exceed ``trainer.d_max`` or when
    ``max_steps`` run out before the target is met.
    """
    _check_patience(patience)
    t0 = time.perf_counter()
    d = d_start
    trainer.set_dim(d)
    start = trainer.evaluate()
    if delta is None:
        delta = default_delta(target, start)
    res = SearchResult(reached=False, dimension=None, target=target, steps=0,
                       checks=[Check(0, d, start)], delta=delta, patience=patience)
    if start >= target:
        res.reached, res.dimension, res.reason = True, d, "target met before training"
        return res
    plateau = Plateau(delta, patience, start)
    losses = []
    with _bar(max_steps, desc, progress) as bar:
        for step in range(1, max_steps + 1):
            losses.append(trainer.step())
            bar.update(1)
            if step % check_every:
                continue
            metric = trainer.evaluate()
            res.checks.append(Check(step, d, metric, sum(losses) / len(losses)))
            losses.clear()
            res.steps = step
            bar.set_postfix(d=d, metric=f"{metric:.4f}", target=f"{target:.4f}")
            if metric >= target:
                res.reached, res.dimension = True, d
                res.reason = f"target {target:.4f} met at step {step} with d={d}"
                break
            if plateau.update(metric):
                if d >= trainer.d_max:
                    res.reason = (f"metric {metric:.4f} stopped improving (by < delta={delta:.3g} "
                                  f"for {patience} checks) "
                                  f"below the target {target:.4f} at d = d_max = {trainer.d_max}")
                    res.seconds = time.perf_counter() - t0
                    raise DimensionSearchError(
                        f"intrinsic-dimension search went past d_max: {res.reason} after {step} "
                        f"steps. Raise d_max (e.g. d_max={2 * trainer.d_max}), lower the target, "
                        f"or give more steps per check (check_every={check_every}).", res)
                d = min(2 * d, trainer.d_max)
                trainer.set_dim(d)
                res.doublings.append((step, d))
    res.seconds = time.perf_counter() - t0
    if not res.reached:
        res.steps = max_steps
        res.reason = (f"step budget max_steps={max_steps} used up at d={d} with metric "
                      f"{res.checks[-1].metric:.4f} < target {target:.4f}")
        raise DimensionSearchError(
            f"intrinsic-dimension search ran out of steps: {res.reason}. Raise max_steps, lower "
            f"check_every or delta (doubling sooner), or lower the target.", res)
    return res


def train_fixed_dim(trainer, d: int, *, target: float, check_every: int, max_steps: int,
                    delta: float | None = None, stop_on_plateau: bool = False,
                    patience: int = DEFAULT_PATIENCE, progress: bool = True, desc: str = "run"
                    ) -> RunResult:
    """Train with ``d`` free coordinates; stop early at the target (or, with
    ``stop_on_plateau``, at a plateau by the search's own rule, ``Plateau``)."""
    _check_patience(patience)
    t0 = time.perf_counter()
    trainer.set_dim(d)
    start = trainer.evaluate()
    if delta is None:
        delta = default_delta(target, start)
    res = RunResult(d=d, reached=start >= target, best_metric=start, steps=0,
                    checks=[Check(0, d, start)], stopped="target" if start >= target else "budget")
    plateau = Plateau(delta, patience, start)
    losses = []
    with _bar(max_steps, desc, progress and not res.reached) as bar:
        for step in range(1, max_steps + 1 if not res.reached else 1):
            losses.append(trainer.step())
            bar.update(1)
            if step % check_every and step != max_steps:
                continue
            metric = trainer.evaluate()
            res.checks.append(Check(step, d, metric, sum(losses) / len(losses)))
            losses.clear()
            res.steps = step
            res.best_metric = max(res.best_metric, metric)
            bar.set_postfix(d=d, metric=f"{metric:.4f}")
            if metric >= target:
                res.reached, res.stopped = True, "target"
                break
            if plateau.update(metric) and stop_on_plateau:
                res.stopped = "plateau"
                break
    res.seconds = time.perf_counter() - t0
    return res


def binary_search(make_trainer, *, target: float, d_start: int, d_max: int, check_every: int,
                  max_steps: int, delta: float | None = None, patience: int = DEFAULT_PATIENCE,
                  progress: bool = True) -> BinarySearchResult:
    """Bisection over ``d`` in ``{d_start * 2^k} <= d_max``: each probe is a fresh run of up to
    ``max_steps`` that stops at the target or at a plateau (the search's own doubling rule), so
    its step count is what an honest bisection costs."""
    grid = [d_start * 2**k for k in range(int(math.log2(d_max // d_start)) + 1)]
    lo, hi = 0, len(grid) - 1
    best = None
    out = BinarySearchResult(dimension=None, steps=0)
    while lo <= hi:
        mid = (lo + hi) // 2
        probe = train_fixed_dim(make_trainer(), grid[mid], target=target,
                                check_every=check_every, max_steps=max_steps, delta=delta,
                                stop_on_plateau=True, patience=patience, progress=progress,
                                desc=f"bisect d={grid[mid]}")
        out.probes.append(probe)
        out.steps += probe.steps
        if probe.reached:
            best, hi = grid[mid], mid - 1
        else:
            lo = mid + 1
    out.dimension = best
    return out


def refine_down(make_trainer, dimension: int, *, target: float, check_every: int, max_steps: int,
                delta: float | None = None, patience: int = DEFAULT_PATIENCE, refine: bool = True,
                progress: bool = True, desc: str = "verify") -> list[RunResult]:
    """The D*/2 verification, continued downwards: train a fresh run at ``dimension // 2``; while
    it reaches the target (and ``refine``), halve again. The last run is the one that stayed below
    the target, so the smallest ``d`` that reached it is within 2x of where the target becomes
    reachable with ``max_steps`` steps. Returns the runs in order (empty if ``dimension < 2``)."""
    runs = []
    d = dimension // 2
    while d >= 1:
        run = train_fixed_dim(make_trainer(), d, target=target, check_every=check_every,
                              max_steps=max_steps, delta=delta, patience=patience,
                              progress=progress, desc=f"{desc} d={d}")
        runs.append(run)
        if not (run.reached and refine):
            break
        d //= 2
    return runs
