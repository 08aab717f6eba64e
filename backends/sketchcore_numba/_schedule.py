"""Host-side planning: how a Kronecker Hadamard transform is cut into memory passes.

``M = (P_1 H_1 P'_1) x ... x (P_K H_K P'_K)`` acts on the axes of the ``(B_1, ..., B_K)`` tensor
independently, so consecutive factors can be fused into one group ``H_G`` (with the combined
gathers) and the groups applied in any order, one pass over memory each. Factors without
permutations can also be split at any power of two. A plan therefore has as few passes as the
cache allows: the last group (contiguous rows) up to ``ROW_MAX`` elements, each other group up to
``COLUMN_MAX`` rows of a panel whose width fills ``PANEL_BYTES``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Pass", "plan_passes", "ROW_MAX_LOG2", "COLUMN_MAX_LOG2", "PANEL_BYTES"]

#: largest contiguous group of the row pass (2^16 float32 = 256 KiB: an L2-resident buffer)
ROW_MAX_LOG2 = 16
#: largest group of a column pass: its panel of 2^10 rows still has runs of 128 float32 (512 B);
#: shorter runs make the strided reads latency-bound: each 64 B run costs a full memory latency,
#: where a 2 KiB run streams (the kernel's timings: docs/results.md, section "1b. FWHT vs the
#: memory floor, every CPU backend")
COLUMN_MAX_LOG2 = 10
#: bytes of one column-pass panel: half of a 1 MiB L2 cache
PANEL_BYTES = 1 << 19


@dataclass(frozen=True)
class Pass:
    """One pass ``P_row H_g P_col`` on the middle axis of the ``(a, g, c)`` view of a vector."""

    g: int
    c: int
    colidx: np.ndarray  # int64, length g
    rowidx: np.ndarray
    col_identity: bool
    row_identity: bool


@dataclass(frozen=True)
class _Atom:
    log2: int
    row: np.ndarray | None
    col: np.ndarray | None

    @property
    def free(self) -> bool:
        return self.row is None and self.col is None


def _atoms(sizes, row_perm, col_perm) -> list[_Atom]:
    """Factors as atoms; runs of factors without permutations become one splittable atom."""
    atoms: list[_Atom] = []
    for b, rp, cp in zip(sizes, row_perm, col_perm):
        log2 = int(b).bit_length() - 1
        if b < 1 or (1 << log2) != b:
            raise ValueError(
                f"Hadamard factor sizes must be powers of two, got {tuple(sizes)}; "
                "build the KronPlan with power-of-two sizes (sketchcore.kron_plans.pow2_factors)."
            )
        if log2 == 0:
            continue  # a 1x1 factor is the identity
        if rp is None and cp is None and atoms and atoms[-1].free:
            atoms[-1] = _Atom(atoms[-1].log2 + log2, None, None)
        else:
            atoms.append(_Atom(log2, rp, cp))
    return atoms


def _groups(atoms: list[_Atom]) -> list[list[_Atom]]:
    """Cut the atoms (left to right) into groups, filling from the right: first the row group up
    to ``ROW_MAX_LOG2`` bits, then column groups up to ``COLUMN_MAX_LOG2`` bits (balanced when
    there are no permutations). A permuted atom larger than a group stands alone."""
    free_bits = sum(a.log2 for a in atoms if a.free)
    if all(a.free for a in atoms):
        if free_bits <= ROW_MAX_LOG2:
            return [atoms] if atoms else []
        left = free_bits - ROW_MAX_LOG2
        passes = -(-left // COLUMN_MAX_LOG2)
        base, extra = divmod(left, passes)
        cols = [[_Atom(base + (1 if i < extra else 0), None, None)] for i in range(passes)]
        return cols + [[_Atom(ROW_MAX_LOG2, None, None)]]
    groups: list[list[_Atom]] = []
    current: list[_Atom] = []
    room = ROW_MAX_LOG2
    for atom in reversed(atoms):
        bits = atom.log2
        while bits:
            if atom.free:
                take = min(bits, room) if room else 0
                if take:
                    current.insert(0, _Atom(take, None, None))
                    bits -= take
                    room -= take
                    continue
            elif bits <= room or not current:
                current.insert(0, atom)
                room -= min(bits, room)
                bits = 0
                continue
            groups.insert(0, current)
            current, room = [], COLUMN_MAX_LOG2
    if current:
        groups.insert(0, current)
    return groups


def _combined(group: list[_Atom], side: str) -> tuple[np.ndarray, bool]:
    """The gather of a whole group (``side`` "row" or "col") and whether it is the identity."""
    perms = [getattr(a, side) for a in group]
    g = 1 << sum(a.log2 for a in group)
    if all(p is None for p in perms):
        return np.arange(g, dtype=np.int64), True
    idx = np.zeros(1, dtype=np.int64)
    for a, p in zip(group, perms):
        b = 1 << a.log2
        p = np.arange(b, dtype=np.int64) if p is None else np.asarray(p, dtype=np.int64)
        idx = (idx[:, None] * b + p[None, :]).ravel()
    return idx, False


def plan_passes(sizes, row_perm, col_perm) -> list[Pass]:
    """The passes of ``M`` for one vector of length ``prod(sizes)``, the row pass (if any) last."""
    groups = _groups(_atoms(sizes, row_perm, col_perm))
    passes = []
    right = 0
    for group in reversed(groups):
        bits = sum(a.log2 for a in group)
        colidx, col_id = _combined(group, "col")
        rowidx, row_id = _combined(group, "row")
        passes.insert(0, Pass(1 << bits, 1 << right, colidx, rowidx, col_id, row_id))
        right += bits
    return passes
