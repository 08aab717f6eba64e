"""Write tests/data/fixed_maps.json: the expected numbers of small seeded maps, which
tests/core/test_fixed_maps.py recomputes.

Run by hand from the repository root::

    python tests/data/make_fixed_maps.py

For every algorithm registered by this repository's plugins (``builtin_algorithms()``: default
options, plus the option variants in ``VARIANTS``), each size in ``SIZES`` and each seed in
``SEEDS``, it stores the map's ``params_sha256`` (``Sketch.describe()``) and the float64 results
of ``op.apply`` and ``op.transpose`` (the latter for the smallest size only, to keep the file
small) on the numpy backend, for fixed, non-random inputs (``sin``/``cos`` of a range). It prints
what it wrote and which entries were added, removed or changed. An existing entry whose map is
unchanged (same ``params_sha256``, outputs equal within the test's tolerance) is kept as it was:
the outputs go through BLAS (``dense``'s matmul, the Kronecker factors), whose last bits differ
between machines, so regenerating elsewhere rewrites only the entries whose maps changed.

When regenerating is legitimate:

- a new algorithm or option variant was added: rerun, and check that the diff only *adds* entries;
- a deliberate change of a map's definition (a new random component, another keying, a changed
  scaling), announced as a change of the maps: stores and sketches made before it no longer match,
  which is the point of these values.

  Example: the Haar factors (``qk``, ``preconditioner="q"``) moved from LAPACK's QR, whose last
  bits depend on the CPU and the BLAS build, to ``sketchcore.portable_qr``, which gives the same
  bits on every machine: those entries changed at the rounding level, every other entry stayed
  byte-identical.

When it is NOT: the test fails after a numpy upgrade, or on another machine. That failure is the
information: the same ``(algo, sizes, seed, options)`` now gives different numbers (a different
random stream, a changed QR), so sketches made before are not comparable with sketches made now.
The map parameters are meant to be machine-independent (seeded streams, and a QR made of
IEEE-exact operations in a fixed order; no BLAS or LAPACK), so a digest that differs between two
machines with the same numpy is a bug to find, not a value to regenerate. Find out which component
changed (the digests say which entries), and decide on purpose; do not regenerate to make the test
pass.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import numpy as np

import sketchcore as sk
from sketchcore.registry import registry

OUT = Path(__file__).resolve().parent / "fixed_maps.json"
ROOT = Path(__file__).resolve().parents[2]

#: option variants besides the defaults (an algorithm missing here is stored with its defaults)
VARIANTS: dict[str, list[dict]] = {
    "affd": [{"preconditioner": p} for p in ("hadamard", "fft", "q")]
    + [{"preconditioner": "hadamard", "max_block": 8}],
    "afjl": [{"preconditioner": p} for p in ("hadamard", "fft", "q")]
    + [{"preconditioner": "fft", "max_block": 8}],
    "qk": [{}, {"in_factors": (10, 10, 3), "out_factors": (4, 2, 2)}],
    "sjlt": [{}, {"nnz_per_col": 1}],
}
SIZES = [(100, 16), (300, 16)]
SEEDS = [0, 7, 2**64 - 1]


def fixed_input(n: int) -> np.ndarray:
    """A deterministic, non-random input of length ``n`` (float64)."""
    return np.sin(np.arange(1, n + 1, dtype=np.float64))


def fixed_output_input(d: int) -> np.ndarray:
    """A deterministic, non-random input of the transpose, of length ``d`` (float64)."""
    return np.cos(np.arange(1, d + 1, dtype=np.float64))


def case_id(algo: str, options: dict, in_dim: int, out_dim: int, seed: int) -> str:
    opts = ",".join(f"{k}={_plain(v)}" for k, v in sorted(options.items()))
    return f"{algo}[{opts}]/N{in_dim}/D{out_dim}/seed{seed}"


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def builtin_algorithms() -> list[str]:
    """The algorithms registered by the plugins shipped in this repository: the core's sketches
    and the entry points the top-level pyproject.toml declares (not third-party ones)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    groups = meta["project"].get("entry-points", {})
    plugins = {"sketchcore.sketches"} | {name for group in groups.values() for name in group}
    sources = registry().sources
    return [a for a in sk.algorithms() if sources.get(a) in plugins]


