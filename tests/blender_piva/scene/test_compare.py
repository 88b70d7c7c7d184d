"""The main job's check: held-out views of the source and the result at the oracle's size, judged
by the shipped oracle through a real backend process (what `build.py demo` prints)."""

from __future__ import annotations

import argparse

import pytest

bpy = pytest.importorskip("bpy")

from blender_piva import cli  # noqa: E402
from blender_piva.scene.compare import JUDGE_RESOLUTION, save_judged_views  # noqa: E402
from blender_piva.core.png16 import read_png  # noqa: E402


@pytest.fixture(autouse=True)
def _factory_state():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield
    bpy.ops.wm.read_factory_settings(use_empty=True)


def test_the_demo_cube_is_judged_a_red_cube_as_smooth_as_itself(tmp_path, capsys):
    cube = cli.build_demo_scene()
    views = save_judged_views(cube, tmp_path / "views")
    names = sorted(p.name for p in views.glob("*.png"))
    assert names == [f"view_{i}.png" for i in range(4)]
    assert read_png(views / names[0]).shape[:2] == (JUDGE_RESOLUTION, JUDGE_RESOLUTION)
    args = argparse.Namespace(target="a red cube", python=None)
    assert cli.judge_demo(args, cube, cube, tmp_path / "judge") == 0
    out = capsys.readouterr().out
    assert "demo_oracle_agree: 1.00" in out  # the oracle knows the demo's source
    assert "demo_speckle_ratio: 1.00" in out


def test_a_target_the_oracle_cannot_read_is_not_judged(tmp_path, capsys):
    cube = cli.build_demo_scene()
    args = argparse.Namespace(target="a cube made of glass", python=None)
    assert cli.judge_demo(args, cube, cube, tmp_path / "judge") == 0
    assert "not judged" in capsys.readouterr().out
