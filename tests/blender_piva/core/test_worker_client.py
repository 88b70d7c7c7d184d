"""The extension's worker client against a real ``python -m backend serve``: jobs followed like
backend processes of their own, one model load for all of them, a killed worker reported and its
job resumed on the next worker, Release stopping the worker."""

from __future__ import annotations

import signal
import time

import pytest

from blender_piva import contract
from blender_piva.core.backend_process import BackendConfig, python_of_this_process
from blender_piva.core.worker_client import WorkerClient
from tests.backend.serve.jobs import ROOT, events, load_count, make_job


def _client(tmp_path) -> WorkerClient:
    config = BackendConfig(
        python=python_of_this_process(), backend_root=str(ROOT), env={"OMP_NUM_THREADS": "1"}, use_worker=True,
    )
    return WorkerClient(config, tmp_path / "inbox")


def test_jobs_on_one_worker_share_one_model_load_and_release_stops_it(tmp_path, tiny_model):
    client = _client(tmp_path)
    jobs = [make_job(tmp_path / f"job{i}", tiny_model) for i in range(3)]
    seen: list[str] = []
    try:
        for job in jobs:
            handle = client.submit(job.parent)
            handle.start()
            outcome = handle.wait(lambda e: seen.append(e.type), poll_interval_s=0.05)
            assert outcome.status == "finished", (outcome.message, client.log_path.read_text()[-2000:])
            assert not handle.running and client.running  # the worker stays for the next job
        assert client.starts == 1
        assert [load_count(job) for job in jobs] == [1, 0, 0]
        assert seen.count("finished") == 3
        pid = client.process.pid
        assert client.release() is True
        assert not client.running and not contract.pid_alive(pid)
    finally:
        client.kill()


@pytest.mark.slow  # ~40 s; in CI: tests/backend/serve/test_worker.py (a killed worker's job resumes) and
# tests/blender_piva/scene/test_queue_runner.py (a killed backend is reported, the job resumes)
def test_a_killed_worker_is_reported_and_the_job_resumes_on_the_next(tmp_path, tiny_model):
    client = _client(tmp_path)
    job = make_job(tmp_path / "job", tiny_model, stages=("reconstruct", "edit", "export"), edit_steps=60)
    try:
        handle = client.submit(job.parent)
        handle.start()
        end = time.time() + 180
        while not any(e.type == "progress" and e.stage == "edit" and e.step >= 3 for e in events(job)):
            assert time.time() < end and handle.running, client.log_path.read_text()[-2000:]
            time.sleep(0.05)
        client.process.send_signal(signal.SIGKILL)
        outcome = handle.wait(poll_interval_s=0.05)
        assert outcome.status == "error" and "worker stopped without a result" in outcome.message
        assert "killed by SIGKILL" in outcome.message and "resume" in outcome.hint
        assert not list(client.inbox.glob("*.claimed"))  # nobody reruns it unasked
        again = client.submit(job.parent)
        again.start()
        assert client.starts == 2
        outcome = again.wait(poll_interval_s=0.05)
        assert outcome.status == "finished", (outcome.message, client.log_path.read_text()[-2000:])
        assert any(e.type == "log" and "resum" in e.message for e in events(job))
        assert "mesh" in contract.load_manifest(job.parent / "results").files
    finally:
        client.release(10)
        client.kill()


def test_cancel_on_the_worker_ends_the_job_not_the_worker(tmp_path, tiny_model):
    client = _client(tmp_path)
    job = make_job(tmp_path / "job", tiny_model, edit_steps=400)
    try:
        handle = client.submit(job.parent)
        handle.start()

        def cancel_at_step_2(event) -> None:
            if event.type == "progress" and event.stage == "edit" and event.step >= 2:
                handle.cancel()

        outcome = handle.wait(cancel_at_step_2, poll_interval_s=0.05)
        assert outcome.status == "cancelled" and client.running
    finally:
        client.release(10)
        client.kill()
