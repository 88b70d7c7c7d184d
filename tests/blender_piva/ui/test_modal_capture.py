"""The panel's capture, one view per timer tick (``ui.status.modal_capture_tick``, what the modal
operators call): Esc halfway leaves the scene as it was; run to the end it writes the capture
that the blocking path writes; no tick blocks longer than the slowest single step."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from blender_piva.contract import CaptureSettings
from tests.blender_piva.scene_state import diff, fingerprint

SMALL = CaptureSettings(num_views=4, num_eval_views=1, resolution=32, samples=2)


@dataclass
class Event:
    type: str
    value: str = "NOTHING"


def _cube(bpy):
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(1.0, 2.0, 0.5))
    cube = bpy.context.active_object
    cube.name = "Box"
    bpy.context.view_layer.update()
    return cube


def test_esc_halfway_cancels_and_the_scene_is_unchanged(registered, tmp_path):
    bpy = registered
    from blender_piva.scene.capture import CaptureSession
    from blender_piva.ui.status import ACTIVE, modal_capture_tick

    cube = _cube(bpy)
    before = fingerprint()
    session = CaptureSession(cube, SMALL, tmp_path / "capture")
    session.begin()
    ACTIVE.capture = session
    try:
        assert modal_capture_tick(bpy.context, Event("MOUSEMOVE")) == "pass"  # the UI keeps its events
        assert [modal_capture_tick(bpy.context, Event("TIMER")) for _ in range(2)] == ["running", "running"]
        status = bpy.context.window_manager.piva_status
        assert (status.stage, status.step, status.total) == ("capture", 2, 5)
        assert any(s.name.startswith("PIVA_capture") for s in bpy.data.scenes)  # the rig exists mid-capture
        assert modal_capture_tick(bpy.context, Event("ESC", "PRESS")) == "cancelled"
    finally:
        ACTIVE.capture = None
    assert session.done == 2
    assert diff(before, fingerprint()) == []
    assert list(tmp_path.iterdir()) == []  # no capture, no partial folder
    assert modal_capture_tick(bpy.context, Event("TIMER")) == "idle"


def test_ticks_to_the_end_write_what_the_blocking_capture_writes(registered, tmp_path):
    bpy = registered
    from blender_piva.scene.capture import CaptureSession, capture_object
    from blender_piva.ui.status import ACTIVE, modal_capture_tick

    cube = _cube(bpy)
    before = fingerprint()
    session = CaptureSession(cube, SMALL, tmp_path / "ticked")
    session.begin()
    ACTIVE.capture = session
    phases = []
    try:
        while not phases or phases[-1] == "running":
            phases.append(modal_capture_tick(bpy.context, Event("TIMER")))
    finally:
        ACTIVE.capture = None
    assert phases == ["running"] * 5 + ["complete"]  # five views, then the folder is written
    assert diff(before, fingerprint()) == []
    capture_object(cube, SMALL, tmp_path / "blocking")
    ticked = json.loads((tmp_path / "ticked" / "transforms.json").read_text())
    blocking = json.loads((tmp_path / "blocking" / "transforms.json").read_text())
    assert ticked == blocking
    for frame in blocking["frames"]:
        rel = frame["file_path"]
        assert (tmp_path / "ticked" / rel).read_bytes() == (tmp_path / "blocking" / rel).read_bytes()
    assert 0 < session.longest_block_ms
