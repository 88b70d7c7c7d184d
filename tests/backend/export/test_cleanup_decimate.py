"""Cleanup (weld, floaters) and decimation on meshes with known answers."""

from __future__ import annotations

import numpy as np

from backend.export.analytic import SphereField
from backend.export.cleanup import clean_mesh, drop_small_components, merge_vertices
from backend.export.decimate import decimate
from backend.export.extract import ExtractSettings, extract_mesh


def sphere_mesh(resolution: int = 32) -> tuple[np.ndarray, np.ndarray, float]:
    field = SphereField(radius=0.6)
    mesh = extract_mesh(field, ExtractSettings(grid_resolution=resolution, coarse_resolution=16))
    return mesh.vertices, mesh.faces, mesh.cell_size


def tetrahedron(offset: float) -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[0, 0, 0], [0.01, 0, 0], [0, 0.01, 0], [0, 0, 0.01]], np.float32) + offset
    return v, np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def test_merge_vertices_welds_a_triangle_soup():
    v, f, _ = sphere_mesh()
    soup_v = v[f].reshape(-1, 3)  # every face has its own three vertices
    soup_f = np.arange(len(soup_v)).reshape(-1, 3)
    merged_v, merged_f = merge_vertices(soup_v, soup_f)
    assert len(merged_v) == len(np.unique(v, axis=0))
    np.testing.assert_allclose(merged_v[merged_f], v[f])


def test_merge_drops_collapsed_faces():
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    f = np.array([[0, 1, 2], [0, 1, 3]])
    _, merged_f = merge_vertices(v, f)
    assert len(merged_f) == 1


def test_small_floater_is_dropped_and_the_main_body_kept():
    v, f, _ = sphere_mesh()
    tv, tf = tetrahedron(0.9)
    vertices = np.concatenate([v, tv])
    faces = np.concatenate([f, tf + len(v)])
    out_v, out_f, dropped = drop_small_components(vertices, faces, min_fraction=0.01)
    assert dropped == 1
    assert len(out_f) == len(f) and len(out_v) == len(v)
    assert np.linalg.norm(out_v, axis=1).max() < 0.7  # the tetrahedron at 0.9 is gone
    # With fraction 0 everything stays.
    assert drop_small_components(vertices, faces, 0.0)[2] == 0


def test_clean_mesh_reports_counts():
    v, f, _ = sphere_mesh()
    tv, tf = tetrahedron(0.9)
    _, out_f, counts = clean_mesh(np.concatenate([v, tv]), np.concatenate([f, tf + len(v)]), 0.01)
    assert counts == {"components_dropped": 1, "faces_dropped": 4}
    assert len(out_f) == len(f)


def test_decimate_reaches_the_budget_and_keeps_the_shape():
    v, f, cell = sphere_mesh(48)
    assert len(f) > 4000
    dv, df = decimate(v, f, 2000)
    assert len(df) <= 2000 and len(df) > 1500
    radius = np.linalg.norm(dv, axis=1)
    assert np.abs(radius - np.linalg.norm(v, axis=1).mean()).max() < cell


def test_decimate_passes_small_meshes_through():
    v, f, _ = sphere_mesh(16)
    dv, df = decimate(v, f, len(f) + 10)
    np.testing.assert_array_equal(df, f)
    np.testing.assert_array_equal(dv, v)
