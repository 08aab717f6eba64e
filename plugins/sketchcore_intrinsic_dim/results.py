"""Plain records of what the searches found (JSON-ready) and their text table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

__all__ = ["Check", "SearchResult", "RunResult", "BinarySearchResult", "SeedResult",
           "BaselineResult", "IntrinsicDimReport"]


@dataclass
class Check:
    """One evaluation: after ``step`` optimizer steps with ``d`` free coordinates."""

    step: int
    d: int
    metric: float
    loss: float | None = None


@dataclass
class SearchResult:
    """The one-run search: ``dimension`` (D*) is the ``d`` at which the target was first met."""

    reached: bool
    dimension: int | None
    target: float
    steps: int
    checks: list[Check] = field(default_factory=list)
    doublings: list[tuple[int, int]] = field(default_factory=list)  # (step, new d)
    reason: str = ""
    seconds: float = 0.0
    delta: float = 0.0  # the plateau threshold that was used
    patience: int = 1  # stale checks before a doubling


@dataclass
class RunResult:
    """Training at one fixed ``d`` (a verification run or a binary-search probe)."""

    d: int
    reached: bool
    best_metric: float
    steps: int
    checks: list[Check] = field(default_factory=list)
    stopped: str = ""  # "target", "plateau" or "budget"
    seconds: float = 0.0


@dataclass
class BinarySearchResult:
    """Bisection over powers of two in [d_start, d_max], one fresh run per probe."""

    dimension: int | None
    steps: int
    probes: list[RunResult] = field(default_factory=list)


@dataclass
class SeedResult:
    """One seed: the search, its verification runs (D*/2, then D*/4, ... while they reach the
    target) and, if asked, a bisection."""

    seed: int
    search: SearchResult
    verifications: list[RunResult] = field(default_factory=list)
    binary: BinarySearchResult | None = None
    error: str | None = None

    @property
    def dimension(self) -> int | None:
        """D* as the search found it."""
        return self.search.dimension

    @property
    def verification(self) -> RunResult | None:
        """The D*/2 run."""
        return self.verifications[0] if self.verifications else None

    @property
    def verified(self) -> bool | None:
        """True when D*/2 stayed below target (D* is then within 2x of the intrinsic dimension)."""
        if self.verification is None:
            return None
        return not self.verification.reached

    @property
    def refined_dimension(self) -> int | None:
        """The smallest d that reached the target: D* lowered by the verification runs that
        reached it (equal to D* when the D*/2 check held)."""
        d = self.dimension
        for run in self.verifications:
            if d is not None and run.reached:
                d = min(d, run.d)
        return d

    @property
    def verify_steps(self) -> int:
        return sum(run.steps for run in self.verifications)


@dataclass
class BaselineResult:
    """Full fine-tuning with the same data and step budget: it sets the target."""

    metric: float  # best evaluated metric
    final_metric: float
    steps: int
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class IntrinsicDimReport:
    """Everything one ``intrinsic_dimension`` call found, for several seeds."""

    num_params: int
    d_max: int
    sketch: dict
    target: float
    target_fraction: float | None
    baseline: BaselineResult | None
    seeds: list[SeedResult]
    config: dict = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def dimensions(self) -> list[int | None]:
        return [s.dimension for s in self.seeds]

    def to_dict(self) -> dict:
        out = asdict(self)
        for rec, s in zip(out["seeds"], self.seeds):
            rec["dimension"] = s.dimension
            rec["verified"] = s.verified
            rec["refined_dimension"] = s.refined_dimension
        return out

    def to_json(self, path=None) -> str:
        text = json.dumps(self.to_dict(), indent=1, default=_plain)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(text)
        return text

    def table(self) -> str:
        """One row per seed: D*, log2 D*, the D*/2 check, D* after refining, the steps spent."""
        rows = [("seed", "D*", "log2", "metric@D*", "D*/2 metric", "D*/2<target", "refined D*",
                 "search steps", "verify steps", "bisect D", "bisect steps")]
        for s in self.seeds:
            last = s.search.checks[-1].metric if s.search.checks else math.nan
            v = s.verification
            b = s.binary
            rows.append((
                str(s.seed),
                str(s.dimension) if s.dimension else "none",
                f"{math.log2(s.dimension):.0f}" if s.dimension else "-",
                f"{last:.4f}",
                f"{v.best_metric:.4f}" if v else "-",
                ("yes" if s.verified else "NO") if v else "-",
                str(s.refined_dimension) if s.refined_dimension else "-",
                str(s.search.steps),
                str(s.verify_steps) if v else "-",
                (str(b.dimension) if b.dimension else "none") if b else "-",
                str(b.steps) if b else "-",
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        head = (f"N={self.num_params}  sketch={self.sketch.get('algo')}"
                f"{_opts(self.sketch)}  d_max={self.d_max}  target={self.target:.4f}")
        if self.baseline is not None:
            head += f"  (full fine-tuning {self.baseline.metric:.4f}"
            if self.target_fraction is not None:
                head += f" x {self.target_fraction:g}"
            head += ")"
        notes = [f"seed {s.seed}: {s.error}" for s in self.seeds if s.error]
        return "\n".join([head, lines[0], "-" * len(lines[0]), *lines[1:], *notes])


def _opts(desc: dict) -> str:
    pre = (desc.get("options") or {}).get("preconditioner")
    return f"/{pre}" if pre else ""


def _plain(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)
