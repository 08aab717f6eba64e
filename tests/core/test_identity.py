"""A map's numbers are part of its identity: ``describe()["params_sha256"]``."""

from __future__ import annotations

import numpy as np
import pytest

import sketchcore as sk
from core.helpers import CONFIG_IDS, CONFIGS
from sketchcore import _random


def _digest(algo, options, seed=0, in_dim=100, out_dim=16):
    return sk.Sketch(algo=algo, in_dim=in_dim, out_dim=out_dim, seed=seed,
                     **options).describe()["params_sha256"]


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
def test_describe_includes_a_digest_of_the_numbers(algo, options):
    d = _digest(algo, options)
    assert len(d) == 64 and int(d, 16) >= 0
    assert _digest(algo, options) == d
    assert _digest(algo, options, seed=1) != d


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
def test_digest_is_lazy_and_ignores_arrays_built_later(algo, options):
    """Derived arrays (transposes built on first use) are kept but not hashed, so the digest
    is the same whether it is computed before or after the operator was used."""
    op = sk.Sketch(algo=algo, in_dim=100, out_dim=16, seed=0, **options)
    assert op.algorithm._sha256 is None  # nothing hashed until asked
    before = op.describe()["params_sha256"]
    fresh = sk.Sketch(algo=algo, in_dim=100, out_dim=16, seed=0, **options)
    fresh.transpose(np.ones(16))
    fresh(np.ones(100))
    assert fresh.describe()["params_sha256"] == before


def test_a_different_qr_makes_a_different_map(monkeypatch):
    """The Haar factors' numbers come from the QR (``portable_qr``); a QR that differs in the
    last bit of one number is a different map, and the digest says so (the arguments alone do
    not)."""
    cases = [("qk", {}), ("affd", {"preconditioner": "q"})]
    before = [(algo, options, _digest(algo, options)) for algo, options in cases]
    qr = _random.householder_qr_positive

    def off_by_one_ulp(a):
        q, r = qr(a)
        q = q.copy()
        q[0, 0] = np.nextafter(q[0, 0], np.inf)
        return q, r

    monkeypatch.setattr(_random, "householder_qr_positive", off_by_one_ulp)
    for algo, options, digest in before:
        op = sk.Sketch(algo=algo, in_dim=100, out_dim=16, seed=0, **options)
        assert op.describe()["params_sha256"] != digest
        assert {k: v for k, v in op.describe().items() if k != "params_sha256"} == {
            k: v for k, v in sk.Sketch(algo=algo, in_dim=100, out_dim=16, seed=0,
                                        **options).describe().items() if k != "params_sha256"}


@pytest.mark.parametrize(("algo", "options"), CONFIGS, ids=CONFIG_IDS)
def test_a_different_random_stream_makes_a_different_digest(monkeypatch, algo, options):
    """Every random component is covered, the dense baseline's regenerated Gaussians and the
    in-factor permutations included: another stream (as a numpy release may bring) is detected."""
    before = _digest(algo, options)
    rng = _random.rng

    def other_stream(seed, name, index=0):
        return rng(seed + 1 if seed < 2**63 else seed - 1, name, index)

    monkeypatch.setattr(_random, "rng", other_stream)
    assert _digest(algo, options) != before


def test_permutations_are_part_of_the_identity(monkeypatch):
    before = _digest("affd", {"max_block": 8})
    perm = _random.permutation
    monkeypatch.setattr(_random, "permutation",
                        lambda seed, name, n: perm(seed, name, n) if "pre2" not in name
                        else np.arange(n, dtype=np.int64))
    assert _digest("affd", {"max_block": 8}) != before
