"""Open Contact Sheet and Open Report: the PNG goes into bpy.data.images (in background mode it is
only loaded: there is no window to show it in), once, and is reloaded when drawn again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from blender_piva import contract  # noqa: E402
from blender_piva.contract.layout import REPORT_FILE, REPORT_IMAGE_FILE  # noqa: E402
from blender_piva.core import png16  # noqa: E402
from blender_piva.scene.queue_runner import CONTACT_SHEET_FILE  # noqa: E402


def _png(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 2] = 200
    return png16.write_png(path, pixels)


def _images_of(path: Path) -> list:
    return [i for i in bpy.data.images if Path(bpy.path.abspath(i.filepath)).resolve() == path.resolve()]


def test_open_contact_sheet_loads_the_latest_queues_sheet_once_and_reloads_it(registered, tmp_path):
    folder = tmp_path / "batches" / "b1"
    bpy.context.scene.piva.queue_file = str(folder / "queue.json")
    assert not bpy.ops.piva.open_contact_sheet.poll()  # no sheet yet: greyed out
    sheet = _png(folder / CONTACT_SHEET_FILE, 348, 384)
    assert bpy.ops.piva.open_contact_sheet.poll()
    assert bpy.ops.piva.open_contact_sheet() == {"FINISHED"}
    (image,) = _images_of(sheet)
    assert tuple(image.size) == (348, 384)
    _png(sheet, 476, 512)  # drawn again after another variant
    assert bpy.ops.piva.open_contact_sheet() == {"FINISHED"}
    (image,) = _images_of(sheet)
    assert tuple(image.size) == (476, 512)


def test_show_image_loads_any_png_once(registered, tmp_path):
    from blender_piva.ui.queue_operators import show_image

    picture = _png(tmp_path / "elsewhere.png", 20, 10)
    first, again = show_image(bpy.context, picture), show_image(bpy.context, picture)
    assert first == again and tuple(first.size) == (20, 10) and len(_images_of(picture)) == 1


def test_open_report_of_the_last_job_loads_its_picture_in_background_mode(registered, tmp_path):
    status = bpy.context.window_manager.piva_status
    job = tmp_path / "job"
    status.job_dir = str(job)
    assert not bpy.ops.piva.open_report.poll()  # the job wrote no report (yet)
    results = job / contract.RESULTS_DIR
    results.mkdir(parents=True)
    (results / REPORT_FILE).write_text("<!DOCTYPE html><html></html>", encoding="utf-8")
    picture = _png(results / REPORT_IMAGE_FILE, 64, 48)
    assert bpy.ops.piva.open_report.poll()
    assert bpy.ops.piva.open_report() == {"FINISHED"}  # no browser in background mode: the picture
    assert tuple(_images_of(picture)[0].size) == (64, 48)
