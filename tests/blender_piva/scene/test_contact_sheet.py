"""The variants' contact sheet, drawn by the backend's Python as a subprocess, from synthetic job
folders (the real variants run is covered by tests/test_end_to_end.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

from blender_piva.core import queue as batch_queue  # noqa: E402
from blender_piva.core.backend_process import BackendConfig  # noqa: E402
from blender_piva.core.request import EditFailed  # noqa: E402
from blender_piva.scene.queue_runner import CONTACT_SHEET_FILE, QueueRunner, write_contact_sheet  # noqa: E402

from ...backend.test_report import add_views, make_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
BACKEND = BackendConfig(python=sys.executable, backend_root=str(ROOT))


def variants(tmp_path: Path, kind: str = "variants") -> batch_queue.BatchQueue:
    pairs = (("a blue cube", 0), ("a green cube", 7))
    items = [batch_queue.QueueItem("Cube", "a red cube", t, seed=s) for t, s in pairs]
    return batch_queue.new_queue(tmp_path / "jobs", kind, items, {})


def fill(queue: batch_queue.BatchQueue) -> None:
    """Each item's job folder as a finished run leaves it, with 3 held-out views."""
    for item, colour in zip(queue.items, ((30, 30, 200), (30, 200, 30))):
        folder = Path(item.job_dir)
        make_job(folder.parent, folder.name, target=item.target_prompt, seed=item.seed)
        add_views(folder, colour, cameras=3, size=24)
        item.status = "done"


def test_the_sheet_of_two_variants_is_three_rows_of_three_cameras_in_the_queue_folder(tmp_path):
    from PIL import Image

    queue = variants(tmp_path)
    fill(queue)
    runner = QueueRunner(queue, BACKEND)
    sheet = runner.finish()
    assert runner.contact_sheet_problem is None, runner.contact_sheet_problem
    assert sheet == queue.folder / CONTACT_SHEET_FILE and runner.contact_sheet == sheet
    with Image.open(sheet) as image:
        assert image.size == (220 + 3 * 128, 3 * 128)
        assert image.convert("RGB").getpixel((220 + 128 + 120, 128 + 120)) == (30, 30, 200)  # variant 1, camera 1


def test_no_job_folder_is_a_clear_problem_and_never_fails_the_queue(tmp_path):
    queue = variants(tmp_path)
    with pytest.raises(EditFailed, match="no item of the queue has a job folder"):
        write_contact_sheet(queue, BACKEND)
    queue.items[0].status = "done"  # done, but its folder was removed since
    runner = QueueRunner(queue, BACKEND)
    assert runner.finish() is None and "no contact sheet" in runner.contact_sheet_problem.message


def test_a_batch_queue_gets_no_sheet(tmp_path):
    queue = variants(tmp_path, kind="batch")
    fill(queue)
    runner = QueueRunner(queue, BACKEND)
    assert runner.finish() is None and runner.contact_sheet_problem is None
    assert not (queue.folder / CONTACT_SHEET_FILE).exists()
