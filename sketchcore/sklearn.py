"""A scikit-learn transformer: ``SketchProjection``, any sketchcore sketch as a random projection.

    from sketchcore.sklearn import SketchProjection
    Pipeline([("sketch", SketchProjection(n_components=256, algo="affd", random_state=0)),
              ("clf", LogisticRegression())])

It plays the role of ``sklearn.random_projection.GaussianRandomProjection`` /
``SparseRandomProjection`` with a structured map: ``transform`` is ``Phi X`` (rows are samples),
``inverse_transform`` is ``Phi^T`` (the adjoint: ``E[Phi^T Phi] = I``, so it is an unbiased
back-projection, not a least-squares inverse), ``get_feature_names_out`` names the outputs
``sketchprojection0, 1, ...``. Importing this module imports scikit-learn; ``import sketchcore``
never does.
"""

from __future__ import annotations

import numbers

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_array, check_is_fitted, validate_data
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sketchcore.sklearn needs scikit-learn >= 1.6 (pip install scikit-learn); the rest of "
        f"sketchcore works without it ({err})") from err

from ._random import MAX_SEED
from .api import Sketch
from .quality import DEFAULT_DELTA, auto_out_dim
from .testing.conformance import to_numpy

__all__ = ["SketchProjection"]


class SketchProjection(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Project samples with a seeded sketchcore sketch (``X`` of shape (n_samples, n_features)
    -> (n_samples, n_components)).

    Parameters
    ----------
    n_components : int or "auto"
        D. ``"auto"`` uses ``sketchcore.auto_out_dim`` with ``n_vectors = n_samples`` of the data
        passed to ``fit`` and ``eps``: all pairwise inner products and norms of the training
        samples within ``eps`` (relative) with probability 0.95, like scikit-learn's
        ``johnson_lindenstrauss_min_dim``, scaled by the algorithm's measured variance and
        capped by the largest D the algorithm allows (the padded n_features).
    algo : str
        Any of ``sketchcore.algorithms()``; ``"affd"`` by default.
    eps : float
        The target of ``n_components="auto"``.
    random_state : int, RandomState or None
        An int is the sketch's seed (``random_state=k`` is the map of ``Sketch(seed=k)``);
        None or a ``RandomState`` draws a seed from it at ``fit`` (scikit-learn's convention:
        None gives another map at every fit).
    backend : str or None
        The sketchcore backend (None: the best one for numpy arrays). Results are numpy arrays.
    algo_options : dict or None
        Options of the algorithm (e.g. ``{"preconditioner": "fft"}``).

    Attributes
    ----------
    n_components_ : int
    seed_ : int
    n_features_in_ : int
    """

    def __init__(self, n_components="auto", *, algo="affd", eps=0.1, random_state=None,
                 backend=None, algo_options=None):
        self.n_components = n_components
        self.algo = algo
        self.eps = eps
        self.random_state = random_state
        self.backend = backend
        self.algo_options = algo_options

    # ---- fitting ------------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Choose D and the seed for ``X``'s shape (the map does not depend on the values)."""
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=True)
        n_samples, n_features = X.shape
        options = dict(self.algo_options or {})
        if isinstance(self.n_components, str) and self.n_components == "auto":
            d = auto_out_dim(n_features, self.algo, eps=self.eps, n_vectors=max(1, n_samples),
                             delta=DEFAULT_DELTA, **options)
        elif isinstance(self.n_components, numbers.Integral) and not isinstance(
                self.n_components, bool) and self.n_components >= 1:
            d = int(self.n_components)
        else:
            raise ValueError(f"n_components must be a positive integer or 'auto', got "
                             f"{self.n_components!r}.")
        if isinstance(self.random_state, numbers.Integral) and not isinstance(
                self.random_state, bool):
            if not 0 <= self.random_state < MAX_SEED:
                raise ValueError(f"random_state must be in [0, 2**64), got {self.random_state}.")
            seed = int(self.random_state)
        else:
            seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        self._sketch = Sketch(algo=self.algo, in_dim=n_features, out_dim=d, seed=seed, **options)
        self.n_components_ = d
        self.seed_ = seed
        return self

    def _op(self) -> Sketch:
        op = getattr(self, "_sketch", None)
        if op is None:  # after unpickling: the map is rebuilt from its arguments
            op = Sketch(algo=self.algo, in_dim=self.n_features_in_, out_dim=self.n_components_,
                        seed=self.seed_, **dict(self.algo_options or {}))
            self._sketch = op
        return op

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_sketch", None)  # parameters are rebuilt from the seed, not pickled
        return state

    # ---- applying -----------------------------------------------------------------------------
    def transform(self, X):
        """``Phi x`` for every row: (n_samples, n_features) -> (n_samples, n_components_)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return to_numpy(self._op().apply(X, backend=self.backend))

    def inverse_transform(self, X):
        """``Phi^T y`` for every row: (n_samples, n_components_) -> (n_samples, n_features).
        The adjoint of ``transform`` (an unbiased back-projection, ``E[Phi^T Phi] = I``)."""
        check_is_fitted(self)
        X = check_array(X, dtype=[np.float64, np.float32])
        if X.shape[1] != self.n_components_:
            raise ValueError(f"X has {X.shape[1]} features, but inverse_transform expects "
                             f"n_components_ = {self.n_components_}.")
        return to_numpy(self._op().transpose(X, backend=self.backend))

    @property
    def _n_features_out(self):
        return self.n_components_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
