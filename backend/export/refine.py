"""Coarse-to-fine density grid: query the field only in the blocks where the surface can be.

The fine grid (``shape`` samples, spacing ``cell``) is cut into blocks of ``s`` x ``s`` x ``s`` cells
whose closures (``(s + 1)^3`` samples) share their faces. A marching-cubes cell lies inside exactly
one block, so a block is either *refined* (every sample of its closure queried) or left to a fill
value: ``OUT`` blocks get 0 (outside), ``IN`` blocks ``inside_value`` (solid). Steps:

1. Every block starts from the coarse grid the extractor already sampled over the field's box
   (``coarse``, spacing ``coarse_cell``): a block whose overlapping coarse cells all lie below
   ``iso / margin`` is OUT, one whose coarse cells all lie above ``iso * margin`` is IN (never on
   the grid's border: the extractor pads the grid with outside there), the others are candidates.
2. Candidates get their 8 corner samples (one query per block): all below ``iso / margin`` -> OUT,
   all above ``iso * margin`` -> IN, else refined. A block holding a coarse sample above
   ``iso / margin`` is refined whatever its corners say (a blob smaller than a block).
3. Flood fill, the adaptive dilation: every queried sample that contradicts the fill of a block
   whose closure contains it (at least ``iso`` next to an OUT block, below ``iso`` next to an IN
   block) refines that block; repeat until no queried sample contradicts any fill.

What this guarantees (tests/backend/export/test_refine.py checks it on a sphere with a fin thinner
than a block, lying between the coarse samples, and a thin rod). Let ``C`` be a 26-connected
component of the fine samples with density >= iso. If one sample of ``C`` is queried, all of ``C``
is: walk ``C`` from that sample; the first unqueried sample ``q`` and its queried predecessor ``p``
are corners of one marching-cubes cell, hence in the closure of one block, which step 3 refined
because ``p`` contradicts an OUT fill (an IN fill holds no unqueried sample below iso, by the same
argument on the components below iso). Every cell with a sign change has a corner in some ``C`` or
in a component below iso that touches the queried region, so its block is refined and marching
cubes sees exactly the full grid's values there. What the fill can change: (a) components above
iso with no queried sample, i.e. surfaces wholly inside OUT blocks that no coarse sample and no
block corner saw (floaters smaller than a block between the samples); (b) components below iso
wholly inside IN blocks: all their 26-neighbours are solid, so they are enclosed cavities, which
the interior sealing fills on the full grid too (``solid_occupancy`` with any radius). A fixed
dilation alone (refine the neighbours of flagged blocks) guarantees nothing for a part thinner
than a block that runs between the samples farther than the dilation; the flood fill follows it
as far as it goes, because it dilates wherever the refined region's boundary is not clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

OUT, IN, REFINE, CANDIDATE = 0, 1, 2, 3
"""Block states (CANDIDATE only until its corners are known)."""

QueryFn = Callable[[np.ndarray], np.ndarray]
"""Density at fine-grid sample indices: [M, 3] int64 -> [M] float32."""


@dataclass
class RefineStats:
    """What the coarse-to-fine pass did (benchmarks and tests report it)."""

    queried: int
    """Fine samples queried (the full grid would query ``prod(shape)``)."""
    blocks_refined: int
    """Blocks whose closure was queried."""
    blocks_total: int
    """Blocks of the grid."""
    flood_rounds: int
    """Rounds of step 3 until no queried sample contradicted a fill."""


def refine_density_grid(
    query: QueryFn,
    shape: tuple[int, int, int],
    block_cells: int,
    iso: float,
    margin: float,
    inside_value: float,
    cell: float,
    origin: np.ndarray,  # [3] position of fine sample (0, 0, 0)
    coarse: np.ndarray,  # [R, R, R] density on the coarse grid over the field's box
    coarse_origin: np.ndarray,  # [3]
    coarse_cell: np.ndarray,  # [3]
) -> tuple[np.ndarray, RefineStats]:  # ([nx, ny, nz] float32, stats)
    """The fine density grid, queried only where the surface can be; the rest filled (module docstring)."""
    s = int(block_cells)
    if s < 2:
        raise ValueError(f"block_cells must be at least 2 for the coarse-to-fine pass, got {block_cells}")
    if not margin >= 1.0:
        raise ValueError(f"the coarse margin must be at least 1 (a factor around the iso-density), got {margin}")
    low, high = iso / margin, iso * margin
    nb = np.array([max(1, -(-(n - 1) // s)) for n in shape])  # blocks per axis (ceil)
    big = tuple(int(b * s + 1) for b in nb)  # samples per axis once padded to whole blocks
    values = np.zeros(big, dtype=np.float32)
    known = np.zeros(big, dtype=bool)
    # Samples past the grid's end are outside (the extractor crops them and pads with outside).
    known[shape[0]:, :, :] = True
    known[:, shape[1]:, :] = True
    known[:, :, shape[2]:] = True
    state = _states_from_coarse(coarse, coarse_origin, coarse_cell, origin, cell, s, nb, low, high)
    queried = 0

    def fetch(flat: np.ndarray) -> np.ndarray:  # linear sample indices (unique, unknown) -> values
        nonlocal queried
        ijk = np.stack(np.unravel_index(flat, big), axis=1)
        v = query(ijk).astype(np.float32)
        values.reshape(-1)[flat] = v
        known.reshape(-1)[flat] = True
        queried += len(flat)
        return ijk

    # 2. Corners of the candidates.
    cand = state == CANDIDATE
    corner_mask = np.zeros(tuple(nb + 1), dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                corner_mask[dx : dx + nb[0], dy : dy + nb[1], dz : dz + nb[2]] |= cand
    corner_idx = np.argwhere(corner_mask) * s  # [M, 3] fine indices
    flat = np.ravel_multi_index(corner_idx.T, big)
    flat = flat[~known.reshape(-1)[flat]]
    new_ijk = fetch(flat)
    corners = values[::s, ::s, ::s]  # [nb + 1]^3, valid at the candidates' corners
    cmax = _pool_max(corners, 2)
    cmin = -_pool_max(-corners, 2)
    border = _border_blocks(nb)
    state[cand & (cmax < low)] = OUT
    state[cand & (cmin >= high) & ~border] = IN
    state[state == CANDIDATE] = REFINE
    # A coarse sample above the low level marks its block (a blob smaller than a block).
    pos = (_coarse_points(coarse.shape, coarse_origin, coarse_cell) - origin) / (cell * s)  # [R^3, 3] in blocks
    hot = (coarse.reshape(-1) >= low) & np.all((pos >= 0) & (pos < nb), axis=1)
    b = np.floor(pos[hot]).astype(np.int64)
    seeded = np.zeros_like(state, dtype=bool)
    seeded[b[:, 0], b[:, 1], b[:, 2]] = True
    state[seeded & (state == OUT)] = REFINE

    # 3. Refine, then flood wherever a queried sample contradicts a neighbouring fill.
    todo = np.argwhere(state == REFINE)
    todo = np.concatenate([todo, _contradicted(new_ijk, values, state, s, nb, iso)])
    rounds = 0
    offsets = np.stack(np.meshgrid(*[np.arange(s + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)  # [(s+1)^3, 3]
    while len(todo):
        rounds += 1
        state[todo[:, 0], todo[:, 1], todo[:, 2]] = REFINE
        idx = (todo[:, None, :] * s + offsets[None]).reshape(-1, 3)
        flat = np.ravel_multi_index(idx.T, big)
        flat = np.unique(flat[~known.reshape(-1)[flat]])
        new_ijk = fetch(flat)
        todo = _contradicted(new_ijk, values, state, s, nb, iso)

    # Fill what was not queried with its block's state (IN: solid; OUT: 0 = outside).
    owner = [np.minimum(np.arange(n) // s, b - 1) for n, b in zip(shape, nb)]
    inside = state[np.ix_(*owner)] == IN
    out = values[: shape[0], : shape[1], : shape[2]]
    out = np.where(~known[: shape[0], : shape[1], : shape[2]] & inside, np.float32(inside_value), out)
    stats = RefineStats(queried=queried, blocks_refined=int((state == REFINE).sum()),
                        blocks_total=int(state.size), flood_rounds=rounds)
    return np.ascontiguousarray(out, dtype=np.float32), stats


def _states_from_coarse(coarse: np.ndarray, coarse_origin: np.ndarray, coarse_cell: np.ndarray, origin: np.ndarray,
                        cell: float, s: int, nb: np.ndarray, low: float, high: float) -> np.ndarray:  # [nb]^3 uint8
    """Step 1: OUT / IN / CANDIDATE of every block from the coarse cells it overlaps."""
    cell_max = _pool_max(coarse, 2)  # [R-1]^3: max of each coarse cell's 8 corners
    cell_min = -_pool_max(-coarse, 2)
    for axis in range(3):
        # Coarse cells overlapping each block along this axis: a closed range, so two blocks that
        # share a face share the coarse cell holding it (an IN block never touches an OUT one).
        r = coarse.shape[axis] - 1
        x0 = origin[axis] + np.arange(nb[axis]) * s * cell
        j0 = np.clip(np.floor((x0 - coarse_origin[axis]) / coarse_cell[axis]), 0, r - 1).astype(np.int64)
        j1 = np.clip(np.floor((x0 + s * cell - coarse_origin[axis]) / coarse_cell[axis]), 0, r - 1).astype(np.int64)
        span = int((j1 - j0).max()) if len(j0) else 0
        mx = np.take(cell_max, j0, axis=axis)
        mn = np.take(cell_min, j0, axis=axis)
        for o in range(1, span + 1):
            j = np.minimum(j0 + o, j1)
            mx = np.maximum(mx, np.take(cell_max, j, axis=axis))
            mn = np.minimum(mn, np.take(cell_min, j, axis=axis))
        cell_max, cell_min = mx, mn
    state = np.full(tuple(nb), CANDIDATE, dtype=np.uint8)
    state[cell_max < low] = OUT
    state[(cell_min >= high) & ~_border_blocks(nb)] = IN
    return state


def _contradicted(ijk: np.ndarray, values: np.ndarray, state: np.ndarray, s: int, nb: np.ndarray,
                  iso: float) -> np.ndarray:  # [K, 3] blocks to refine
    """Blocks left to a fill whose closure holds one of the samples ``ijk`` ([M, 3]) that contradicts it."""
    if len(ijk) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    above = values[ijk[:, 0], ijk[:, 1], ijk[:, 2]] >= iso
    found = []
    # A sample on a block face (index a multiple of s) lies in the closures of the blocks on both sides.
    for d in np.ndindex(2, 2, 2):
        b = ijk // s - np.asarray(d) * (ijk % s == 0)
        ok = np.all((b >= 0) & (b < nb), axis=1)
        b, a = b[ok], above[ok]
        st = state[b[:, 0], b[:, 1], b[:, 2]]
        bad = (a & (st == OUT)) | (~a & (st == IN))
        found.append(b[bad])
    blocks = np.concatenate(found)
    return np.unique(blocks, axis=0) if len(blocks) else blocks


def _pool_max(grid: np.ndarray, k: int) -> np.ndarray:
    """Max over every k^3 window, stride 1 (shape shrinks by k - 1 per axis)."""
    t = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None]
    return F.max_pool3d(t, kernel_size=k, stride=1)[0, 0].numpy()


def _border_blocks(nb: np.ndarray) -> np.ndarray:  # [nb]^3 bool
    border = np.zeros(tuple(nb), dtype=bool)
    border[[0, -1], :, :] = True
    border[:, [0, -1], :] = True
    border[:, :, [0, -1]] = True
    return border


def _coarse_points(shape: tuple[int, ...], origin: np.ndarray, cell: np.ndarray) -> np.ndarray:  # [R^3, 3]
    axes = [origin[a] + np.arange(shape[a]) * cell[a] for a in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
