"""``--executor workers``: several workers on one inbox run a batch, each item once; a worker
killed mid-item is replaced and the item resumes from its checkpoints."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

from blender_piva import contract
from blender_piva.contract import worker_inbox as wi

from .jobs import events, make_job


def test_two_workers_run_three_items_and_a_killed_one_is_replaced(tmp_path, tiny_model, monkeypatch):
    from backend.serve.dispatch import WorkersSettings, run_jobs_on_workers

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    stages = ("reconstruct", "edit", "export")
    jobs = [make_job(tmp_path / f"job{i}", tiny_model, stages=stages, edit_steps=12 if i else 60) for i in range(3)]
    inbox = tmp_path / "inbox"
    killed: list[int] = []

    def kill_the_worker_of_job0() -> None:
        end = time.time() + 240
        while time.time() < end:
            if any(e.type == "progress" and e.stage == "edit" and e.step >= 3 for e in events(jobs[0])):
                claim = json.loads(wi.claimed_path(inbox, "item000").read_text())
                os.kill(claim["worker_pid"], signal.SIGKILL)
                killed.append(claim["worker_pid"])
                return
            time.sleep(0.05)

    threading.Thread(target=kill_the_worker_of_job0, daemon=True).start()
    lines: list[str] = []
    codes = run_jobs_on_workers(jobs, WorkersSettings(workers=2, poll_s=0.05), log=lines.append, inbox=inbox)
    assert killed, "job0 ended before its worker could be killed"
    assert [codes[j] for j in jobs] == [contract.EXIT_OK] * 3, (lines, (inbox / "workers.log").read_text()[-3000:])
    assert any("starting another" in line for line in lines)
    log = (inbox / "workers.log").read_text()
    assert "died mid-job; queued again" in log
    assert len(set(re.findall(r"watching [^\n]*?\(pid (\d+)\)", log))) == 3, log[-3000:]
    for job in jobs:
        assert events(job)[-1].type == "finished"
        assert "mesh" in contract.load_manifest(job.parent / "results").files
    assert any(e.type == "log" and "resum" in e.message for e in events(jobs[0]))
