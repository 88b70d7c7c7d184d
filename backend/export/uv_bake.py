"""UV atlas (xatlas) and texture bake: every texel gets the field's colour at its surface point.

The triangles are rasterised in UV space with numpy (no OpenGL): each covered texel centre gets the
triangle it falls in and its barycentric coordinates, hence a 3D surface point and normal. The
colour is read from the field along a short segment through that point, volume-rendered from
outside in (nerfstudio's texture export shoots a short ray along the inverted normal the same way):
the marching-cubes surface lies within a cell of the true one, and a field's colour is only
trained where it has density, so the first occupied sample along the segment is the right one.
Texels no triangle covers take the colour of the nearest covered texel, so seams and mipmaps never
blend in background. When the capture's light rig is known, the colours are de-lit first
(``delight.py``): the texture stores the albedo, which a diffuse material under the same rig
renders back to the captured colour.

UV convention: glTF's, origin at the image's top-left corner, v pointing down the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xatlas
from scipy.ndimage import distance_transform_edt

from backend.export.delight import delight_colors
from backend.export.field_like import FieldLike, density_and_color
from blender_piva.contract.capture import LightRig


@dataclass
class UVMesh:
    """A mesh split along UV seams: one UV per vertex."""

    vertices: np.ndarray  # [V, 3] float32
    normals: np.ndarray  # [V, 3] float32, unit, smooth across seams
    uvs: np.ndarray  # [V, 2] float32 in [0, 1], glTF convention (v down)
    faces: np.ndarray  # [F, 3] int64
    source_vertex: np.ndarray  # [V] int64: index of each vertex in the mesh before unwrapping


@dataclass
class BakeSettings:
    """How texel colours are read from the field."""

    samples_along_normal: int = 5
    """Points on the segment through each texel's surface point; 1 = the surface point only."""
    depth_cells: float = 1.0
    """Half length of the segment, in marching-cubes cells (the surface's uncertainty)."""
    atlas_padding_px: int = 4
    """Empty texels xatlas keeps between charts (room for bilinear filtering)."""
    chunk_size: int = 1 << 16
    """Texels per field query."""
    delight: bool = True
    """Divide the capture's lighting out of the colours when its light rig is known (a capture
    without ``"light_rig"`` in transforms.json bakes the lit colours as they are)."""


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:  # [V, 3], [F, 3] -> [V, 3]
    """Area-weighted vertex normals (unit length; +z for isolated vertices)."""
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    face_n = np.cross(b - a, c - a)  # length = 2 x area: the weight
    normals = np.zeros((len(vertices), 3))
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 0, normals / np.maximum(length, 1e-30), np.array([0.0, 0.0, 1.0]))
    return normals.astype(np.float32)


def unwrap(
    vertices: np.ndarray,  # [V, 3]
    faces: np.ndarray,  # [F, 3]
    texture_size: int,
    padding_px: int = 4,
) -> UVMesh:
    """Chart and pack the mesh with xatlas for a square texture of ``texture_size`` texels."""
    normals = vertex_normals(vertices, faces)
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding_px)
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(
            f"xatlas packed the charts into {atlas.atlas_count} atlases, the exporter writes one texture; "
            "raise export.texture_size or lower export.face_budget"
        )
    vmapping, new_faces, uvs = atlas[0]
    vmapping = vmapping.astype(np.int64)
    return UVMesh(
        vertices=vertices[vmapping].astype(np.float32),
        normals=normals[vmapping],
        uvs=uvs.astype(np.float32),
        faces=new_faces.astype(np.int64),
        source_vertex=vmapping,
    )


