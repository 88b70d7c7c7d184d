"""The inbox folder without a worker process: claims, done files, dead claims, stale requests."""

from __future__ import annotations

import json
import os
import time

import pytest

from blender_piva import contract
from blender_piva.contract import worker_inbox as wi

from backend.serve.inbox import Inbox


def test_a_submission_is_claimed_once_then_done(tmp_path):
    inbox = Inbox(tmp_path / "inbox", pid=os.getpid())
    wi.submit(inbox.folder, "a", tmp_path / "job" / "job.json")
    assert inbox.pending() == ["a"]
    claimed = inbox.claim("a")
    assert claimed is not None and claimed.job == str((tmp_path / "job" / "job.json").resolve())
    assert inbox.claim("a") is None and inbox.pending() == []
    assert wi.Claim.from_dict(json.loads(wi.claimed_path(inbox.folder, "a").read_text())).worker_pid == os.getpid()
    inbox.finish(claimed, contract.EXIT_ERROR)
    assert wi.load_done(inbox.folder, "a").exit_code == contract.EXIT_ERROR
    assert not wi.claimed_path(inbox.folder, "a").exists() and inbox.pending() == []


def test_claims_of_dead_workers_are_queued_again_live_ones_are_not(tmp_path):
    folder = tmp_path / "inbox"
    dead = Inbox(folder, pid=2**22 + 12345)  # above Linux's default pid_max: no such process
    for name in ("dead", "alive"):
        wi.submit(folder, name, tmp_path / name / "job.json")
    dead.claim("dead")
    Inbox(folder).claim("alive")  # this test's own (live) process
    assert Inbox(folder, pid=1).requeue_orphans() == ["dead"]
    assert Inbox(folder).pending() == ["dead"] and wi.claimed_path(folder, "alive").exists()


def test_stale_requests_are_removed_new_ones_are_taken(tmp_path):
    folder = tmp_path / "inbox"
    inbox = Inbox(folder)
    contract.write_json_atomic(folder / wi.STOP_FILE, wi.Request(requested_at=time.time() - 10).to_dict())
    wi.request(folder, wi.RELEASE_FILE)
    assert inbox.clear_stale_requests(time.time() - 5) == [wi.STOP_FILE]
    assert not inbox.take_request(wi.STOP_FILE) and inbox.take_request(wi.RELEASE_FILE)
    assert not (folder / wi.RELEASE_FILE).exists()


@pytest.mark.parametrize("name", ["", "a/b", "x.done", "stop", "release", ".hidden"])
def test_names_that_would_clash_are_refused(tmp_path, name):
    with pytest.raises(contract.ContractError, match="inbox name"):
        wi.submit(tmp_path, name, tmp_path / "job.json")
