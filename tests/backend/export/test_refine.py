"""Coarse-to-fine extraction (refine.py) gives the full grid's mesh, thin parts included."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor

from backend.export.extract import ExtractSettings, extract_mesh, sample_density_grid
from backend.export.refine import refine_density_grid


@dataclass
class FinnedSphereField:
    """A sphere with a thin fin (z = 0 plane, along +x) and a thin rod (along -x) attached, and a tiny cavity.

    At ``grid_resolution=128, coarse_resolution=32`` the fin is 1.6 fine cells thick and lies
    midway between two planes of coarse samples (z = +-1/31), so no coarse sample sees it; the rod
    (1.6 cells across) runs midway between four lines of coarse samples.
    """

    radius: float = 0.45
    fin_half: tuple[float, float, float] = (0.25, 0.3, 0.0)  # x, y half extents; z set from the cell
    fin_center_x: float = 0.6
    rod_half_width: float = 0.0
    peak: float = 1e4
    width: float = 0.002
    cavity_radius: float = 0.03

    def sdf(self, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        sphere = x.norm(dim=-1) - self.radius
        q = (x - x.new_tensor([self.fin_center_x, 0.0, 0.0])).abs() - x.new_tensor(self.fin_half)
        fin = q.clamp(min=0.0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0.0)
        # Rod along -x on the line y = z = 0, which lies midway between coarse sample lines.
        along = x[:, 0].clamp(-0.85, 0.0)
        rod = (x - torch.stack([along, torch.zeros_like(along), torch.zeros_like(along)], -1)).norm(dim=-1) - self.rod_half_width
        cavity = self.cavity_radius - (x - x.new_tensor([0.0, 0.1, -0.1])).norm(dim=-1)
        return torch.maximum(torch.minimum(torch.minimum(sphere, fin), rod), cavity)

    def density(self, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        return self.peak * torch.sigmoid(-self.sdf(x) / self.width)

    def color(self, x: Tensor) -> Tensor:  # [N, 3] -> [N, 3]
        return torch.full_like(x, 0.5)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


@pytest.fixture(scope="module")
def finned() -> tuple[FinnedSphereField, ExtractSettings]:
    # The coarse grid does not see the fin and the rod, so it would also cut them off with the
    # occupied box (that is the box finder's margin, not refinement): pad the box to ~[-0.94, 0.94].
    settings = ExtractSettings(grid_resolution=128, coarse_resolution=32, padding_cells=8)
    cell = 2.0 / 128
    field = FinnedSphereField(fin_half=(0.25, 0.3, 0.75 * cell), rod_half_width=0.75 * cell)
    return field, settings


def test_the_coarse_grid_alone_misses_the_fin_and_the_rod(finned):
    field, settings = finned
    h = 2.0 / (settings.coarse_resolution - 1)
    coarse = sample_density_grid(field, np.full(3, -1.0), np.full(3, h), (settings.coarse_resolution,) * 3)
    axes = -1.0 + np.arange(settings.coarse_resolution) * h
    x, y, z = np.meshgrid(axes, axes, axes, indexing="ij")
    iso = 88.7
    # Beyond the sphere, no coarse sample on the fin or the rod reaches the iso-level: a pass that
    # refines only blocks with a coarse sample above it would cut both off at the sphere.
    beyond = np.sqrt(x**2 + y**2 + z**2) > field.radius + 2 * h
    assert coarse[beyond].max() < iso
    assert field.density(torch.tensor([[0.8, 0.0, 0.0], [-0.8, 0.0, 0.0]])).min() > iso  # they exist


def test_coarse_to_fine_mesh_equals_the_full_grid_mesh(finned):
    field, settings = finned
    full = extract_mesh(field, ExtractSettings(**{**settings.__dict__, "block_cells": 0}))
    fast = extract_mesh(field, settings)
    assert fast.grid_shape == full.grid_shape and fast.refine is not None and full.refine is None
    # The flood fill (refine.py) follows the fin and the rod sample by sample: not only the same
    # vertex count, the same vertices (every sign change is inside a refined block) ...
    assert len(fast.vertices) == len(full.vertices) and len(fast.faces) == len(full.faces)
    np.testing.assert_array_equal(fast.vertices, full.vertices)
    np.testing.assert_array_equal(fast.faces, full.faces)
    assert signed_volume(fast.vertices, fast.faces) == pytest.approx(signed_volume(full.vertices, full.faces), rel=1e-9)
    # ... the fin's tip and the rod's end are there ...
    assert fast.vertices[:, 0].max() > 0.8
    assert fast.vertices[:, 0].min() < -0.8
    # ... and the tiny cavity inside (left to IN blocks) is sealed as on the full grid: one surface.
    inner = np.linalg.norm(fast.vertices - np.array([0.0, 0.1, -0.1]), axis=1) < 0.1
    assert not inner.any()
    # for a third or less of the fine grid's queries
    assert fast.samples_queried < 0.35 * full.samples_queried
    assert fast.refine.flood_rounds > 1  # the flood, not the coarse grid, found the fin


def test_refinement_keeps_every_sample_it_queries_and_fills_the_rest_consistently():
    # A ball on a 33^3 grid: queried samples hold the field's values; the others 0 (outside) or the
    # inside value, on the side of the iso-level the field is on.
    n, iso = 33, 1.0
    g = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).astype(np.float64)
    truth = (12.0 - np.linalg.norm(g - 16.0, axis=-1)).astype(np.float32)  # > iso inside r = 11
    coarse = truth[::4, ::4, ::4]
    calls = []

    def query(ijk: np.ndarray) -> np.ndarray:
        calls.append(len(ijk))
        return truth[ijk[:, 0], ijk[:, 1], ijk[:, 2]]

    grid, stats = refine_density_grid(query, (n, n, n), 4, iso, 1.0, 100.0, 1.0, np.zeros(3), coarse,
                                      np.zeros(3), np.full(3, 4.0))
    assert stats.queried == sum(calls) < n**3
    assert np.array_equal(grid >= iso, truth >= iso)
    queried = (grid == truth)
    assert np.all(np.isin(grid[~queried], [0.0, 100.0]))
    with pytest.raises(ValueError, match="block_cells"):
        refine_density_grid(query, (n, n, n), 1, iso, 1.0, 100.0, 1.0, np.zeros(3), coarse, np.zeros(3), np.full(3, 4.0))


def test_bad_block_size_is_refused():
    with pytest.raises(ValueError, match="block_cells must be 0"):
        extract_mesh(FinnedSphereField(), ExtractSettings(grid_resolution=16, coarse_resolution=8, block_cells=1))
