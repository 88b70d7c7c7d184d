"""The export stage: field -> cleaned, decimated, UV-mapped, textured mesh files in the object's frame.

Files written atomically into ``out_dir``: ``mesh.glb`` (self-contained, texture embedded),
``texture.png``, ``mesh.obj`` + ``mesh.mtl`` (refer to ``texture.png``). The manifest is the
caller's job: it merges the returned ``files`` into ``ResultsManifest.files``.
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from backend.export.cleanup import clean_mesh
from backend.export.decimate import decimate
from backend.export.extract import ExtractSettings, extract_mesh
from backend.export.field_like import FieldLike
from backend.export.glb import TexturedMesh, write_glb
from backend.export.obj import write_obj
from backend.export.uv_bake import BakeSettings, bake_texture, unwrap
from backend.progress import JobCancelled, StageReporter
from blender_piva import contract
from blender_piva.contract.capture import LightRig

FILES = {"mesh": "mesh.glb", "texture": "texture.png", "obj": "mesh.obj", "mtl": "mesh.mtl"}
"""Manifest role -> file name of everything the export writes."""

_STEPS = ("extract", "cleanup", "decimate", "unwrap", "bake", "write")


@dataclass
class StepTimer:
    """Seconds and face counts of the export's steps; reports each step and stops on a cancel."""

    reporter: StageReporter
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    """Step name -> seconds it took."""
    faces: dict[str, int] = dataclasses.field(default_factory=dict)
    """Step name -> faces of the mesh it produced (steps that make no mesh have none)."""
    clock: float = dataclasses.field(default_factory=time.perf_counter)
    """When the running step started."""

    def done(self, step: str, count: int | None = None) -> None:
        """Record ``step`` as finished; raise JobCancelled if a cancel came and steps remain."""
        now = time.perf_counter()
        self.timings[step] = now - self.clock
        self.clock = now
        if count is not None:
            self.faces[step] = int(count)
        index = _STEPS.index(step) + 1
        self.reporter.progress(index, len(_STEPS), {"faces": float(count)} if count is not None else None)
        if index < len(_STEPS) and self.reporter.should_stop():
            raise JobCancelled("export", index)


def export_field(
    field: FieldLike,
    settings: contract.ExportSettings,
    local_from_normalized: np.ndarray,  # [4, 4]: inverse of transforms.json's "normalization"
    out_dir: Path,
    *,
    device: torch.device | str = "cpu",
    reporter: StageReporter,
    bake: BakeSettings | None = None,
    extract: ExtractSettings | None = None,
    write_obj_files: bool = True,
    light_rig: LightRig | None = None,
) -> dict[str, Any]:
    """Export ``field`` as a textured mesh in the source object's local frame.

    ``light_rig``: the capture's lights (``LightRig.from_json(transforms["light_rig"])``); when given
    and ``bake.delight`` is on, the texture holds the albedo, not the lit colour (see delight.py).

    Returns ``{"files": role -> name, "timings_s": step -> seconds, "faces": step -> count,
    "vertices": int, "iso_density": float, "cell_size": float, "texture_coverage": float}``.
    Raises ``extract.EmptyFieldError`` when the field has no surface.
    """
    settings.validate()
    matrix = _checked_matrix(local_from_normalized)
    bake = bake or BakeSettings()
    extract = _extract_settings(settings, extract or ExtractSettings())
    reporter.begin(len(_STEPS), "exporting a textured mesh")
    timer = StepTimer(reporter)

    # 1. Marching cubes in the normalised frame, where the field lives.
    mesh = extract_mesh(field, extract, device=device)
    timer.done("extract", len(mesh.faces))
    # 2. Weld and drop floaters.
    vertices, tris, counts = clean_mesh(mesh.vertices, mesh.faces, settings.min_component_fraction)
    timer.done("cleanup", len(tris))
    # 3. Decimate before unwrapping (xatlas is superlinear in faces).
    vertices, tris = decimate(vertices, tris, settings.face_budget)
    timer.done("decimate", len(tris))
    # 4. UV atlas.
    uv_mesh = unwrap(vertices, tris, settings.texture_size, bake.atlas_padding_px)
    timer.done("unwrap", len(uv_mesh.faces))
    # 5. Bake the field's colour (queried in the normalised frame).
    image, coverage = bake_texture(
        field, uv_mesh, settings.texture_size, mesh.cell_size, bake, device=device, light_rig=light_rig
    )
    timer.done("bake")
    # 6. Map to the object's local frame and write the files.
    positions, normals, local_faces = to_local_frame(uv_mesh.vertices, uv_mesh.normals, uv_mesh.faces, matrix)
    png = encode_png(image)
    textured = TexturedMesh(positions=positions, normals=normals, uvs=uv_mesh.uvs, faces=local_faces, texture_png=png)
    files = _write_files(textured, Path(out_dir), write_obj_files)
    timer.done("write")

    reporter.log(
        f"exported {len(local_faces)} faces ({timer.faces['extract']} from marching cubes, "
        f"{counts['components_dropped']} floaters dropped) in {sum(timer.timings.values()):.1f} s"
    )
    return {
        "files": files,
        "timings_s": timer.timings,
        "faces": timer.faces,
        "vertices": int(len(positions)),
        "iso_density": mesh.iso_density,
        "cell_size": mesh.cell_size,
        "texture_coverage": coverage,
        "components_dropped": counts["components_dropped"],
        "delit": bool(light_rig is not None and bake.delight),
    }


