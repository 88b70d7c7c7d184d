"""``python -m backend serve`` as a real subprocess: one model for many jobs, failures, cancel,
a killed worker's job resumed by the next one, idle timeout."""

from __future__ import annotations

import json
import signal
import time

import pytest

from blender_piva import contract
from blender_piva.contract import worker_inbox as wi

from .jobs import events, load_count, make_job, start_worker, wait_done, worker_log


def _wait_for_edit_step(job, worker, step: int, timeout: float = 180) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if any(e.type == "progress" and e.stage == "edit" and e.step >= step for e in events(job)):
            return
        assert worker.poll() is None, worker_log(job.parent.parent / "inbox")
        time.sleep(0.05)
    raise AssertionError(f"edit step {step} not reached: {worker_log(job.parent.parent / 'inbox')}")


def test_three_jobs_share_one_model_load(tmp_path, tiny_model):
    inbox = tmp_path / "inbox"
    jobs = [make_job(tmp_path / f"job{i}", tiny_model) for i in range(3)]
    for i, job in enumerate(jobs):
        wi.submit(inbox, f"job{i}", job)
    worker = start_worker(inbox)
    try:
        done = [wait_done(inbox, f"job{i}", worker) for i in range(3)]
        wi.request(inbox, wi.STOP_FILE)
        assert worker.wait(60) == 0
    finally:
        worker.kill()
    assert [d.exit_code for d in done] == [contract.EXIT_OK] * 3, worker_log(inbox)
    assert [load_count(job) for job in jobs] == [1, 0, 0]
    assert any(e.message.startswith("reusing the loaded model") for e in events(jobs[2]))
    for job in jobs:
        assert events(job)[-1].type == "finished"
        assert contract.load_manifest(job.parent / "results").job_id == job.parent.name
    assert not list(inbox.glob("*.claimed")) and not (inbox / wi.STOP_FILE).exists()


def test_failing_jobs_are_reported_and_the_worker_goes_on(tmp_path, tiny_model):
    inbox = tmp_path / "inbox"
    bad = make_job(tmp_path / "bad", tiny_model)
    data = json.loads(bad.read_text())
    data["edit"]["method"] = "magic"
    bad.write_text(json.dumps(data))
    no_capture = make_job(tmp_path / "nocapture", tiny_model, stages=("reconstruct",))
    contract.write_json_atomic(no_capture.parent / "capture" / "transforms.json", {"frames": []})
    good = make_job(tmp_path / "good", tiny_model)
    for name, job in (("bad", bad), ("nocapture", no_capture), ("good", good)):
        wi.submit(inbox, name, job)
    contract.write_json_atomic(inbox / "garbage.json", {"not": "a submission"})
    worker = start_worker(inbox, "--idle-timeout", "2")
    try:
        results = {name: wait_done(inbox, name, worker) for name in ("bad", "nocapture", "good", "garbage")}
        assert worker.wait(60) == 0
    finally:
        worker.kill()
    assert results["bad"].exit_code == contract.EXIT_BAD_JOB
    assert events(bad)[-1].type == "error" and "edit.method" in events(bad)[-1].message
    assert results["nocapture"].exit_code == contract.EXIT_ERROR
    assert events(no_capture)[-1].type == "error" and "lists no frames" in events(no_capture)[-1].message
    assert results["garbage"].exit_code == contract.EXIT_BAD_JOB and "job" in results["garbage"].message
    assert results["good"].exit_code == contract.EXIT_OK, worker_log(inbox)
    assert events(good)[-1].type == "finished"


def test_cancel_stops_that_job_and_the_worker_goes_on(tmp_path, tiny_model):
    inbox = tmp_path / "inbox"
    long = make_job(tmp_path / "long", tiny_model, edit_steps=400)
    after = make_job(tmp_path / "after", tiny_model)
    wi.submit(inbox, "long", long)
    worker = start_worker(inbox)
    try:
        _wait_for_edit_step(long, worker, 1)
        wi.submit(inbox, "after", after)
        contract.request_cancel(long.parent)
        cancelled = wait_done(inbox, "long", worker)
        finished = wait_done(inbox, "after", worker)
        worker.send_signal(signal.SIGTERM)  # idle: stops at once
        assert worker.wait(60) == 0
    finally:
        worker.kill()
    assert cancelled.exit_code == contract.EXIT_CANCELLED
    assert events(long)[-1].type == "cancelled" and events(long)[-1].stage == "edit"
    assert finished.exit_code == contract.EXIT_OK and load_count(after) == 0


def test_a_killed_workers_job_is_resumed_by_the_next_worker_to_the_same_result(tmp_path, tiny_model):
    inbox = tmp_path / "inbox"
    # 30 steps: the kill must land mid-edit (a short edit may end before the kill reaches it, and
    # then there is nothing to resume)
    straight = make_job(tmp_path / "straight", tiny_model, stages=("reconstruct", "edit", "export"), edit_steps=30)
    killed = make_job(tmp_path / "killed", tiny_model, stages=("reconstruct", "edit", "export"), edit_steps=30)
    wi.submit(inbox, "killed", killed)
    first = start_worker(inbox)
    try:
        _wait_for_edit_step(killed, first, 4)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
    steps_before_kill = max(e.step for e in events(killed) if e.type == "progress" and e.stage == "edit")
    assert steps_before_kill < 30, "the edit ended before the kill"
    assert wi.load_done(inbox, "killed") is None and wi.claimed_path(inbox, "killed").exists()
    wi.submit(inbox, "straight", straight)
    second = start_worker(inbox, "--idle-timeout", "1")
    try:
        resumed = wait_done(inbox, "killed", second)
        reference = wait_done(inbox, "straight", second)
        assert second.wait(60) == 0
    finally:
        second.kill()
    assert resumed.exit_code == reference.exit_code == contract.EXIT_OK, worker_log(inbox)
    assert "died mid-job; queued again" in worker_log(inbox)
    logs = [e.message for e in events(killed) if e.type == "log"]
    assert any("resum" in m for m in logs), (logs, worker_log(inbox))
    got = contract.load_manifest(killed.parent / "results")
    want = contract.load_manifest(straight.parent / "results")
    assert got.metrics.keys() == want.metrics.keys() and got.metrics
    for key, value in want.metrics.items():
        if "seconds" in key:  # wall-clock times differ run to run
            continue
        assert got.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert "mesh" in got.files and (killed.parent / "results" / got.files["mesh"]).stat().st_size > 0


def test_idle_timeout_stops_the_worker_and_stale_requests_do_not(tmp_path):
    inbox = tmp_path / "inbox"
    contract.write_json_atomic(inbox / wi.STOP_FILE, wi.Request(requested_at=time.time() - 60).to_dict())
    start = time.time()
    worker = start_worker(inbox, "--idle-timeout", "1.5")
    try:
        assert worker.wait(60) == 0
    finally:
        worker.kill()
    assert time.time() - start >= 1.5
    log = worker_log(inbox)
    assert "removed stop.json" in log and "no job for 1.5 s: stopping" in log
