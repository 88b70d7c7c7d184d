"""The worker loop: claim a submission, run its job as ``backend run`` would, report it, repeat.

Every job goes through :func:`backend.runner.run_job` with the worker's :class:`ModelCache`, so a
job's events, checkpoints, cancel and results are those of a one-process run; only the model
stays loaded. Between jobs the worker acts on the inbox's requests:

1. ``stop.json`` or SIGTERM (SIGBREAK on Windows): stop (during a job: after it; SIGTERM does
   not cancel the job, its folder's ``cancel.json`` does);
2. ``release.json``: free the cached model;
3. the oldest submission: claim it, run it, write ``NAME.done.json``;
4. nothing for ``idle_timeout`` seconds: stop.

A job that fails (bad job.json, a stage error, an unexpected exception) is reported like any
other, and the worker goes on. On start, claims of dead workers go back into the queue.
"""

from __future__ import annotations

import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from blender_piva import contract
from blender_piva.contract import worker_inbox as wi

from ..stages.context import STOP_SIGNAL_NAMES
from .inbox import Claimed, Inbox
from .model_cache import ModelCache


@dataclass
class WorkerSettings:
    """How a worker runs (``python -m backend serve`` options)."""

    inbox: Path
    """The inbox folder it watches."""
    idle_timeout: float = 0.0
    """Stop after this many seconds without a job; 0 = never."""
    poll_s: float = 0.2
    """How often it looks at the inbox while idle (seconds)."""
    echo: bool = False
    """Also print every job's events to stdout."""


@dataclass
class Worker:
    settings: WorkerSettings
    cache: ModelCache = field(default_factory=ModelCache)
    jobs_run: int = 0
    """Jobs this worker ran (whatever their exit status)."""
    _stop: list[bool] = field(default_factory=lambda: [False])

    def log(self, message: str) -> None:
        # One write per line: workers of one dispatch share a log, and print's separate write of
        # the newline (unbuffered, as under PYTHONUNBUFFERED) lets another worker's line in between.
        sys.stderr.write(f"PIVA worker: {message}\n")
        sys.stderr.flush()

    def _on_stop_signal(self, signum, frame) -> None:  # pragma: no cover - exercised through a subprocess
        self._stop[0] = True

    def serve(self) -> int:
        """Run jobs until stopped; return the process exit code (0)."""
        started = time.time()
        for name in STOP_SIGNAL_NAMES:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self._on_stop_signal)
        inbox = Inbox(self.settings.inbox)
        for stale in inbox.clear_stale_requests(started):
            self.log(f"removed {stale}: written before this worker started")
        for name in inbox.requeue_orphans():
            self.log(f"{name}: its worker died mid-job; queued again (it resumes from its checkpoints)")
        self.log(f"watching {inbox.folder} (pid {inbox.pid})")
        last_job = time.time()
        while True:
            if self._stop[0] or inbox.take_request(wi.STOP_FILE):
                self.log("stop requested")
                break
            if inbox.take_request(wi.RELEASE_FILE):
                self.log("released the cached model" if self.cache.release() else "release requested: no model loaded")
            claimed = next((c for c in map(inbox.claim, inbox.pending()) if c is not None), None)
            if claimed is None:
                if self.settings.idle_timeout > 0 and time.time() - last_job >= self.settings.idle_timeout:
                    self.log(f"no job for {self.settings.idle_timeout:g} s: stopping")
                    break
                time.sleep(self.settings.poll_s)
                continue
            code, message = self.run_one(claimed)
            inbox.finish(claimed, code, message)
            self.jobs_run += 1
            self.log(f"{claimed.name}: exit {code}")
            last_job = time.time()
        self.cache.release()
        return 0

    def run_one(self, claimed: Claimed) -> tuple[int, str]:
        """Run one claimed job; its exit code (contract.EXIT_*) and, when it could not start, why."""
        from ..runner import run_job

        if claimed.problem:
            self.log(f"{claimed.name}: {claimed.problem}")
            return contract.EXIT_BAD_JOB, claimed.problem
        self.log(f"{claimed.name}: running {claimed.job}")
        try:
            return run_job(
                Path(claimed.job), echo=self.settings.echo, started=claimed.submitted_at,
                models=self.cache, sigterm_cancels=False,
            ), ""
        except Exception as exc:  # e.g. the job folder cannot even take its events: report it, go on
            traceback.print_exc(file=sys.stderr)
            return contract.EXIT_ERROR, f"{type(exc).__name__}: {exc}"
