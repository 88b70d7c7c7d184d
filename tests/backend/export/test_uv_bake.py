"""UV rasterisation and texture bake against analytic colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.export.analytic import BoxField, SphereField
from backend.export.cleanup import clean_mesh
from backend.export.decimate import decimate
from backend.export.extract import ExtractSettings, extract_mesh
from backend.export.uv_bake import BakeSettings, bake_texture, fill_empty_texels, rasterize_uv, unwrap, vertex_normals

SIZE = 128


def lookup(image: np.ndarray, uv: np.ndarray) -> np.ndarray:  # nearest texel, glTF convention
    px = np.clip((uv * image.shape[0]).astype(int), 0, image.shape[0] - 1)
    return image[px[:, 1], px[:, 0]]


def surface_samples(mesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    face = rng.integers(0, len(mesh.faces), n)
    w = rng.dirichlet([1.0, 1.0, 1.0], n)[:, :, None]
    corners = mesh.faces[face]
    return (mesh.vertices[corners] * w).sum(axis=1), (mesh.uvs[corners] * w).sum(axis=1)


@pytest.fixture(scope="module")
def box_bake():
    field = BoxField()
    extracted = extract_mesh(field, ExtractSettings(grid_resolution=40, coarse_resolution=16))
    v, f, _ = clean_mesh(extracted.vertices, extracted.faces, 0.01)
    v, f = decimate(v, f, 3000)
    mesh = unwrap(v, f, SIZE)
    image, coverage = bake_texture(field, mesh, SIZE, extracted.cell_size, BakeSettings())
    return field, mesh, image, coverage


def test_rasterize_two_triangles_cover_the_square():
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    face_id, bary = rasterize_uv(uvs, faces, 16, max_candidates=50)  # tiny chunks on purpose
    assert np.all(face_id >= 0)
    np.testing.assert_allclose(bary.sum(axis=-1), 1.0, atol=1e-6)
    # The barycentrics reproduce each texel centre.
    centre = (np.stack(np.meshgrid(np.arange(16), np.arange(16), indexing="xy"), -1) + 0.5) / 16
    recon = np.einsum("hwk,hwkc->hwc", bary, uvs[faces[face_id]])
    np.testing.assert_allclose(recon, centre, atol=1e-5)


def test_unwrap_keeps_the_geometry_and_gives_uvs_in_the_unit_square(box_bake):
    _, mesh, _, coverage = box_bake
    assert mesh.uvs.min() >= 0.0 and mesh.uvs.max() <= 1.0
    assert mesh.vertices.shape[0] == mesh.uvs.shape[0] == mesh.normals.shape[0]
    assert 0.3 < coverage <= 1.0
    np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-5)


def test_baked_colours_match_the_field_at_the_surface(box_bake):
    field, mesh, image, _ = box_bake
    points, uv = surface_samples(mesh, 4000)
    # The pattern switches at the axis planes: a texel there mixes two colours. Skip that margin.
    clear = np.all(np.abs(points) > 2.5 / SIZE + 0.02, axis=1)
    assert clear.sum() > 2000
    expected = field.color(torch.as_tensor(points[clear])).numpy()
    got = lookup(image, uv[clear])
    assert np.abs(got - expected).max() < 2.0 / 255.0


def test_no_background_bleeds_into_the_texture(box_bake):
    _, _, image, _ = box_bake
    # Every texel holds one of the eight octant colours' channels (0.1/0.9, 0.25/0.8, 0.4/0.7).
    allowed = [np.array([0.1, 0.9]), np.array([0.25, 0.8]), np.array([0.4, 0.7])]
    for c in range(3):
        nearest = np.abs(image[..., c, None] - allowed[c]).min(axis=-1)
        assert nearest.max() < 1e-5


def test_bake_along_the_normal_finds_the_colour_of_the_surface_not_the_inside():
    # Inside colour differs from the shell's: reading only the (slightly outside) surface point with
    # one sample would still be right; reading deep inside would be wrong. The segment must pick the shell.
    class Shell(SphereField):
        def color(self, x: torch.Tensor) -> torch.Tensor:
            r = x.norm(dim=-1, keepdim=True)
            return torch.where(r > self.radius - 0.03, x.new_tensor([1.0, 0.0, 0.0]), x.new_tensor([0.0, 0.0, 1.0]))

    field = Shell(radius=0.6)
    extracted = extract_mesh(field, ExtractSettings(grid_resolution=24, coarse_resolution=12))
    mesh = unwrap(*decimate(extracted.vertices, extracted.faces, 1000), SIZE)
    image, _ = bake_texture(field, mesh, SIZE, extracted.cell_size, BakeSettings(samples_along_normal=7, depth_cells=1.0))
    assert image[..., 0].min() > 0.99 and image[..., 2].max() < 0.01


def test_fill_empty_texels_copies_the_nearest_covered_colour():
    image = np.zeros((5, 5, 3), np.float32)
    covered = np.zeros((5, 5), bool)
    image[0, 0], covered[0, 0] = 1.0, True
    image[4, 4], covered[4, 4] = 0.5, True
    out = fill_empty_texels(image, covered)
    assert np.all(out[1, 0] == 1.0) and np.all(out[3, 4] == 0.5)


def test_vertex_normals_point_outward_on_a_sphere():
    extracted = extract_mesh(SphereField(radius=0.5), ExtractSettings(grid_resolution=20, coarse_resolution=10))
    n = vertex_normals(extracted.vertices, extracted.faces)
    radial = extracted.vertices / np.linalg.norm(extracted.vertices, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", n, radial).min() > 0.8  # coarse grid: facets tilt up to ~30 degrees


class _TwoQueries:
    """An NGPField seen only through density() and color(): the bake's fallback path."""

    def __init__(self, field) -> None:
        self.field = field

    def density(self, x):
        return self.field.density(x)

    def color(self, x):
        return self.field.color(x)


def test_bake_query_from_one_lookup_equals_the_two_separate_queries():
    from backend.export.uv_bake import query_colors
    from backend.field.ngp_field import NGPField, NGPFieldConfig

    torch.manual_seed(0)
    field = NGPField(NGPFieldConfig(num_levels=4, log2_table_size=10, max_resolution=64, hidden_dim=16)).eval()
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.8, 0.8, (500, 3)).astype(np.float32)
    normals = rng.normal(size=(500, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    settings = BakeSettings(chunk_size=640)  # several chunks
    lookups = []
    field.encoding.register_forward_hook(lambda *_: lookups.append(1))
    with torch.no_grad():
        query_colors(field, points, normals, 0.05, settings)
        fused_lookups, lookups[:] = len(lookups), []
        query_colors(_TwoQueries(field), points, normals, 0.05, settings)
        assert (fused_lookups, len(lookups)) == (4, 8)  # 4 chunks of 128 points x 5 samples: one lookup each, not two
        sigma, rgb = field.density_and_color(torch.as_tensor(points))
        torch.testing.assert_close(sigma, field.density(torch.as_tensor(points)))
        torch.testing.assert_close(rgb, field.color(torch.as_tensor(points)))
        fused = query_colors(field, points, normals, 0.05, settings)
        separate = query_colors(_TwoQueries(field), points, normals, 0.05, settings)
    np.testing.assert_allclose(fused, separate, rtol=0, atol=1e-6)
