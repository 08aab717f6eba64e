"""The search's rules on scripted trainers (no framework): the plateau rule with patience, the
doubling sequence, the D*/2 verification and the refinement below an overshooting D*."""

from __future__ import annotations

import pytest

import sketchcore as sk
from sketchcore_intrinsic_dim.results import RunResult, SearchResult, SeedResult
from sketchcore_intrinsic_dim.search import (DimensionSearchError, Plateau, one_run_search,
                                             refine_down, train_fixed_dim)


class Scripted:
    """``evaluate`` replays a list of metrics (one per check, the first before training)."""

    def __init__(self, metrics, d_max=1024):
        self.metrics, self.d_max, self.calls, self.dims = list(metrics), d_max, 0, []

    def set_dim(self, d):
        self.dims.append(d)

    def step(self):
        return 0.0

    def evaluate(self):
        m = self.metrics[min(self.calls, len(self.metrics) - 1)]
        self.calls += 1
        return m


class Capped:
    """A task whose metric rises towards ``min(1, d / k)`` (k: the planted intrinsic dimension),
    closing 10% of the remaining gap per step; target 0.9 needs d >= 0.9 k plus slack."""

    def __init__(self, k=20, d_max=1024):
        self.k, self.d_max, self.d, self.m = k, d_max, 0, 0.0

    def set_dim(self, d):
        self.d = d

    def step(self):
        self.m += 0.1 * (min(1.0, self.d / self.k) - self.m)
        return 1 - self.m

    def evaluate(self):
        return self.m


def test_plateau_counts_stale_checks_against_the_best():
    p = Plateau(delta=0.1, patience=2, start=0.0)
    assert not p.update(0.5)  # progress
    assert not p.update(0.4)  # a dip: stale 1
    assert not p.update(0.65)  # beats the best (0.5) by 0.15: progress, counter reset
    assert not p.update(0.7)  # +0.05 < delta: stale 1
    assert p.update(0.72)  # stale 2: plateau, counter restarts
    assert not p.update(0.73)
    assert Plateau(0.1, 1, 0.0).update(0.05)  # patience 1: the paper's rule


def test_one_noisy_dip_doubles_with_patience_1_not_with_2():
    script = [0.0, 0.3, 0.5, 0.45, 0.7, 0.95]
    paper = one_run_search(Scripted(script), target=0.9, d_start=4, check_every=1, max_steps=10,
                           delta=0.05, patience=1, progress=False)
    ours = one_run_search(Scripted(script), target=0.9, d_start=4, check_every=1, max_steps=10,
                          delta=0.05, patience=2, progress=False)
    assert paper.doublings == [(3, 8)] and paper.dimension == 8
    assert ours.doublings == [] and ours.dimension == 4 and ours.patience == 2


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_search_on_a_capped_task_is_within_2x_and_verification_holds(patience):
    k = 20  # target 0.9 reachable iff d / k > 0.9, i.e. d >= 19
    res = one_run_search(Capped(k), target=0.9, d_start=1, check_every=10, max_steps=2000,
                         delta=0.01, patience=patience, progress=False)
    assert res.dimension == 32 and [d for _, d in res.doublings] == [2, 4, 8, 16, 32]
    # every d got at least `patience` checks before it doubled
    starts = [0] + [s for s, _ in res.doublings]
    assert all(b - a >= patience * 10 for a, b in zip(starts, starts[1:]))
    runs = refine_down(lambda: Capped(k), res.dimension, target=0.9, check_every=10,
                       max_steps=res.steps, delta=0.01, patience=patience, progress=False)
    assert [r.d for r in runs] == [16] and not runs[0].reached
    rec = SeedResult(seed=0, search=res, verifications=runs)
    assert rec.verified and rec.refined_dimension == 32 and rec.verify_steps == runs[0].steps


def test_refinement_walks_down_an_overshooting_d_star():
    k = 20
    runs = refine_down(lambda: Capped(k), 256, target=0.9, check_every=10, max_steps=500,
                       delta=0.01, progress=False)
    assert [(r.d, r.reached) for r in runs] == [(128, True), (64, True), (32, True), (16, False)]
    res = SearchResult(reached=True, dimension=256, target=0.9, steps=500)
    rec = SeedResult(seed=0, search=res, verifications=runs)
    assert rec.dimension == 256 and not rec.verified and rec.refined_dimension == 32
    only_half = refine_down(lambda: Capped(k), 256, target=0.9, check_every=10, max_steps=500,
                            delta=0.01, refine=False, progress=False)
    assert [r.d for r in only_half] == [128]
    assert refine_down(lambda: Capped(k), 1, target=0.9, check_every=10, max_steps=50,
                       progress=False) == []


def test_fixed_run_stops_on_plateau_by_the_same_rule():
    run = train_fixed_dim(Capped(20), 8, target=0.9, check_every=10, max_steps=2000, delta=0.01,
                          stop_on_plateau=True, patience=2, progress=False)
    assert isinstance(run, RunResult) and run.stopped == "plateau" and not run.reached
    assert run.best_metric == pytest.approx(0.4, abs=0.01)
    assert run.steps < 2000


def test_past_d_max_reports_the_patience():
    with pytest.raises(DimensionSearchError, match="for 2 checks.*Raise d_max"):
        one_run_search(Capped(20, d_max=8), target=0.9, d_start=2, check_every=10,
                       max_steps=2000, delta=0.01, progress=False)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_patience_names_the_fix(bad):
    with pytest.raises(sk.InvalidOptionError, match="patience must be a positive int"):
        one_run_search(Capped(), target=0.9, d_start=2, check_every=10, max_steps=20,
                       patience=bad, progress=False)