def _checked_matrix(local_from_normalized: np.ndarray) -> np.ndarray:  # [4, 4] float64
    matrix = np.asarray(local_from_normalized, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise ValueError(
            "local_from_normalized must be a finite, invertible 4x4 matrix (the inverse of transforms.json's "
            f"'normalization'), got {matrix.tolist()}"
        )
    return matrix


def _extract_settings(settings: contract.ExportSettings, extract: ExtractSettings) -> ExtractSettings:
    """The job's grid resolution and, when it sets one (> 0), its iso-density override ``extract``'s."""
    extract = dataclasses.replace(extract, grid_resolution=settings.grid_resolution)
    if settings.iso_density > 0.0:
        extract = dataclasses.replace(extract, iso_density=settings.iso_density)
    return extract


def _write_files(textured: TexturedMesh, out_dir: Path, write_obj_files: bool) -> dict[str, str]:
    """Write the texture, the GLB and (optionally) OBJ + MTL atomically; return role -> file name."""
    contract.write_bytes_atomic(out_dir / FILES["texture"], textured.texture_png)
    contract.write_bytes_atomic(out_dir / FILES["mesh"], write_glb(textured))
    files = {"mesh": FILES["mesh"], "texture": FILES["texture"]}
    if write_obj_files:
        obj_bytes, mtl_bytes = write_obj(textured, FILES["mtl"], FILES["texture"])
        contract.write_bytes_atomic(out_dir / FILES["mtl"], mtl_bytes)
        contract.write_bytes_atomic(out_dir / FILES["obj"], obj_bytes)
        files.update(obj=FILES["obj"], mtl=FILES["mtl"])
    return files


def to_local_frame(
    vertices: np.ndarray,  # [V, 3] normalised frame
    normals: np.ndarray,  # [V, 3]
    faces: np.ndarray,  # [F, 3]
    local_from_normalized: np.ndarray,  # [4, 4]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the affine map to points, its inverse transpose to normals; flip winding if it mirrors."""
    linear = local_from_normalized[:3, :3]
    positions = vertices.astype(np.float64) @ linear.T + local_from_normalized[:3, 3]
    n = normals.astype(np.float64) @ np.linalg.inv(linear)  # = (inv(L).T @ n.T).T
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    if np.linalg.det(linear) < 0:  # a mirror turns counter-clockwise faces clockwise
        faces = faces[:, ::-1]
    return positions.astype(np.float32), n.astype(np.float32), np.ascontiguousarray(faces)


def encode_png(image: np.ndarray) -> bytes:  # [H, W, 3] float in [0, 1]
    """8-bit sRGB PNG bytes (the field's colours are already sRGB)."""
    pixels = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()
