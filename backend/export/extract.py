"""Marching cubes on the field's density, over a bounding box found coarse-to-fine.

The fine grid is queried only in the blocks where the surface can be (refine.py: the coarse grid
and a flood fill choose them; the mesh equals the full grid's except for floaters smaller than a
block that no coarse sample saw); ``block_cells = 0`` queries every fine sample.

Iso-level. A density ``sigma`` means a segment of length ``d`` has opacity ``1 - exp(-sigma d)``.
We place the surface where a segment one reference cell long is half opaque:
``sigma_iso = ln 2 / d_ref``, with ``d_ref`` = the side of the field's box / 256 (the cell of the
default 256^3 grid), i.e. 88.7 for the [-1, 1]^3 box. Why this and not a constant like
threestudio's 25 or the field mean: it is tied to what a render at the capture's resolution shows
(a half-opaque voxel), it does not depend on how empty the rest of the box is (the mean does),
and it does not move when the user changes ``grid_resolution`` (tying it to the *actual* cell
would shrink the surface at finer grids). Real fits have sharp surfaces (densities in the
hundreds to thousands within a few hash-grid cells), so the exact value moves the surface by a
fraction of a cell; ``iso_density`` overrides it. The contour is taken on log-density (step 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mcubes
import numpy as np
import torch

from backend.export.field_like import FieldLike
from backend.export.interior import solid_occupancy
from backend.export.refine import RefineStats, refine_density_grid

REFERENCE_CELLS = 256
"""Cells per box side that define the default iso-level (see the module docstring)."""

LOG_FLOOR = 1e-3
"""Densities below ``LOG_FLOOR * iso`` are clamped before taking the log (see step 3)."""


class EmptyFieldError(RuntimeError):
    """The field has no density above the iso-level anywhere in its box: nothing to export."""


@dataclass
class ExtractSettings:
    """How the density grid is sampled and contoured."""

    grid_resolution: int = 256
    """Fine-grid cells along the longest side of the occupied box."""
    coarse_resolution: int = 64
    """Samples per axis of the coarse grid over the whole box, used to find the occupied box."""
    padding_cells: int = 2
    """Coarse cells of margin around the occupied box (catches thin parts the coarse grid missed)."""
    iso_density: float | None = None
    """Density of the surface; None = ln 2 / (box side / 256), see the module docstring."""
    block_cells: int = 4
    """Fine cells per side of a refinement block (refine.py); 0 = query every fine sample (the
    reference the coarse-to-fine pass is tested against). With 4, the bench's torus at 256 queries
    1.18 M samples instead of 6.40 M (same mesh), a 100-step fit of a cube 0.30 M instead of 17.2 M."""
    coarse_margin: float = 1.0
    """Coarse samples below iso / margin count as outside, above iso * margin as inside (refine.py).
    The flood fill makes the mesh exact whatever the margin; a larger one also finds floaters
    smaller than a block, but refines every block of a fit's faint fog (a 100-step fit of a cube
    has iso / 10 < density < iso in 99.7 % of its box)."""
    chunk_size: int = 1 << 18
    """Points per field query, rounded to whole x-planes of the grid (bounds the memory of one query)."""
    aabb: tuple[tuple[float, float, float], tuple[float, float, float]] = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    """The field's box in the normalised frame; nothing outside it is sampled."""
    seal_radius: float = 0.0625
    """Interior sealing (interior.py): empty pockets the outside cannot reach through channels
    narrower than twice this (normalised units) become solid; 0 fills only enclosed cavities."""


@dataclass
class ExtractedMesh:
    """A closed triangle mesh in the normalised frame, faces wound counter-clockwise seen from outside."""

    vertices: np.ndarray  # [V, 3] float32
    faces: np.ndarray  # [F, 3] int64
    iso_density: float
    """The density level that was contoured."""
    cell_size: float
    """Side of one fine-grid cell in normalised units (the mesh's resolution)."""
    box: np.ndarray  # [2, 3] float32: min and max corner of the sampled fine grid
    grid_shape: tuple[int, int, int]
    """Samples per axis of the fine grid."""
    samples_queried: int = 0
    """Field queries of the coarse and the fine grid together."""
    refine: RefineStats | None = None
    """What the coarse-to-fine pass did (None: the full fine grid was queried)."""


