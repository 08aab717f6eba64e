"""The Hessian spectrum over training: from saved checkpoints or from a training callback.

Every step gets a ``SpectrumResult`` computed with the *same* sketch (same algorithm, D and
seed), so the numbers are comparable across steps. ``SpectrumEvolution`` writes the table
(CSV/JSON) and the plots.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from sketchcore import InvalidOptionError

from .hessian import hessian_spectrum, take_batches

__all__ = ["SpectrumEvolution", "SpectrumCallback", "spectrum_evolution", "step_from_path"]

_COLUMNS = ("step", "loss", "lambda_max", "lambda_min", "rneg", "n_outliers", "outliers_saturated",
            "alignment", "max_residual", "num_iter", "seconds")


@dataclass
class SpectrumEvolution:
    """Spectra at training steps: ``steps[i]`` has ``results[i]`` (a ``SpectrumResult``)."""

    steps: list = field(default_factory=list)
    results: list = field(default_factory=list)

    def add(self, step: int, result) -> None:
        self.steps.append(int(step))
        self.results.append(result)

    def rows(self) -> list[dict]:
        """One flat record per step (the CSV columns plus the eigenvalue lists)."""
        out = []
        for step, r in zip(self.steps, self.results):
            out.append({
                "step": step,
                "loss": r.meta.get("loss"),
                "lambda_max": r.lambda_max,
                "lambda_min": r.lambda_min,
                "rneg": r.rneg,
                "n_outliers": r.n_outliers,
                "outliers_saturated": r.outliers_saturated,
                "alignment": r.alignment,
                "max_residual": float(max(r.top_residuals.max(), r.bottom_residuals.max())),
                "num_iter": r.num_iter,
                "seconds": r.seconds,
                "top": [float(x) for x in r.top],
                "bottom": [float(x) for x in r.bottom],
            })
        return out

    def write_csv(self, path) -> Path:
        """Scalars per step, plus ``top_i`` / ``bottom_i`` eigenvalue columns."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        k_top = max((len(r["top"]) for r in rows), default=0)
        k_bot = max((len(r["bottom"]) for r in rows), default=0)
        header = list(_COLUMNS) + [f"top_{i + 1}" for i in range(k_top)] + \
            [f"bottom_{i + 1}" for i in range(k_bot)]
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in rows:
                w.writerow([r[c] for c in _COLUMNS] + r["top"] + [""] * (k_top - len(r["top"]))
                           + r["bottom"] + [""] * (k_bot - len(r["bottom"])))
        return path

    def write_json(self, path) -> Path:
        """Every step's full record (``SpectrumResult.to_dict``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        recs = [{"step": s, **r.to_dict()} for s, r in zip(self.steps, self.results)]
        path.write_text(json.dumps(recs, indent=1, default=str))
        return path

    def table(self) -> str:
        """A plain-text table of the scalars."""
        head = f"{'step':>7} {'loss':>8} {'lambda_max':>11} {'lambda_min':>11} {'RNEG':>7} " \
               f"{'outliers':>8} {'align':>6}"
        lines = [head]
        for r in self.rows():
            al = "" if r["alignment"] is None else f"{r['alignment']:.3f}"
            loss = "" if r["loss"] is None else f"{r['loss']:.4f}"
            sat = "+" if r["outliers_saturated"] else ""
            lines.append(f"{r['step']:>7} {loss:>8} {r['lambda_max']:>11.4g} "
                         f"{r['lambda_min']:>11.4g} {r['rneg']:>7.4f} "
                         f"{str(r['n_outliers']) + sat:>8} {al:>6}")
        return "\n".join(lines)

    def plot(self, out_dir, *, steps=None, prefix: str = "spectrum") -> list[Path]:
        """Write ``{prefix}_at_steps.png`` (spectra at ``steps``, default up to 4 spread over
        the run) and ``{prefix}_evolution.png`` (RNEG, outlier count, lambda_max vs step)."""
        from .plots import plot_evolution, plot_spectra_at_steps

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return [plot_spectra_at_steps(self, out_dir / f"{prefix}_at_steps.png", steps=steps),
                plot_evolution(self, out_dir / f"{prefix}_evolution.png")]


def step_from_path(path, default: int) -> int:
    """The last integer in a checkpoint's file name (``ckpt_000120.pt`` -> 120), else
    ``default``."""
    nums = re.findall(r"\d+", Path(path).stem)
    return int(nums[-1]) if nums else default


def _load_state_dict(model, path) -> None:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise InvalidOptionError(f"{path} does not hold a state_dict (got {type(state).__name__}); "
                                 "save checkpoints with torch.save(model.state_dict(), path).")
    model.load_state_dict(state)


def _fixed_sketch(sketch, seed):
    if sketch is None:
        return {"algo": "affd", "out_dim": 1024, "seed": seed}
    if isinstance(sketch, dict):
        return {"seed": seed, **sketch}
    return sketch


def spectrum_evolution(model, loss_fn, checkpoints, batches, *, steps=None, sketch=None,
                       progress: bool = True, **spectrum_options) -> SpectrumEvolution:
    """Load each checkpoint (a path of a torch ``state_dict``) into ``model`` and compute its
    spectrum on the same ``batches`` with the same sketch.

    ``steps``: the training step of each checkpoint (default: the last number in each file
    name, else its position). ``spectrum_options`` go to ``hessian_spectrum`` (``k``,
    ``num_batches``, ``method``, ``max_iter``, ``params``, ...).
    """
    checkpoints = [Path(p) for p in checkpoints]
    if not checkpoints:
        raise InvalidOptionError("checkpoints is empty; pass the paths of saved state_dicts.")
    missing = [str(p) for p in checkpoints if not p.exists()]
    if missing:
        raise InvalidOptionError(f"checkpoint files not found: {missing}.")
    if steps is None:
        steps = [step_from_path(p, i) for i, p in enumerate(checkpoints)]
    elif len(steps) != len(checkpoints):
        raise InvalidOptionError(f"steps has {len(steps)} entries for {len(checkpoints)} "
                                 "checkpoints; give one step per checkpoint or None.")
    batches = take_batches(batches, spectrum_options.pop("num_batches", None))
    sketch = _fixed_sketch(sketch, spectrum_options.get("seed", 0))
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    evo = SpectrumEvolution()
    it = order
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(order, desc="spectra of checkpoints", unit="ckpt")
    for i in it:
        _load_state_dict(model, checkpoints[i])
        evo.add(steps[i], hessian_spectrum(model, loss_fn, batches, sketch=sketch,
                                           **spectrum_options))
    return evo


class SpectrumCallback:
    """Call as ``callback(step, model)`` from a training loop: every ``every`` steps it computes
    the spectrum (same sketch, same batches) and appends it to ``self.evolution``."""

    def __init__(self, loss_fn, batches, *, every: int, sketch=None, num_batches=None,
                 **spectrum_options):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InvalidOptionError(f"every must be a positive integer, got {every!r}.")
        self.loss_fn = loss_fn
        self.batches = take_batches(batches, num_batches)
        self.every = every
        self.sketch = _fixed_sketch(sketch, spectrum_options.get("seed", 0))
        self.options = spectrum_options
        self.evolution = SpectrumEvolution()

    def __call__(self, step: int, model) -> None:
        if step % self.every:
            return
        self.evolution.add(step, hessian_spectrum(model, self.loss_fn, self.batches,
                                                  sketch=self.sketch, **self.options))
