"""The extension's side of the long-lived worker (``python -m backend serve``; no bpy here).

One worker per backend configuration and Blender session: started on the first job that asks for
it (:func:`shared_worker`), reused by every edit, variant and batch item after it, so the model
is loaded once; it stops after ``worker_idle_timeout_s`` without a job, when Blender exits, or
with :meth:`WorkerClient.release` (the panel's Release Backend), which frees its GPU memory.

A job on the worker (:class:`WorkerJob`) is followed exactly like a backend process of its own
(:class:`~.backend_process.BackendProcess`: the job folder's events, ``cancel.json``, the outcome),
so EditJob, the modal operators and the queue runner do not care which one runs their job. When
the worker dies mid-job (killed, out of memory), the job is reported like a crashed backend and
resumes from its checkpoints when it is run again, on a new worker.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import subprocess
import time
from pathlib import Path

from .. import contract
from ..contract import worker_inbox as wi
from . import process_group
from .backend_process import BackendConfig, BackendError, BackendOutcome, BackendProcess, backend_env

WORKER_LOG = "worker.log"
"""The worker's stderr, in its inbox folder."""


class WorkerClient:
    """One worker process and its inbox folder."""

    def __init__(self, config: BackendConfig, inbox: Path) -> None:
        self.config = config
        self.inbox = Path(inbox)
        self.process: subprocess.Popen | None = None
        self.log_path = self.inbox / WORKER_LOG
        self._names = itertools.count()
        self.starts = 0
        """Worker processes this client started (one, unless a worker died or was released)."""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_started(self) -> None:
        """Start the worker unless it runs (a dead or stopped one is replaced)."""
        if self.running:
            return
        python = self.config.resolved_python()
        self.inbox.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [python, "-m", "backend", "serve", "--inbox", str(self.inbox),
                 "--idle-timeout", repr(float(self.config.worker_idle_timeout_s))],
                cwd=str(self.inbox), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=backend_env(self.config), **process_group.popen_kwargs(),
            )
        except OSError as exc:
            raise BackendError(f"cannot start the backend worker {python!r}: {exc.strerror}") from exc
        finally:
            log.close()
        self.starts += 1

    def submit(self, job_dir: Path) -> "WorkerJob":
        """A handle for ``job_dir`` on this worker; :meth:`WorkerJob.start` submits it."""
        return WorkerJob(self, job_dir, f"{Path(job_dir).name[:80]}-{os.getpid()}-{next(self._names)}")

    def release(self, timeout_s: float = 30.0) -> bool:
        """Stop the worker (its current job is cancelled: it checkpoints first) and free its
        memory; True when one was running."""
        if not self.running:
            return False
        assert self.process is not None
        for claim in self.inbox.glob(f"*{wi.CLAIMED_SUFFIX}"):
            try:
                job = wi.Claim.from_dict(json.loads(claim.read_text(encoding="utf-8"))).job
            except (contract.ContractError, ValueError, OSError):
                continue
            if job:
                contract.request_cancel(Path(job).parent, "release")
        wi.request(self.inbox, wi.STOP_FILE)
        deadline = time.monotonic() + timeout_s
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running:
            process_group.kill_group(self.process)
            self.process.wait(10)
        return True

    def kill(self) -> None:
        if self.running:
            assert self.process is not None
            process_group.kill_group(self.process)


class WorkerJob(BackendProcess):
    """One job submitted to a :class:`WorkerClient`, with BackendProcess's interface."""

    def __init__(self, client: WorkerClient, job_dir: Path, name: str) -> None:
        super().__init__(client.config, job_dir)
        self.client = client
        self.name = wi.check_name(name)
        self.log_path = client.log_path
        self._submitted = False
        self._outcome: BackendOutcome | None = None

    def start(self) -> None:
        if not self.job_file.is_file():
            raise BackendError(f"job file {self.job_file} does not exist; write the job before starting the backend")
        self._refuse_offline_hub()
        self.client.ensure_started()
        contract.clear_cancel(self.job_dir)
        self.started = time.time()
        self.reader = contract.EventReader.from_end(self.job_dir / contract.EVENTS_FILE)
        wi.submit(self.client.inbox, self.name, self.job_file)
        self._submitted = True

    @property
    def launched(self) -> bool:
        return self._submitted

    @property
    def running(self) -> bool:
        return (
            self._submitted and self._outcome is None
            and wi.load_done(self.client.inbox, self.name) is None and self.client.running
        )

    @property
    def pid(self) -> int | None:
        return self.client.process.pid if self.client.process is not None else None

    def outcome(self) -> BackendOutcome | None:
        if self._outcome is None and self._submitted:
            self._outcome = self._read_outcome()
        return self._outcome

    def _read_outcome(self) -> BackendOutcome | None:
        done = wi.load_done(self.client.inbox, self.name)
        if done is None and self.client.running:
            return None
        self.poll()
        if done is None:  # the worker died with the job: never let a later worker run it unasked
            wi.claimed_path(self.client.inbox, self.name).unlink(missing_ok=True)
            (self.client.inbox / f"{self.name}{wi.SUBMIT_SUFFIX}").unlink(missing_ok=True)
            code = self.client.process.returncode if self.client.process is not None else None
            how = "killed by SIGKILL" if process_group.killed_from_outside(code) else f"exit code {code}"
            return BackendOutcome(
                "error", code, message=f"the backend worker stopped without a result ({how})",
                hint=f"it crashed or was killed (most often when memory runs out); run the job again to resume "
                f"from its last checkpoint on a new worker; the log is {self.log_path}",
                log_path=str(self.log_path),
            )
        wi.done_path(self.client.inbox, self.name).unlink(missing_ok=True)
        event = self.terminal
        if event is None:
            return BackendOutcome(
                "error", done.exit_code, message=done.message or f"the job ended with exit code {done.exit_code}",
                hint=f"see {self.log_path}", log_path=str(self.log_path),
            )
        return BackendOutcome(event.type, done.exit_code, event.message, event.hint, event.results, str(self.log_path))

    def terminate(self) -> None:
        self.cancel("user")  # SIGTERM would stop the worker, not the job

    def kill(self) -> None:
        self.client.kill()

    def release(self, timeout_s: float = 10.0) -> None:
        self.client.release(timeout_s)


_SHARED: dict[tuple, WorkerClient] = {}


def shared_worker(config: BackendConfig, job_root: Path) -> WorkerClient:
    """The worker of ``config`` for this Blender session (created on first use); its inbox is
    ``JOB_ROOT/workers/PID`` so that two Blender sessions never take each other's jobs."""
    key = (config.resolved_python(), config.resolved_root(), tuple(sorted(config.env.items())), config.online_access)
    client = _SHARED.get(key)
    if client is None:
        client = _SHARED[key] = WorkerClient(config, Path(job_root) / "workers" / str(os.getpid()))
    return client


def running_workers() -> list[WorkerClient]:
    return [c for c in _SHARED.values() if c.running]


def release_all(timeout_s: float = 30.0) -> int:
    """Stop every worker of this session (Release Backend, Blender exiting); how many ran."""
    return sum(client.release(timeout_s) for client in list(_SHARED.values()))


atexit.register(release_all, 10.0)
