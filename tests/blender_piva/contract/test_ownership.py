"""Owner markers, leftovers of dead processes and stale cancel requests, on real files and processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blender_piva import contract
from blender_piva.contract import ownership

ROOT = Path(__file__).resolve().parents[3]


def dead_pid() -> int:
    """The process id of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def killed_atomic_write(target: Path, size: int = 3_000_000) -> Path:
    """A real process dies inside contract.write_bytes_atomic (SIGKILL where it would fsync; a full
    disk or a crash leave the same): the temporary it leaves is returned."""
    script = (
        "import os, signal, sys\n"
        "from blender_piva import contract\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        "contract.write_bytes_atomic(sys.argv[1], b'x' * int(sys.argv[2]))\n"
    )
    before = set(target.parent.iterdir()) if target.parent.is_dir() else set()
    old = target.read_bytes() if target.is_file() else None
    proc = subprocess.run(
        [sys.executable, "-c", script, str(target), str(size)], env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    )
    assert proc.returncode == -signal.SIGKILL
    (left,) = set(target.parent.iterdir()) - before
    assert left.stat().st_size == size
    assert (target.read_bytes() if target.is_file() else None) == old  # readers still see the old file
    return left


# -- owner markers ----------------------------------------------------------------------------


def test_claim_makes_a_missing_or_empty_folder_ours_and_finds_it_again(tmp_path):
    inputs = {"reconstruct": {"steps": 3}, "transforms_sha256": "abc"}
    owner = contract.claim_folder(tmp_path / "fit", "reconstruction", inputs)
    assert owner.state == "working" and owner.fingerprint == contract.fingerprint_of(inputs)
    assert contract.read_owner(tmp_path / "fit") == owner
    (tmp_path / "fit" / "metrics.json").write_text("{}")
    again = contract.claim_folder(tmp_path / "fit", "reconstruction", {"transforms_sha256": "abc", "reconstruct": {"steps": 3}})
    assert again == owner  # same inputs (key order does not matter): the caller's own folder
    done = contract.set_state(tmp_path / "fit", again, "done")
    assert contract.read_owner(tmp_path / "fit").done and done.done
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".lock").write_text("")  # the backend's folder lock does not count
    assert contract.claim_folder(tmp_path / "empty", "edit", {}).kind == "edit"


def test_claim_refuses_a_folder_of_other_files_and_writes_nothing(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.json").write_text('{"my": "numbers"}')
    (folder / "field").mkdir()
    with pytest.raises(contract.FolderNotOurs) as info:
        contract.claim_folder(folder, "reconstruction", {"a": 1})
    assert str(folder) in str(info.value)
    assert "holds files this job did not write (field, metrics.json)" in str(info.value)
    assert info.value.hint == "choose an empty folder or delete it"
    assert sorted(p.name for p in folder.iterdir()) == ["field", "metrics.json"]
    assert (folder / "metrics.json").read_text() == '{"my": "numbers"}'
    # Names the caller expects there (a job folder before its first run) are not foreign.
    job = tmp_path / "job"
    job.mkdir()
    (job / "job.json").write_text("{}")
    (job / "capture").mkdir()
    names = ownership.job_names_before_first_run(job, job / "capture")
    assert contract.claim_folder(job, "job", {"x": 1}, names).kind == "job"
    with pytest.raises(contract.FolderNotOurs, match="is a file, not a folder"):
        contract.claim_folder(job / "job.json", "job", {})


def test_claim_refuses_a_folder_made_for_other_inputs_or_of_another_kind(tmp_path):
    fit = contract.ReconstructSettings(steps=100)
    contract.claim_folder(tmp_path / "fit", "reconstruction", {"reconstruct": contract.content_settings(fit)})
    other = contract.ReconstructSettings(steps=200, preview_every=7, checkpoint_every=3)
    with pytest.raises(contract.FolderNotOurs) as info:
        contract.claim_folder(tmp_path / "fit", "reconstruction", {"reconstruct": contract.content_settings(other)})
    message = str(info.value)
    assert message.startswith(str(tmp_path / "fit")) and "made from other inputs" in message
    assert "reconstruct.steps: 100 in the folder, 200 for this job" in message
    assert "preview_every" not in message and "checkpoint_every" not in message  # they change no content
    assert "make the reconstruction again" in info.value.hint
    # How often a stage checkpoints or previews is not an input: the folder is still ours.
    same = contract.ReconstructSettings(steps=100, preview_every=7, checkpoint_every=3)
    assert contract.claim_folder(tmp_path / "fit", "reconstruction", {"reconstruct": contract.content_settings(same)})
    with pytest.raises(contract.FolderNotOurs, match="is a PIVA reconstruction folder, not a edit folder"):
        contract.claim_folder(tmp_path / "fit", "edit", {"reconstruct": contract.content_settings(fit)})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / contract.OWNER_FILE).write_text("{not json")
    with pytest.raises(contract.FolderNotOurs, match="owner marker PIVA cannot read"):
        contract.claim_folder(tmp_path / "bad", "edit", {})


