"""Marching cubes on analytic fields: surface position, closedness, tight box, empty fields."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.export.analytic import BoxField, EmptyField, SphereField
from backend.export.extract import EmptyFieldError, ExtractSettings, default_iso_density, extract_mesh


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def edge_use_counts(faces: np.ndarray) -> np.ndarray:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return counts


def test_default_iso_density_is_half_opacity_over_a_reference_cell():
    iso = default_iso_density(np.array([[-1.0, -1, -1], [1, 1, 1]]))
    cell = 2.0 / 256
    assert 1.0 - math.exp(-iso * cell) == pytest.approx(0.5)


def test_sphere_vertices_lie_on_the_level_set_within_a_cell():
    field = SphereField(radius=0.6, center=(0.1, -0.2, 0.05))
    mesh = extract_mesh(field, ExtractSettings(grid_resolution=48, coarse_resolution=24))
    # Where sigma = iso for sigma = peak * sigmoid(-sdf / width).
    level = field.radius + field.width * math.log(field.peak / mesh.iso_density - 1.0)
    dist = np.linalg.norm(mesh.vertices - np.array(field.center), axis=1)
    assert len(mesh.faces) > 1000
    assert np.abs(dist - level).max() < mesh.cell_size
    # Closed and wound outward: every edge has two faces, the volume is the sphere's.
    assert np.all(edge_use_counts(mesh.faces) == 2)
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(4.0 / 3.0 * math.pi * level**3, rel=0.03)


def test_fine_grid_covers_only_the_occupied_box():
    field = SphereField(radius=0.2, center=(0.5, 0.5, -0.5))
    settings = ExtractSettings(grid_resolution=32, coarse_resolution=32)
    mesh = extract_mesh(field, settings)
    extent = mesh.box[1] - mesh.box[0]
    assert np.all(extent < 0.8)  # the whole box is 2 wide; the sphere ~0.4 plus padding
    assert mesh.cell_size == pytest.approx(float(extent.max()) / 32, rel=0.05)
    assert np.all(mesh.box[0] <= np.array(field.center) - 0.21) and np.all(mesh.box[1] >= np.array(field.center) + 0.21)


def test_object_touching_the_box_gives_a_closed_mesh():
    field = BoxField(half_size=(1.5, 0.4, 0.4))  # pokes out of [-1, 1] along x
    mesh = extract_mesh(field, ExtractSettings(grid_resolution=24, coarse_resolution=16))
    assert np.all(edge_use_counts(mesh.faces) == 2)
    assert mesh.vertices[:, 0].max() <= 1.0 + 1e-5 and mesh.vertices[:, 0].min() >= -1.0 - 1e-5
    assert signed_volume(mesh.vertices, mesh.faces) > 0


def test_empty_field_raises_a_clear_error():
    with pytest.raises(EmptyFieldError, match="no surface.*below the iso-density"):
        extract_mesh(EmptyField(), ExtractSettings(grid_resolution=16, coarse_resolution=8))


def test_field_fainter_than_the_iso_level_is_empty_too():
    faint = SphereField(peak=10.0)  # never reaches ~88.7
    with pytest.raises(EmptyFieldError, match="highest density is|highest density on"):
        extract_mesh(faint, ExtractSettings(grid_resolution=16, coarse_resolution=8))
    # ...but contours fine with an explicit, lower level.
    mesh = extract_mesh(faint, ExtractSettings(grid_resolution=16, coarse_resolution=8, iso_density=5.0))
    assert len(mesh.faces) > 0 and mesh.iso_density == 5.0


def test_chunked_queries_give_the_same_mesh():
    field = SphereField(radius=0.5)
    a = extract_mesh(field, ExtractSettings(grid_resolution=24, coarse_resolution=12, chunk_size=1 << 20))
    b = extract_mesh(field, ExtractSettings(grid_resolution=24, coarse_resolution=12, chunk_size=100))
    np.testing.assert_array_equal(a.faces, b.faces)
    np.testing.assert_allclose(a.vertices, b.vertices)
