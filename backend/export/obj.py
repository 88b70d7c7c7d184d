"""Wavefront OBJ + MTL export of a textured mesh (for tools without glTF support).

Axes: OBJ has no up axis; like most tools (and Blender's OBJ importer defaults: forward -Z, up Y)
we write +Y up, i.e. ``(x, z, -y)`` of Blender's coordinates. OBJ's texture v points up, so
``vt = (u, 1 - v)`` of glTF's UVs.
"""

from __future__ import annotations

import io

import numpy as np

from backend.export.glb import Z_UP_TO_Y_UP, TexturedMesh


def write_obj(mesh: TexturedMesh, mtl_name: str, texture_name: str) -> tuple[bytes, bytes]:
    """Return the OBJ and MTL file contents; the OBJ refers to ``mtl_name``, the MTL to ``texture_name``."""
    p = mesh.positions @ Z_UP_TO_Y_UP.T
    n = mesh.normals @ Z_UP_TO_Y_UP.T
    vt = np.stack([mesh.uvs[:, 0], 1.0 - mesh.uvs[:, 1]], axis=1)
    out = io.StringIO()
    out.write(f"# PIVA for Blender\nmtllib {mtl_name}\no {mesh.name}\n")
    np.savetxt(out, p, fmt="v %.6f %.6f %.6f")
    np.savetxt(out, vt, fmt="vt %.6f %.6f")
    np.savetxt(out, n, fmt="vn %.5f %.5f %.5f")
    out.write(f"usemtl {mesh.name}\ns 1\n")
    f = np.repeat(mesh.faces + 1, 3, axis=1)  # v/vt/vn share the index: one UV and normal per vertex
    np.savetxt(out, f, fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    mtl = (
        f"# PIVA for Blender\nnewmtl {mesh.name}\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nNs 0\nillum 1\n"
        f"map_Kd {texture_name}\n"
    )
    return out.getvalue().encode("utf-8"), mtl.encode("utf-8")
