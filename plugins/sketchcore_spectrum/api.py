"""Python API of the spectrum analysis: Hessian eigenvalues of a model from sketched HVPs.

``hessian_spectrum(model, loss_fn, batches, sketch=dict(algo="affd", out_dim=1024, seed=0))``
runs Lanczos (or Arnoldi) on ``v -> Phi H Phi^T v`` in ``R^D`` and returns a ``SpectrumResult``
(top/bottom eigenvalues, Ritz residuals, RNEG, outliers, gradient-outlier alignment).
``operator_spectrum`` does the same for any operator; ``spectrum_evolution`` and
``SpectrumCallback`` follow training; ``accuracy_study`` compares with exact eigenvalues.
"""

from __future__ import annotations

from .accuracy import AccuracyStudy, accuracy_study, reference_spectrum, relative_error
from .derived import count_outliers, gradient_alignment, outlier_ratios, rneg
from .evolution import SpectrumCallback, SpectrumEvolution, spectrum_evolution
from .hessian import hessian_spectrum, sketcher_spectrum, take_batches
from .lanczos import KrylovResult, extreme_eigenpairs
from .planted import PlantedHessian
from .spectrum import SpectrumResult, operator_spectrum, sketched_operator

__all__ = [
    "hessian_spectrum", "sketcher_spectrum", "take_batches",
    "operator_spectrum", "sketched_operator", "SpectrumResult",
    "extreme_eigenpairs", "KrylovResult",
    "rneg", "outlier_ratios", "count_outliers", "gradient_alignment",
    "spectrum_evolution", "SpectrumEvolution", "SpectrumCallback",
    "accuracy_study", "AccuracyStudy", "reference_spectrum", "relative_error",
    "PlantedHessian",
]
