"""Starts the backend as a subprocess and follows it through the job folder (no bpy here).

The backend speaks only through files: it appends events to ``events.jsonl`` and writes its
stderr to ``backend.log``; we ask it to stop by writing ``cancel.json``. The same class serves
the blocking path (scripts, tests, the headless command) and the non-blocking path (the UI polls
:meth:`BackendProcess.poll` from a timer).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import contract

TERMINAL_EVENTS = ("finished", "cancelled", "error")


class BackendError(RuntimeError):
    """The backend could not be started or failed; the message says why and what to do."""


@dataclass
class BackendConfig:
    """How to start the backend."""

    python: str = ""
    """Interpreter with torch, diffusers, ... installed; empty = this repository's .venv when found."""
    backend_root: str = ""
    """Folder that contains the ``backend`` package (put on PYTHONPATH); empty = installed in ``python``."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the backend process."""

    def resolved_python(self) -> str:
        if self.python:
            return self.python
        guess = default_repo_root()
        if guess is not None:
            candidate = guess / ".venv" / "bin" / "python"
            if candidate.exists():
                return str(candidate)
        raise BackendError(
            "no backend Python is configured. Set it in Edit > Preferences > Add-ons > PIVA "
            "(the Python of the environment made by `python3.11 build.py setup`, e.g. REPO/.venv/bin/python)"
        )

    def resolved_root(self) -> str:
        if self.backend_root:
            return self.backend_root
        guess = default_repo_root()
        return str(guess) if guess is not None else ""


def default_repo_root() -> Path | None:
    """The repository this extension was loaded from, when it is a development checkout."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "backend" / "__init__.py").is_file() else None


@dataclass
class BackendOutcome:
    """How a backend run ended."""

    status: str
    """``finished``, ``cancelled`` or ``error``."""
    returncode: int | None
    message: str = ""
    hint: str = ""
    results: str = ""
    log_path: str = ""


class BackendProcess:
    """One backend run for one job folder."""

    def __init__(self, config: BackendConfig, job_dir: str | os.PathLike) -> None:
        self.config = config
        self.job_dir = Path(job_dir)
        self.job_file = self.job_dir / contract.JOB_FILE
        self.log_path = self.job_dir / contract.LOG_FILE
        self.process: subprocess.Popen | None = None
        self.reader = contract.EventReader(self.job_dir / contract.EVENTS_FILE)
        self.last_event: contract.Event | None = None
        self.terminal: contract.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if not self.job_file.is_file():
            raise BackendError(f"job file {self.job_file} does not exist; write the job before starting the backend")
        python = self.config.resolved_python()
        if not (Path(python).exists() or shutil.which(python)):
            raise BackendError(
                f"the backend Python {python!r} does not exist. Fix the path in the add-on preferences "
                "or run `python3.11 build.py setup` in the repository"
            )
        contract.clear_cancel(self.job_dir)
        # Events from an earlier (cancelled or crashed) run stay in the file for the record; we
        # only follow what this run appends.
        events_path = self.job_dir / contract.EVENTS_FILE
        self.reader = contract.EventReader(events_path)
        if events_path.exists():
            self.reader._offset = events_path.stat().st_size  # noqa: SLF001 - start at the end
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
        root = self.config.resolved_root()
        if root:
            env["PYTHONPATH"] = root
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.config.env)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [python, "-m", "backend", "run", str(self.job_file)],
                cwd=str(self.job_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # Ctrl+C in Blender's terminal must not kill the job mid-write
            )
        except OSError as exc:
            raise BackendError(f"cannot start the backend {python!r}: {exc.strerror}") from exc
        finally:
            log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def poll(self) -> list[contract.Event]:
        """New events since the last poll (never blocks)."""
        events = self.reader.poll()
        for event in events:
            self.last_event = event
            if event.type in TERMINAL_EVENTS:
                self.terminal = event
        return events

    def outcome(self) -> BackendOutcome | None:
        """How the run ended, or None while it is still running."""
        if self.process is None or self.process.poll() is None:
            return None
        self.poll()
        code = self.process.returncode
        event = self.terminal
        if event is None:
            return BackendOutcome(
                status="error",
                returncode=code,
                message=f"the backend stopped without a result (exit code {code})",
                hint=f"it crashed or was killed; the log is {self.log_path}; run the job again to resume",
                log_path=str(self.log_path),
            )
        return BackendOutcome(
            status=event.type,
            returncode=code,
            message=event.message,
            hint=event.hint,
            results=event.results,
            log_path=str(self.log_path),
        )

    def cancel(self, reason: str = "user") -> None:
        """Ask the backend to checkpoint and stop; it notices at its next step."""
        contract.request_cancel(self.job_dir, reason)

    def kill(self) -> None:
        """Stop the process now (it may lose the steps since its last checkpoint)."""
        if self.running:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def release(self, timeout_s: float = 10.0) -> None:
        """Cancel, wait for a graceful stop, and kill if it does not come: frees GPU memory."""
        if not self.running:
            return
        self.cancel("release")
        deadline = time.monotonic() + timeout_s
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill()

    def wait(
        self,
        on_event: Callable[[contract.Event], None] | None = None,
        *,
        poll_interval_s: float = 0.1,
        should_cancel: Callable[[], bool] | None = None,
    ) -> BackendOutcome:
        """The blocking path: follow the run to its end, passing every event to ``on_event``."""
        if self.process is None:
            raise BackendError("the backend was not started")
        cancel_sent = False
        while True:
            exited = self.process.poll() is not None  # read before the events: none can follow exit
            for event in self.poll():
                if on_event is not None:
                    on_event(event)
            if exited:
                outcome = self.outcome()
                assert outcome is not None
                return outcome
            if should_cancel is not None and not cancel_sent and should_cancel():
                self.cancel()
                cancel_sent = True
            time.sleep(poll_interval_s)


def python_of_this_process() -> str:
    """Used by tests and the headless command: the backend runs in the same environment."""
    return sys.executable
