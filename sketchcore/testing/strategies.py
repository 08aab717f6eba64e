"""Hypothesis strategies over the inputs of a sketch: sizes, batch shapes, dtypes, seeds, options.

Use them in property tests of a backend or an algorithm::

    from hypothesis import given
    from sketchcore.testing import strategies as scs

    @given(scs.sketch_cases())
    def test_my_backend(case): ...

Sizes stay small (inputs up to 2^12) so that many examples run quickly; they include
non-powers of two, because the Hadamard-based sketches pad them.
"""

from __future__ import annotations

from hypothesis import strategies as st

from ..kron_plans import next_pow2
from .conformance import algorithm_variants

__all__ = [
    "in_dims", "out_dims", "batch_shapes", "float_dtypes", "seeds", "algorithm_configs",
    "sketch_cases",
]

MAX_SEED = 2**64 - 1


def in_dims(min_value: int = 1, max_value: int = 1 << 12) -> st.SearchStrategy[int]:
    """Input sizes N: powers of two, their neighbours (just above a power of two pads to
    almost twice the size), and arbitrary integers."""
    powers = [1 << k for k in range(max_value.bit_length()) if min_value <= 1 << k <= max_value]
    near = sorted({v for p in powers for v in (p - 1, p + 1)
                   if min_value <= v <= max_value})
    return st.one_of(
        st.sampled_from(powers),
        st.sampled_from(near or powers),
        st.integers(min_value, max_value),
    )


def out_dims(in_dim: int, max_value: int | None = None) -> st.SearchStrategy[int]:
    """Sketch sizes D valid for every algorithm at ``in_dim``: 1 .. the padded input size."""
    top = next_pow2(in_dim) if max_value is None else min(max_value, next_pow2(in_dim))
    return st.one_of(st.just(top), st.just(1), st.integers(1, top))


def batch_shapes() -> st.SearchStrategy[tuple[int, ...]]:
    """Leading batch shapes: none, one or two axes, including empty ones."""
    return st.one_of(
        st.just(()),
        st.sampled_from([(0,), (2, 0), (1,)]),
        st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple),
    )


def float_dtypes() -> st.SearchStrategy[str]:
    """Names of the floating dtypes a sketch computes in."""
    return st.sampled_from(["float32", "float64"])


def seeds() -> st.SearchStrategy[int]:
    """Sketch seeds over the whole allowed range [0, 2**64)."""
    return st.one_of(st.sampled_from([0, 1, MAX_SEED]), st.integers(0, MAX_SEED))


@st.composite
def algorithm_configs(draw) -> tuple[str, dict]:
    """``(algo, options)`` over every registered algorithm x preconditioner, with Kronecker
    block sizes small enough that inputs of a few hundred already split into several factors."""
    algo, options = draw(st.sampled_from(algorithm_variants()))
    options = dict(options)
    if "preconditioner" in options:
        options["max_block"] = draw(st.sampled_from([2, 8, 32, 1024]))
    elif algo == "qk":
        k = draw(st.sampled_from([None, 2, 3]))
        if k is not None:
            options["num_factors"] = k
    elif algo == "fjl":
        nnz = draw(st.sampled_from([None, 1, 5]))
        if nnz is not None:
            options["nnz_per_row"] = nnz
    elif algo == "sjlt":
        nnz = draw(st.sampled_from([None, 1, 3, 8]))
        if nnz is not None:
            options["nnz_per_col"] = nnz
    return algo, options


@st.composite
def sketch_cases(draw, max_in_dim: int = 1 << 12) -> dict:
    """A complete case: algo, options, in_dim, out_dim, seed, batch shape, dtype name and a data
    seed for the input values (draw the values with numpy from it: fast and reproducible)."""
    algo, options = draw(algorithm_configs())
    in_dim = draw(in_dims(max_value=max_in_dim))
    out_dim = draw(out_dims(in_dim))
    return {
        "algo": algo,
        "options": options,
        "in_dim": in_dim,
        "out_dim": out_dim,
        "seed": draw(seeds()),
        "batch": draw(batch_shapes()),
        "dtype": draw(float_dtypes()),
        "data_seed": draw(st.integers(0, 2**32 - 1)),
    }