def cases():
    """(id, algo, options, in_dim, out_dim, seed) for every stored entry."""
    for algo in builtin_algorithms():
        for options in VARIANTS.get(algo, [{}]):
            for in_dim, out_dim in SIZES:
                for seed in SEEDS:
                    yield (case_id(algo, options, in_dim, out_dim, seed), algo, options, in_dim,
                           out_dim, seed)


def compute(algo: str, options: dict, in_dim: int, out_dim: int, seed: int, *,
            transpose: bool) -> dict:
    """The values stored for one case (also what the test recomputes)."""
    op = sk.Sketch(algo=algo, in_dim=in_dim, out_dim=out_dim, seed=seed, **options)
    y = op.apply(fixed_input(in_dim), backend="numpy")
    out = {
        "params_sha256": op.describe()["params_sha256"],
        "apply": [float(v) for v in np.asarray(y, dtype=np.float64)],
    }
    if transpose:
        xt = op.transpose(fixed_output_input(out_dim), backend="numpy")
        out["transpose"] = [float(v) for v in np.asarray(xt, dtype=np.float64)]
    return out


def same_map(old: dict, new: dict) -> bool:
    """Whether ``new`` is the map stored as ``old``, its outputs equal to rounding (the tolerance
    of tests/core/test_fixed_maps.py): the same digest and fields, outputs within 1e-12."""
    if set(old) != set(new) or old["params_sha256"] != new["params_sha256"]:
        return False
    if any(old[k] != new[k] for k in old if k not in ("apply", "transpose")):
        return False
    for key in ("apply", "transpose"):
        if key in old:
            w, g = np.asarray(old[key]), np.asarray(new[key])
            if w.shape != g.shape or not np.allclose(g, w, rtol=1e-12,
                                                      atol=1e-12 * float(np.max(np.abs(w)))):
                return False
    return True


def main() -> int:
    old = json.loads(OUT.read_text())["maps"] if OUT.exists() else {}
    maps = {}
    kept = 0
    for cid, algo, options, in_dim, out_dim, seed in cases():
        maps[cid] = {"algo": algo, "options": {k: _plain(v) for k, v in options.items()},
                     "in_dim": in_dim, "out_dim": out_dim, "seed": seed,
                     **compute(algo, options, in_dim, out_dim, seed,
                               transpose=in_dim == SIZES[0][0])}
        if cid in old and maps[cid] != old[cid] and same_map(old[cid], maps[cid]):
            maps[cid] = old[cid]
            kept += 1
    doc = {
        "about": "Expected numbers of small seeded maps; written by tests/data/make_fixed_maps.py "
                 "(read its docstring before regenerating), checked by "
                 "tests/core/test_fixed_maps.py.",
        "numpy": np.__version__,
        "maps": maps,
    }
    # one entry per line; floats are written with repr, the shortest text that reads back as
    # the same float64 (17 significant digits at most)
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}"
                      for k, v in sorted(maps.items()))
    head = json.dumps({k: v for k, v in doc.items() if k != "maps"}, indent=1, sort_keys=True)
    OUT.write_text(f'{head[:-2]},\n "maps": {{\n{body}\n }}\n}}\n')
    added = sorted(set(maps) - set(old))
    removed = sorted(set(old) - set(maps))
    changed = sorted(k for k in set(maps) & set(old) if maps[k] != old[k])
    print(f"wrote {len(maps)} maps to tests/data/{OUT.name}")
    if kept:
        print(f"  {kept} entries kept as they were: the same map, outputs equal to rounding")
    for algo in builtin_algorithms():
        n = sum(1 for m in maps.values() if m["algo"] == algo)
        print(f"  {algo:<8} {n:>3} entries")
    for label, names in (("added", added), ("removed", removed), ("CHANGED", changed)):
        if names:
            print(f"{label} ({len(names)}):")
            for name in names:
                print(f"  {name}")
    if changed:
        print("Entries changed: the maps now give different numbers. See this script's docstring "
              "before committing this file.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
