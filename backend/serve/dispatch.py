"""Run a list of job folders on an executor: ``python -m backend dispatch``.

* ``workers``: N long-lived workers (``python -m backend serve``) on one machine sharing one inbox,
  each pinned to one GPU (``CUDA_VISIBLE_DEVICES``) when the machine has GPUs; claiming is atomic,
  so each item runs once; a worker that dies is replaced and its item resumes from its checkpoints
  (the new worker re-queues the dead one's claim).
* ``ray``: one actor per GPU of a Ray cluster (``ray_executor``), no shared storage needed.

The extension runs this for a queue whose executor is not the default single worker, then follows
each item's ``events.jsonl`` as for any job; the exit status is 0 when every job finished.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from blender_piva import contract
from blender_piva.contract import worker_inbox as wi

EXECUTORS = ("workers", "ray")
"""What ``--executor`` accepts (the single worker of the extension is not dispatched)."""


@dataclass
class WorkersSettings:
    """How ``--executor workers`` runs."""

    workers: int = 0
    """Worker processes; 0 = one per visible GPU (``torch.cuda.device_count()``), 1 without GPUs."""
    poll_s: float = 0.2
    """How often the workers and this dispatcher look at the inbox (seconds)."""
    max_restarts: int = 3
    """Dead workers replaced before the dispatcher gives up."""


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no torch build with CUDA
        return 0


def _start_worker(inbox: Path, index: int, gpus: int, poll_s: float, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)  # pinned: the job's "cuda" is this GPU
    out = open(log, "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--inbox", str(inbox), "--poll", repr(poll_s)],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def run_jobs_on_workers(
    jobs: list[Path], settings: WorkersSettings, log: Callable[[str], None] = print, inbox: Path | None = None,
) -> dict[Path, int]:
    """Run every job on local workers; returns each job's exit code (``contract.EXIT_*``)."""
    gpus = visible_gpus()
    count = settings.workers or max(1, gpus)
    own_inbox = inbox is None
    inbox = Path(tempfile.mkdtemp(prefix="piva-inbox-")) if inbox is None else Path(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    names = {f"item{i:03d}": job for i, job in enumerate(jobs)}
    for name, job in names.items():
        wi.submit(inbox, name, job)
    worker_log = inbox / "workers.log"
    workers = [_start_worker(inbox, i, gpus, settings.poll_s, worker_log) for i in range(min(count, len(jobs)) or 1)]
    log(f"{len(workers)} workers ({gpus} GPUs visible); their log: {worker_log}")
    codes: dict[Path, int] = {}
    restarts = 0
    try:
        while len(codes) < len(names):
            for name, job in names.items():
                if job not in codes and (done := wi.load_done(inbox, name)) is not None:
                    codes[job] = done.exit_code
                    log(f"{job.parent.name}: exit {done.exit_code}{' ' + done.message if done.message else ''}")
            for i, worker in enumerate(workers):
                if worker.poll() is not None and len(codes) < len(names):
                    if restarts >= settings.max_restarts:
                        raise RuntimeError(f"{restarts} workers died; see {worker_log}")
                    restarts += 1
                    log(f"worker {i} exited ({worker.returncode}): starting another (its item resumes from its checkpoints)")
                    workers[i] = _start_worker(inbox, i, gpus, settings.poll_s, worker_log)
            time.sleep(settings.poll_s)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()  # after its job: every job is done here, unless we are interrupted
        for worker in workers:
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
        if own_inbox and len(codes) == len(names):
            shutil.rmtree(inbox, ignore_errors=True)
    return codes


def main(args) -> int:
    jobs = [Path(j).resolve() for j in args.jobs]
    for job in jobs:
        contract.load_job(job)  # a bad job file fails here, before any worker starts
    if args.executor == "ray":
        from .ray_executor import RaySettings, run_jobs_on_ray

        outcome = run_jobs_on_ray(jobs, RaySettings(address=args.address, actors=args.actors))
        codes = outcome.exit_codes
    else:
        codes = run_jobs_on_workers(jobs, WorkersSettings(workers=args.actors))
    failed = [j for j in jobs if codes.get(j) != contract.EXIT_OK]
    print(f"PIVA dispatch: {len(jobs) - len(failed)} of {len(jobs)} jobs finished", flush=True)
    return 0 if not failed else 1