def default_iso_density(aabb: np.ndarray) -> float:
    """``ln 2 / d_ref`` with ``d_ref`` = longest side of ``aabb`` ([2, 3]) / REFERENCE_CELLS."""
    side = float(np.max(aabb[1] - aabb[0]))
    return math.log(2.0) * REFERENCE_CELLS / side


def extract_mesh(field: FieldLike, settings: ExtractSettings, *, device: torch.device | str = "cpu") -> ExtractedMesh:
    """Sample the density coarse-to-fine and run marching cubes; raise EmptyFieldError when empty."""
    aabb = np.asarray(settings.aabb, dtype=np.float64)  # [2, 3]
    if aabb.shape != (2, 3) or np.any(aabb[1] <= aabb[0]):
        raise ValueError(f"aabb must be [[min x, y, z], [max x, y, z]] with max > min, got {settings.aabb}")
    if settings.coarse_resolution < 2 or settings.grid_resolution < 2:
        raise ValueError("coarse_resolution and grid_resolution must be at least 2 samples per axis")
    iso = default_iso_density(aabb) if settings.iso_density is None else float(settings.iso_density)
    if not iso > 0.0:
        raise ValueError(f"iso_density must be positive, got {iso}")

    # 1. Coarse grid over the whole box: which cells may hold surface.
    coarse_cell = (aabb[1] - aabb[0]) / (settings.coarse_resolution - 1)  # [3]
    coarse_shape = (settings.coarse_resolution,) * 3
    coarse = sample_density_grid(field, aabb[0], coarse_cell, coarse_shape, device=device, chunk_size=settings.chunk_size)
    peak = float(coarse.max())
    # A generous threshold (iso / 10): this only chooses the box, and a part thinner than a coarse
    # cell may show only its blurred fringe at the coarse samples.
    occupied = np.argwhere(coarse > 0.1 * iso)
    if len(occupied) == 0:
        raise EmptyFieldError(
            f"the field has no surface: its highest density on a {settings.coarse_resolution}^3 grid is "
            f"{peak:.3g}, below the iso-density {iso:.3g}. The edit may have erased the object; re-run the "
            "edit with fewer steps or a lower learning rate, or check the reconstruction's previews"
        )
    lo = aabb[0] + (occupied.min(axis=0) - settings.padding_cells) * coarse_cell
    hi = aabb[0] + (occupied.max(axis=0) + settings.padding_cells) * coarse_cell
    lo, hi = np.maximum(lo, aabb[0]), np.minimum(hi, aabb[1])

    # 2. Fine grid over the occupied box, isotropic cells.
    cell = float(np.max(hi - lo)) / settings.grid_resolution
    shape = tuple(int(n) for n in np.ceil((hi - lo) / cell - 1e-6).astype(np.int64) + 1)
    if settings.block_cells < 0 or settings.block_cells == 1:
        raise ValueError(f"block_cells must be 0 (full grid) or at least 2, got {settings.block_cells}")
    refine: RefineStats | None = None
    if settings.block_cells == 0:
        fine = sample_density_grid(field, lo, np.full(3, cell), shape, device=device, chunk_size=settings.chunk_size)
    else:
        # Unqueried inside samples get the value the interior sealing fills with (below), so a block
        # left IN looks exactly like a sealed cavity.
        fine, refine = refine_density_grid(
            lambda ijk: sample_density_at(field, ijk, lo, np.full(3, cell), device=device, chunk_size=settings.chunk_size),
            shape, settings.block_cells, iso, settings.coarse_margin, 10.0 * iso, cell, lo,
            coarse, aabb[0], coarse_cell,
        )
    queried = int(np.prod(coarse_shape)) + (int(np.prod(shape)) if refine is None else refine.queried)
    if not np.any(fine > iso):
        raise EmptyFieldError(
            f"the field has no surface: its highest density is {float(fine.max()):.3g} (coarse grid: {peak:.3g}), "
            f"below the iso-density {iso:.3g}. Export with a lower iso_density, or check that the "
            "reconstruction converged (its previews should show the object)"
        )
    if settings.seal_radius < 0:
        raise ValueError(f"seal_radius must be at least 0, got {settings.seal_radius}")
    # A fitted field's inside is unconstrained and speckled with empty pockets; seal them so that
    # marching cubes wraps only the outer surface (interior.py).
    occupied_fine = fine > iso
    solid = solid_occupancy(occupied_fine, math.ceil(settings.seal_radius / cell))
    fine = np.where(solid & ~occupied_fine, np.float32(10.0 * iso), fine)

    # 3. Marching cubes on log-density: densities jump by orders of magnitude across a surface, so
    # linear interpolation of sigma itself snaps vertices to the outer grid point (a bias of up to
    # a cell; 5% too much volume on a 48^3 sphere), while log sigma (the raw output of an
    # exp-activated field) is smooth across it (bias < 0.05 cell). The floor keeps log finite.
    # Padding with the floor closes the surface where the object touches the box.
    log_sigma = np.log(np.maximum(fine, LOG_FLOOR * iso))
    padded = np.pad(log_sigma, 1, mode="constant", constant_values=math.log(LOG_FLOOR * iso))
    verts, faces = mcubes.marching_cubes(padded, math.log(iso))  # verts in (i, j, k) index units
    box = np.stack([lo, lo + (np.asarray(shape) - 1) * cell])
    # Caps closing the surface at the box fall inside the padding layer: flatten them onto the box.
    vertices = np.clip((verts - 1.0) * cell + lo, box[0], box[1]).astype(np.float32)
    return ExtractedMesh(
        vertices=vertices,
        faces=faces.astype(np.int64),
        iso_density=iso,
        cell_size=cell,
        box=box.astype(np.float32),
        grid_shape=shape,  # type: ignore[arg-type]
        samples_queried=queried,
        refine=refine,
    )


