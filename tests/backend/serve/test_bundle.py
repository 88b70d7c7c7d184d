"""What a running job sends back (``bundle.FolderWatch``): a checkpoint only as a JSON with the
tensors it names, checked against each other, so the submitter's copy always loads."""

from __future__ import annotations

import torch

from backend.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
from backend.serve import bundle


def watch_of(tmp_path) -> tuple[bundle.FolderWatch, object]:
    roots = bundle.local_roots(tmp_path / "actor")
    for root in roots.values():
        root.mkdir(parents=True)
    return bundle.FolderWatch(roots), roots["job"] / "edit" / "checkpoints" / "edit"


def test_each_save_comes_back_as_its_json_and_the_slot_it_names(tmp_path):
    watch, stem = watch_of(tmp_path)
    submitter = bundle.local_roots(tmp_path / "submitter")
    for step in (1, 2, 3):  # the slots alternate: A, B, A
        save_checkpoint(stem, {"w": torch.full((4,), float(step))}, {"step": step})
        sent = watch.changes()
        json_path, slot = checkpoint_paths(stem)
        assert sorted(sent) == sorted(f"job/edit/checkpoints/{p.name}" for p in (json_path, slot))
        bundle.write_files(sent, submitter)
        tensors, state = load_checkpoint(submitter["job"] / "edit" / "checkpoints" / "edit", stage="edit")
        assert state == {"step": step} and torch.equal(tensors["w"], torch.full((4,), float(step)))
    assert watch.changes() == {}


def test_a_save_under_way_sends_nothing_until_json_and_tensors_match(tmp_path):
    watch, stem = watch_of(tmp_path)
    save_checkpoint(stem, {"w": torch.zeros(4)}, {"step": 1})
    watch.changes()
    save_checkpoint(stem, {"w": torch.ones(4)}, {"step": 2})
    json_path, slot = checkpoint_paths(stem)
    good = slot.read_bytes()
    slot.write_bytes(good[:-3])  # what a look in the middle of the next save can see
    (stem.parent / "notes.txt").write_text("other files still travel")
    assert list(watch.changes()) == ["job/edit/checkpoints/notes.txt"]
    other = stem.with_name("edit.safetensors")  # the free slot, written by a save not yet named
    other.write_bytes(b"next save's tensors")
    assert watch.changes() == {}
    slot.write_bytes(good)
    assert sorted(watch.changes()) == sorted(f"job/edit/checkpoints/{p.name}" for p in (json_path, slot))
