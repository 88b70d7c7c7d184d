"""The export stage end to end: files, local frame, progress events, cancel."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from backend.export.analytic import EmptyField, SphereField
from backend.export.extract import EmptyFieldError
from backend.export.glb import read_glb
from backend.export.pipeline import FILES, export_field
from backend.progress import JobCancelled, StageReporter
from blender_piva import contract

SETTINGS = contract.ExportSettings(grid_resolution=32, face_budget=800, texture_size=64)


def rotation_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    a, b, c = (v[f[:, k]].astype(np.float64) for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def test_export_writes_every_file_in_the_local_frame(tmp_path: Path):
    field = SphereField(radius=0.5, center=(0.2, 0.0, 0.0))
    local_from_normalized = np.eye(4)
    local_from_normalized[:3, :3] = 3.0 * rotation_z(90.0)
    local_from_normalized[:3, 3] = [10.0, -2.0, 1.0]
    result = export_field(
        field, SETTINGS, local_from_normalized, tmp_path, reporter=StageReporter.silent("export")
    )
    assert result["files"] == FILES
    for name in FILES.values():
        assert (tmp_path / name).stat().st_size > 0
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
    mesh = read_glb((tmp_path / "mesh.glb").read_bytes())
    # The centre (0.2, 0, 0) rotates to (0, 0.2, 0), scales to (0, 0.6, 0), then shifts.
    centre = np.array([10.0, -1.4, 1.0])
    radius = np.linalg.norm(mesh.positions - centre, axis=1)
    assert np.abs(radius - 3.0 * 0.5).max() < 3.0 * result["cell_size"]
    assert signed_volume(mesh.positions, mesh.faces) > 0  # still wound outward
    # Normals went through the same rotation: they point away from the centre.
    radial = (mesh.positions - centre) / radius[:, None]
    assert np.einsum("ij,ij->i", mesh.normals, radial).min() > 0.8
    assert len(mesh.faces) <= SETTINGS.face_budget
    assert set(result["timings_s"]) == {"extract", "cleanup", "decimate", "unwrap", "bake", "write"}
    assert result["faces"]["extract"] >= result["faces"]["decimate"]


def test_a_mirroring_frame_keeps_faces_outward(tmp_path: Path):
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    export_field(SphereField(radius=0.5), SETTINGS, mirror, tmp_path, reporter=StageReporter.silent("export"),
                 write_obj_files=False)
    mesh = read_glb((tmp_path / "mesh.glb").read_bytes())
    assert signed_volume(mesh.positions, mesh.faces) > 0
    assert not (tmp_path / "mesh.obj").exists()


def test_progress_events_and_cancel(tmp_path: Path):
    events = contract.EventWriter(tmp_path / "events.jsonl")
    reporter = StageReporter(stage="export", events=events)
    export_field(SphereField(), SETTINGS, np.eye(4), tmp_path / "results", reporter=reporter)
    got = contract.EventReader(tmp_path / "events.jsonl").poll()
    kinds = [e.type for e in got]
    assert kinds[0] == "stage" and kinds.count("progress") == 6 and kinds[-1] == "log"
    assert got[-2].step == got[-2].total == 6

    cancelling = StageReporter(stage="export", cancel_check=lambda: True)
    with pytest.raises(JobCancelled):
        export_field(SphereField(), SETTINGS, np.eye(4), tmp_path / "cancelled", reporter=cancelling)
    assert not (tmp_path / "cancelled" / "mesh.glb").exists()


def test_empty_field_and_bad_matrix_are_refused(tmp_path: Path):
    with pytest.raises(EmptyFieldError, match="no surface"):
        export_field(EmptyField(), SETTINGS, np.eye(4), tmp_path, reporter=StageReporter.silent("export"))
    with pytest.raises(ValueError, match="invertible 4x4"):
        export_field(SphereField(), SETTINGS, np.zeros((4, 4)), tmp_path, reporter=StageReporter.silent("export"))
    assert not any(tmp_path.iterdir())


def test_light_rig_delights_the_texture_and_can_be_turned_off(tmp_path: Path):
    from PIL import Image

    from backend.export.uv_bake import BakeSettings
    from blender_piva.contract.capture import LightRig

    rig = LightRig(world_strength=0.8, world_color=(1.0, 1.0, 1.0), sun_direction=(0.0, 0.0, 1.0),
                   sun_strength=0.2 * math.pi, sun_angle_deg=30.0)
    field, silent = SphereField(radius=0.5), StageReporter.silent("export")
    textures = {}
    for name, kwargs in {
        "none": {},
        "off": {"light_rig": rig, "bake": BakeSettings(delight=False)},
        "on": {"light_rig": rig},
    }.items():
        result = export_field(field, SETTINGS, np.eye(4), tmp_path / name, reporter=silent, write_obj_files=False,
                              **kwargs)
        assert result["delit"] == (name == "on")
        textures[name] = np.asarray(Image.open(tmp_path / name / "texture.png"), np.float64)
    np.testing.assert_array_equal(textures["off"], textures["none"])  # the setting turns it off entirely
    # Lit colours are 0.8-1.0 x albedo: the albedo is brighter, by at most 1 / 0.8 in linear units.
    gain = (textures["on"] / 255.0) ** 2.2 / np.maximum((textures["none"] / 255.0) ** 2.2, 1e-3)
    bright = textures["none"] > 40
    assert np.median(gain[bright]) > 1.03 and np.percentile(gain[bright], 99) < 1.0 / 0.8 * 1.05
