"""The queue file: round trip, resume rules, and errors that name the field (no bpy)."""

from __future__ import annotations

import json

import pytest

from blender_piva import contract
from blender_piva.core import queue as batch_queue
from blender_piva.core.queue import QueueItem, load_queue, new_queue


def make(tmp_path, n=3):
    items = [QueueItem(f"Obj{i}", "a red cube", f"target {i}", seed=i, slot=i) for i in range(n)]
    return new_queue(tmp_path, "batch", items, {"method": "piva", "model": {"model": "toy"}})


def test_round_trip_and_job_folders(tmp_path):
    queue = make(tmp_path)
    assert queue.path.is_file() and queue.folder.parent == (tmp_path / "batches").resolve()
    dirs = [item.job_dir for item in queue.items]
    assert len(set(dirs)) == 3 and all(d.startswith(str(queue.folder)) and queue.batch_id in d for d in dirs)
    loaded = load_queue(queue.folder)
    assert loaded == queue and loaded.folder == queue.folder


def test_resume_runs_interrupted_items_and_keeps_finished_ones(tmp_path):
    queue = make(tmp_path, 4)
    for item, state in zip(queue.items, ["done", "running", "cancelled", "failed"]):
        item.status = state
    queue.save()
    loaded = load_queue(queue.path)
    assert not loaded.finished
    assert loaded.prepare_resume() == 2
    assert [i.status for i in loaded.items] == ["done", "pending", "pending", "failed"]
    assert loaded.next_pending() is loaded.items[1]
    assert loaded.prepare_resume(retry_failed=True) == 3


def test_log_entries_accumulate(tmp_path):
    queue = make(tmp_path, 2)
    queue.log(queue.items[0], "started")
    queue.log(queue.items[0], "failed", message="boom", hint="fix it")
    log = batch_queue.read_log(queue.log_path)
    assert [(e["item"], e["event"]) for e in log] == [(0, "started"), (0, "failed")]
    assert log[1]["message"] == "boom" and log[1]["object"] == "Obj0"


@pytest.mark.parametrize(
    "breakage, field",
    [
        (lambda d: d.update(format=99), "queue.format"),
        (lambda d: d.update(kind="party"), "queue.kind"),
        (lambda d: d.update(items=[]), "queue.items"),
        (lambda d: d["items"][1].update(status="lost"), "queue.items[1].status"),
        (lambda d: d["items"][0].update(colour="red"), "queue.items[0]"),
        (lambda d: d["items"][2].pop("target_prompt"), "queue.items[2]"),
        # fields of the wrong type: refused on reading, not when the item runs
        (lambda d: d["items"][0].update(seed="seven"), "queue.items[0].seed"),
        (lambda d: d["items"][1].update(seed=True), "queue.items[1].seed"),
        (lambda d: d["items"][2].update(target_prompt=["a", "b"]), "queue.items[2].target_prompt"),
        (lambda d: d["items"][0].update(cache_hit="yes"), "queue.items[0].cache_hit"),
        (lambda d: d.update(settings=3), "queue.settings"),
        (lambda d: d["settings"].update(steps="many"), "queue.settings.steps"),
        (lambda d: d["settings"].update(overrides={"capture": 64}), "queue.settings.overrides.capture"),
        (lambda d: d["settings"]["model"].update(model=5), "queue.settings.model.model"),
        (lambda d: d["settings"]["model"].update(size="big"), "queue.settings.model.size"),
        (lambda d: d["settings"].update(stages=[1]), "queue.settings.stages"),
        (lambda d: d.update(blend_file=None), "queue.blend_file"),
    ],
)
def test_a_broken_queue_file_names_the_field(tmp_path, breakage, field):
    queue = make(tmp_path)
    data = json.loads(queue.path.read_text())
    breakage(data)
    queue.path.write_text(json.dumps(data))
    with pytest.raises(contract.ContractError) as info:
        load_queue(queue.path)
    assert info.value.field == field


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(contract.ContractError, match="does not exist"):
        load_queue(tmp_path / "nope" / "queue.json")
    (tmp_path / "queue.json").write_text("{oops")
    with pytest.raises(contract.ContractError, match="malformed JSON"):
        load_queue(tmp_path)
    with pytest.raises(contract.ContractError, match="is empty"):
        new_queue(tmp_path, "batch", [], {})


def test_unfinished_queues_are_found_newest_first(tmp_path):
    done = make(tmp_path, 1)
    done.items[0].status = "done"
    done.save()
    open_queue = make(tmp_path, 2)
    assert batch_queue.unfinished_queues(tmp_path) == [open_queue.path]
