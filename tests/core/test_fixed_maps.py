"""Fixed-value regression tests: small seeded maps must keep their numbers.

The expected values (tests/data/fixed_maps.json) were written by tests/data/make_fixed_maps.py;
its docstring says when regenerating them is legitimate. A failure here means the same
``(algo, sizes, seed, options)`` now gives another map (a changed random stream, QR or keying),
so sketches stored before are not comparable with sketches made now.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
MAPS = json.loads((DATA / "fixed_maps.json").read_text())["maps"]


def _generator():
    spec = importlib.util.spec_from_file_location("make_fixed_maps", DATA / "make_fixed_maps.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_fixed_maps", module)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


@pytest.mark.parametrize("case", sorted(MAPS))
def test_map_keeps_its_numbers(case):
    want = MAPS[case]
    got = GEN.compute(want["algo"], want["options"], want["in_dim"], want["out_dim"], want["seed"],
                      transpose="transpose" in want)
    assert got["params_sha256"] == want["params_sha256"], (
        f"{case}: the parameters changed (another random stream or QR?); see "
        "tests/data/make_fixed_maps.py before regenerating")
    for key in ("apply", "transpose"):
        if key in want:
            w = np.asarray(want[key])
            np.testing.assert_allclose(got[key], w, rtol=1e-12,
                                       atol=1e-12 * float(np.max(np.abs(w))), err_msg=case)


def test_every_builtin_algorithm_has_fixed_values():
    """A new algorithm must add its expected values: rerun tests/data/make_fixed_maps.py."""
    names = GEN.builtin_algorithms()
    assert {"dense", "fjl", "ffd", "affd", "afjl", "qk"} <= set(names)
    stored = {m["algo"] for m in MAPS.values()}
    missing = [a for a in names if a not in stored]
    assert not missing, (f"no fixed values for {missing}: run "
                         "`python tests/data/make_fixed_maps.py` and commit the new entries")


@pytest.mark.parametrize("algo", ["affd", "afjl"])
def test_every_preconditioner_has_fixed_values(algo):
    stored = {m["options"].get("preconditioner") for m in MAPS.values() if m["algo"] == algo}
    assert {"hadamard", "fft", "q"} <= stored


def test_the_generator_would_write_the_stored_cases():
    """The stored file and the generator agree on which cases exist (regenerated after edits)."""
    assert {c[0] for c in GEN.cases()} == set(MAPS)