@torch.no_grad()
def sample_density_grid(
    field: FieldLike,
    origin: np.ndarray,  # [3]
    cell: np.ndarray,  # [3]
    shape: tuple[int, int, int],
    *,
    device: torch.device | str = "cpu",
    chunk_size: int = 1 << 18,
) -> np.ndarray:  # [nx, ny, nz] float32
    """Density at ``origin + (i, j, k) * cell`` for every grid index, queried in slabs of whole x-planes."""
    nx, ny, nz = shape
    out = np.empty(shape, dtype=np.float32)
    axes = [
        torch.arange(n, device=device, dtype=torch.float32) * float(c) + float(o)
        for n, c, o in zip(shape, cell, origin)
    ]
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), dim=-1).reshape(-1, 2)  # [ny*nz, 2]
    planes = max(1, chunk_size // (ny * nz))
    for i0 in range(0, nx, planes):
        xs = axes[0][i0 : i0 + planes]
        pts = torch.cat(
            [xs.repeat_interleave(yz.shape[0])[:, None], yz.repeat(xs.shape[0], 1)], dim=-1
        )  # [planes*ny*nz, 3]
        sigma = field.density(pts)
        out[i0 : i0 + xs.shape[0]] = sigma.reshape(xs.shape[0], ny, nz).float().cpu().numpy()
    return out


@torch.no_grad()
def sample_density_at(
    field: FieldLike,
    ijk: np.ndarray,  # [M, 3] int64 grid indices
    origin: np.ndarray,  # [3]
    cell: np.ndarray,  # [3]
    *,
    device: torch.device | str = "cpu",
    chunk_size: int = 1 << 18,
) -> np.ndarray:  # [M] float32
    """Density at ``origin + ijk * cell``, with the same float32 arithmetic as sample_density_grid
    (so a sample queried either way has the same value to the last bit)."""
    out = np.empty(len(ijk), dtype=np.float32)
    for i0 in range(0, len(ijk), chunk_size):
        idx = torch.as_tensor(ijk[i0 : i0 + chunk_size], device=device).to(torch.float32)  # [m, 3]
        pts = torch.stack([idx[:, a] * float(cell[a]) + float(origin[a]) for a in range(3)], dim=-1)
        out[i0 : i0 + len(pts)] = field.density(pts).float().cpu().numpy()
    return out
