"""The names renamed by the apply/transpose and options vocabulary: each old name still works for
one release and warns with a DeprecationWarning that names its replacement."""

from __future__ import annotations

import warnings

import array_api_compat.numpy as anp
import numpy as np
import pytest

import sketchcore as sk
from sketchcore.gradients import SketchPlan

RENAMED = "sketchcore renamed"


def _op(**options):
    return sk.Sketch(algo="affd", in_dim=100, out_dim=16, seed=3, **options)


def _x(*shape):
    return np.random.default_rng(0).standard_normal(shape)


def test_sketch_impl_is_algorithm():
    op = _op()
    with pytest.warns(DeprecationWarning, match=f"{RENAMED} Sketch.impl to Sketch.algorithm"):
        assert op.impl is op.algorithm
    assert isinstance(op.algorithm, sk.SketchAlgorithm)


def test_algorithm_forward_adjoint_call_apply_transpose():
    op, be = _op(), sk.Backend(anp)
    x, y = _x(2, 100), _x(2, 16)
    with pytest.warns(DeprecationWarning, match="SketchAlgorithm.forward to SketchAlgorithm.apply"):
        got = op.algorithm.forward(be, x)
    np.testing.assert_allclose(got, op.algorithm.apply(be, x))
    with pytest.warns(DeprecationWarning, match="SketchAlgorithm.adjoint to SketchAlgorithm.transpose"):
        got = op.algorithm.adjoint(be, y)
    np.testing.assert_allclose(got, op.algorithm.transpose(be, y))


def test_opts_and_class_options_are_the_new_names():
    op = _op(max_block=16)
    algorithm = op.algorithm
    assert algorithm.options["max_block"] == 16 and op.options == algorithm.options
    assert type(algorithm).default_options["max_block"] == 1024
    with pytest.warns(DeprecationWarning, match="SketchAlgorithm.opts to SketchAlgorithm.options"):
        assert algorithm.opts is algorithm.options
    with pytest.warns(DeprecationWarning, match="default_options"):
        assert type(algorithm).options is type(algorithm).default_options


@pytest.mark.parametrize(("old", "new"), [("forward", "apply"), ("adjoint", "transpose")])
def test_apply_op_old_directions(old, new):
    op = _op()
    x = _x(3, 100) if new == "apply" else _x(3, 16)
    for be in (sk.Backend(anp), sk.resolve_backend(None, x)):  # the base and an override
        with pytest.warns(DeprecationWarning, match=f"direction '{old}' to '{new}'"):
            got = be.apply_op(op.algorithm, old, x)
        np.testing.assert_allclose(got, be.apply_op(op.algorithm, new, x), rtol=1e-6)
        with pytest.warns(DeprecationWarning, match=f"direction '{old}'"):
            assert be.scratch_is_bounded(op.algorithm, old, x) == be.scratch_is_bounded(
                op.algorithm, new, x)


def test_legacy_subclass_is_mapped_when_defined():
    with pytest.warns(DeprecationWarning) as record:

        class Legacy(sk.SketchAlgorithm):
            name = "legacy_signs"
            summary = "diagonal signs, the old way"
            options = {"scale": 1.0}

            def max_out_dim(self):
                return self.in_dim

            def _build(self):
                self.params.add("s", np.where(_x(self.in_dim) > 0, 1.0, -1.0))

            def forward(self, be, x):
                xp = be.namespace()
                return self.opts["scale"] * x * self.params.get(xp, x, "s")

            def adjoint(self, be, y):
                return self.forward(be, y)

    messages = [str(w.message) for w in record]
    assert any("Legacy.options (class-level defaults) to Legacy.default_options" in m
               for m in messages), messages
    assert any("Legacy.forward to Legacy.apply" in m for m in messages), messages
    assert any("Legacy.adjoint to Legacy.transpose" in m for m in messages), messages
    assert all(w.filename == __file__ for w in record)  # pointed at the class statement
    assert Legacy.default_options == {"scale": 1.0}
    algorithm = Legacy(8, 8, 0, scale=2.0)
    assert algorithm.options == {"scale": 2.0}
    x, be = _x(2, 8), sk.Backend(anp)
    with pytest.warns(DeprecationWarning, match="opts"):
        y = be.apply_op(algorithm, "apply", x)
    np.testing.assert_allclose(y, 2.0 * x * algorithm.params.host["s"])
    with pytest.warns(DeprecationWarning, match="opts"):
        np.testing.assert_allclose(be.apply_op(algorithm, "transpose", x), y)


def test_new_subclass_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Fresh(sk.SketchAlgorithm):
            name = "fresh_identity"
            summary = "the identity"
            default_options = {}

            def max_out_dim(self):
                return self.in_dim

            def _build(self):
                pass

            def apply(self, be, x):
                return x

            def transpose(self, be, y):
                return y

        algorithm = Fresh(4, 4, 0)
        assert sk.Backend(anp).apply_op(algorithm, "transpose", _x(4)).shape == (4,)
        assert algorithm.options == {}


def test_preconditioner_apply_t():
    op, be = _op(), sk.Backend(anp)
    pre = op.algorithm.pre1
    x = _x(2, op.algorithm.n_pad)
    with pytest.warns(DeprecationWarning, match="apply_t to preconditioner.transpose"):
        got = pre.apply_t(be, x)
    np.testing.assert_allclose(got, pre.transpose(be, x))


def test_sketch_plan_and_gradient_sketcher_old_names():
    spec = {"algo": "affd", "out_dim": 16, "seed": 1}
    plan = SketchPlan([40, 30], ["a", "b"], spec, "blocks")
    x, v = _x(3, 70), _x(3, 16)
    block = plan.blocks[0]
    with pytest.warns(DeprecationWarning, match="SketchPlan.lift to SketchPlan.transpose"):
        got = plan.lift(block, v)
    np.testing.assert_allclose(got, plan.transpose(block, v))
    with pytest.warns(DeprecationWarning, match="SketchPlan.sketch_vectors to SketchPlan.apply_sketch"):
        got = plan.sketch_vectors(x)
    np.testing.assert_allclose(got, plan.apply_sketch(x))
    with pytest.warns(DeprecationWarning, match="lift_vectors to SketchPlan.transpose_sketch"):
        got = plan.lift_vectors(v)
    np.testing.assert_allclose(got, plan.transpose_sketch(v))
    # the sketcher's pair delegates to its plan; checked without building a model
    from sketchcore.gradients import GradientSketcher

    gs = GradientSketcher.__new__(GradientSketcher)
    gs.plan = plan
    with pytest.warns(DeprecationWarning, match="GradientSketcher.sketch_vectors to "
                                                "GradientSketcher.apply_sketch"):
        np.testing.assert_allclose(gs.sketch_vectors(x), gs.apply_sketch(x))
    with pytest.warns(DeprecationWarning, match="GradientSketcher.lift_vectors to "
                                                "GradientSketcher.transpose_sketch"):
        np.testing.assert_allclose(gs.lift_vectors(v), gs.transpose_sketch(v))