def rasterize_uv(
    uvs: np.ndarray,  # [V, 2] in [0, 1]
    faces: np.ndarray,  # [F, 3]
    size: int,
    max_candidates: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray]:  # face id [H, W] int64 (-1 = none), barycentrics [H, W, 3] float32
    """For every texel whose centre lies in a UV triangle: that triangle and the barycentrics."""
    face_id = np.full((size, size), -1, dtype=np.int64)
    bary = np.zeros((size, size, 3), dtype=np.float32)
    tri = uvs[faces].astype(np.float64) * size  # [F, 3, 2] in texel units; texel (x, y) centre at +0.5
    lo = np.clip(np.ceil(tri.min(axis=1) - 0.5), 0, size - 1).astype(np.int64)  # [F, 2]
    hi = np.clip(np.floor(tri.max(axis=1) - 0.5), 0, size - 1).astype(np.int64)
    extent = np.maximum(hi - lo + 1, 0)  # [F, 2]; 0 when no texel centre is inside the box
    count = extent[:, 0] * extent[:, 1]
    # Enumerate every (face, texel in its box) pair, in face chunks of bounded size.
    ends = np.cumsum(count)
    start_face = 0
    while start_face < len(faces):
        base = ends[start_face - 1] if start_face > 0 else 0
        stop_face = max(start_face + 1, int(np.searchsorted(ends, base + max_candidates, side="right")))
        f = np.arange(start_face, min(stop_face, len(faces)))
        start_face = f[-1] + 1
        f = f[count[f] > 0]
        if len(f) == 0:
            continue
        fid = np.repeat(f, count[f])
        offset = np.arange(len(fid)) - np.repeat(np.cumsum(count[f]) - count[f], count[f])
        x = lo[fid, 0] + offset % extent[fid, 0]
        y = lo[fid, 1] + offset // extent[fid, 0]
        p = np.stack([x + 0.5, y + 0.5], axis=-1)
        a, b, c = tri[fid, 0], tri[fid, 1], tri[fid, 2]
        v0, v1, v2 = b - a, c - a, p - a
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        ok = np.abs(den) > 1e-12
        den = np.where(ok, den, 1.0)
        l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
        l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
        l0 = 1.0 - l1 - l2
        eps = -1e-6
        inside = ok & (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
        face_id[y[inside], x[inside]] = fid[inside]
        bary[y[inside], x[inside]] = np.stack([l0, l1, l2], axis=-1)[inside]
    return face_id, bary


@torch.no_grad()
def query_colors(
    field: FieldLike,
    points: np.ndarray,  # [N, 3] normalised frame
    normals: np.ndarray,  # [N, 3] unit, outward
    half_length: float,
    settings: BakeSettings,
    *,
    device: torch.device | str = "cpu",
) -> np.ndarray:  # [N, 3] float32 in [0, 1]
    """Volume-render the colour along ``p + t n``, t from +half_length to -half_length."""
    k = int(settings.samples_along_normal)
    if k < 1:
        raise ValueError(f"samples_along_normal must be at least 1, got {k}")
    t = torch.linspace(half_length, -half_length, k, device=device) if k > 1 else torch.zeros(1, device=device)
    step = 2.0 * half_length / (k - 1) if k > 1 else 1.0
    out = np.empty((len(points), 3), dtype=np.float32)
    per_chunk = max(1, settings.chunk_size // k)
    for s in range(0, len(points), per_chunk):
        p = torch.as_tensor(points[s : s + per_chunk], dtype=torch.float32, device=device)
        n = torch.as_tensor(normals[s : s + per_chunk], dtype=torch.float32, device=device)
        if k == 1:
            out[s : s + len(p)] = field.color(p).float().clamp(0, 1).cpu().numpy()
            continue
        x = (p[:, None, :] + t[None, :, None] * n[:, None, :]).reshape(-1, 3)  # [n*k, 3]
        sigma, rgb = density_and_color(field, x)
        sigma = sigma.float().reshape(-1, k)
        rgb = rgb.float().clamp(0, 1).reshape(-1, k, 3)
        alpha = 1.0 - torch.exp(-sigma * step)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], dim=1), dim=1)
        w = alpha * trans  # [n, k]
        total = w.sum(dim=1, keepdim=True)
        rendered = (w[..., None] * rgb).sum(dim=1) / total.clamp(min=1e-8)
        # Nothing opaque on the segment (a surface thinner than the sampling): use the surface point.
        centre = rgb[:, k // 2] if k % 2 else field.color(p).float().clamp(0, 1)
        out[s : s + len(p)] = torch.where(total > 1e-4, rendered, centre).cpu().numpy()
    return out


def fill_empty_texels(image: np.ndarray, covered: np.ndarray) -> np.ndarray:  # [H, W, C], [H, W] bool
    """Give every uncovered texel the colour of the nearest covered one (seam padding)."""
    if covered.all() or not covered.any():
        return image
    _, (iy, ix) = distance_transform_edt(~covered, return_indices=True)
    return image[iy, ix]


def bake_texture(
    field: FieldLike,
    mesh: UVMesh,
    texture_size: int,
    cell_size: float,
    settings: BakeSettings,
    *,
    device: torch.device | str = "cpu",
    light_rig: LightRig | None = None,
) -> tuple[np.ndarray, float]:  # image [H, W, 3] float32 in [0, 1] (row 0 = v 0), covered fraction
    """Rasterise the UV triangles, query the field at each texel's surface point, pad the seams.

    ``light_rig``: the capture's lights in the field's (normalised) frame; with ``settings.delight``
    the texels store the albedo instead of the lit colour.
    """
    face_id, bary = rasterize_uv(mesh.uvs, mesh.faces, texture_size)
    covered = face_id >= 0
    fid = face_id[covered]  # [N]
    w = bary[covered][:, :, None]  # [N, 3, 1]
    corners = mesh.faces[fid]  # [N, 3]
    points = (mesh.vertices[corners] * w).sum(axis=1)
    normals = (mesh.normals[corners] * w).sum(axis=1)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    image = np.zeros((texture_size, texture_size, 3), dtype=np.float32)
    colors = query_colors(field, points, normals, settings.depth_cells * cell_size, settings, device=device)
    if light_rig is not None and settings.delight:
        colors = delight_colors(colors, normals, light_rig)
    image[covered] = colors
    return fill_empty_texels(image, covered), float(covered.mean())