# -- leftovers of dead processes ------------------------------------------------------------------


def test_only_temporaries_of_dead_processes_are_removed(tmp_path):
    job = tmp_path / "job"
    (job / "reconstruction" / "checkpoints").mkdir(parents=True)
    dead_top = killed_atomic_write(job / "job.json")
    dead_deep = killed_atomic_write(job / "reconstruction" / "checkpoints" / "reconstruct.safetensors")
    dead = dead_pid()
    partial = job / f".capture.partial-{dead}-0123abcd"
    (partial / "images").mkdir(parents=True)
    live = job / f".job.json.{os.getpid()}.0123456789ab.tmp"  # this process is alive: mid-write
    live.write_bytes(b"x")
    live_partial = job / f".capture.partial-{os.getpid()}-89abcdef"
    live_partial.mkdir()
    users = [job / "holiday.2024.tmp", job / f".notes.{dead}.tmp", job / "reconstruction" / "metrics.json"]
    for path in users:
        path.write_text("keep me")

    removed = contract.remove_dead_leftovers(job)
    assert sorted(removed) == sorted([dead_top, dead_deep, partial])
    assert not dead_top.exists() and not dead_deep.exists() and not partial.exists()
    assert live.exists() and live_partial.is_dir()
    assert all(path.read_text() == "keep me" for path in users)
    # Non-recursive, with a prefix: only the partial captures of one folder.
    other = job / f".other.partial-{dead}-0123abcd"
    other.mkdir()
    nested = job / "sub" / f".capture.partial-{dead}-0123abcd"
    nested.mkdir(parents=True)
    assert contract.remove_dead_leftovers(job, recursive=False, prefix=".capture.") == []
    assert other.is_dir() and nested.is_dir()


def test_pid_alive_tells_a_live_process_from_a_dead_one():
    assert contract.pid_alive(os.getpid()) is True
    assert contract.pid_alive(dead_pid()) is False
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as proc:
        try:
            assert contract.pid_alive(proc.pid) is True
        finally:
            proc.kill()


# -- stale cancel requests ----------------------------------------------------------------------------


def test_a_cancel_request_counts_only_for_runs_that_started_before_it(tmp_path):
    started = time.time()
    assert not contract.cancel_requested(tmp_path, since=started)
    contract.request_cancel(tmp_path)  # written now: for the run that started at `started`
    assert contract.cancel_requested(tmp_path, since=started)
    assert not contract.clear_stale_cancel(tmp_path, started)
    assert (tmp_path / contract.CANCEL_FILE).is_file()
    later = time.time() + 1.0  # a run that starts after the request
    assert not contract.cancel_requested(tmp_path, since=later)
    assert contract.cancel_requested(tmp_path)  # without a start time, any request counts (as before)
    assert contract.clear_stale_cancel(tmp_path, later)
    assert not (tmp_path / contract.CANCEL_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left aside


def test_a_hand_written_cancel_file_counts_from_its_modification_time(tmp_path):
    path = tmp_path / contract.CANCEL_FILE
    path.write_text("stop please")
    assert contract.cancel_requested(tmp_path, since=time.time() - 60)
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert contract.cancel_time(tmp_path) == pytest.approx(old)
    assert contract.clear_stale_cancel(tmp_path, time.time())
    path.write_text(json.dumps({"reason": "user", "contract": 1}))  # no time: its mtime (now) counts
    assert contract.cancel_requested(tmp_path, since=time.time() - 60)
