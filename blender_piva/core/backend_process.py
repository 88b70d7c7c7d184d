"""Starts the backend as a subprocess and follows it through the job folder (no bpy here).

The backend speaks only through files: it appends events to ``events.jsonl`` and writes its
stderr to ``backend.log``; we ask it to stop by writing ``cancel.json``. The same class serves
the blocking path (scripts, tests, the headless command) and the non-blocking path (the UI polls
:meth:`BackendProcess.poll` from a timer).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import contract
from ..contract.layout import MEMORY_SETTINGS
from . import process_group
from .network import network_refusal

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
    use_worker: bool = False
    """Run jobs on one long-lived worker (``python -m backend serve``, ``core/worker_client.py``)
    that keeps the model loaded between jobs, instead of a new backend process per job. The
    extension's preferences turn it on; scripts and the single-edit command default to a process."""
    worker_idle_timeout_s: float = 600.0
    """The worker stops after this long without a job (seconds), freeing its memory."""
    online_access: bool = True
    """Whether the backend may use the network (Blender's ``bpy.app.online_access``): when False,
    a job whose model or ControlNet is a hub id is refused before the backend starts, and the
    backend runs with ``HF_HUB_OFFLINE=1`` so no library tries the network."""

    def resolved_python(self) -> str:
        if self.python:
            return self.python
        guess = default_repo_root()
        if guess is not None:
            candidate = venv_python(guess / ".venv")
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


BACKEND_PACKAGES = (
    "backend", "torch", "numpy", "diffusers", "transformers", "peft", "safetensors", "PIL", "mcubes", "xatlas",
)
"""What the backend Python must provide (``backend`` itself through the backend folder); the
optional ones (nerfacc, tinycudann) are reported by ``python -m backend check``."""

_PROBED: set[tuple[str, str]] = set()
"""(python, backend folder) pairs that passed :func:`check_backend_python` in this process."""

_PROBE = (
    "import importlib.util, sys\n"
    "missing = [n for n in sys.argv[1:] if importlib.util.find_spec(n) is None]\n"
    "print(' '.join(missing))\n"
)


def venv_python(venv: Path, windows: bool | None = None) -> Path:
    """The interpreter of a virtual environment: ``Scripts/python.exe`` on Windows, ``bin/python`` elsewhere."""
    windows = process_group.IS_WINDOWS if windows is None else windows
    return venv / "Scripts" / "python.exe" if windows else venv / "bin" / "python"


def backend_env(config: BackendConfig) -> dict[str, str]:
    """The environment of a backend process: this one without Python overrides, the backend folder
    on PYTHONPATH, unbuffered output, ``HF_HUB_OFFLINE=1`` when online access is off, and ``config.env``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    root = config.resolved_root()
    if root:
        env["PYTHONPATH"] = root
    env["PYTHONUNBUFFERED"] = "1"
    if not config.online_access:
        env["HF_HUB_OFFLINE"] = "1"  # huggingface_hub, diffusers and transformers read it: local files only
    env.update(config.env)
    return env


def check_backend_python(config: BackendConfig, timeout_s: float = 60.0) -> str:
    """Check, before any work, that the backend Python exists and has the backend and its packages;
    returns the interpreter. A quick probe (``importlib.util.find_spec``, nothing is imported),
    cached per (python, backend folder) for this process. Raises :class:`BackendError` with the fix."""
    python = config.resolved_python()
    if not (Path(python).exists() or shutil.which(python)):
        raise BackendError(
            f"the backend Python {python!r} does not exist. Fix the path in the add-on preferences "
            "(or --python) or run `python3.11 build.py setup` in the repository"
        )
    key = (python, config.resolved_root())
    if key in _PROBED:
        return python
    try:
        out = subprocess.run(
            [python, "-c", _PROBE, *BACKEND_PACKAGES], check=False, capture_output=True, text=True, timeout=timeout_s,
            env=backend_env(config), stdin=subprocess.DEVNULL, cwd=tempfile.gettempdir(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(
            f"cannot run the backend Python {python!r}: {exc}; fix Backend Python in the add-on preferences"
        ) from None
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackendError(
            f"the backend Python {python!r} does not run ({tail}); fix Backend Python in the add-on preferences"
        )
    missing = out.stdout.split()
    if "backend" in missing:
        raise BackendError(
            f"the backend Python {python!r} cannot import the 'backend' package (backend folder: "
            f"{key[1] or 'none set'}); set Backend folder in the add-on preferences to the folder that holds backend/"
        )
    if missing:
        raise BackendError(
            f"the backend Python {python!r} lacks {', '.join(missing)}; set Backend Python in the add-on preferences "
            "(or --python) to the environment made by `python3.11 build.py setup` (e.g. REPO/.venv/bin/python), "
            "or install requirements.txt into it"
        )
    _PROBED.add(key)
    return python


def default_repo_root() -> Path | None:
    """The repository this extension was loaded from, when it is a development checkout."""
    here = Path(__file__).resolve().parents[2]  # REPO/blender_piva/core/backend_process.py
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
        self.started: float = 0.0
        """When :meth:`start` launched the backend (seconds since the epoch); cancel requests
        older than it are stale for this run."""

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
        self._refuse_offline_hub()
        contract.clear_cancel(self.job_dir)
        # The run starts now: a Cancel written from here on is for it, anything older is stale.
        self.started = time.time()
        self.reader = contract.EventReader.from_end(self.job_dir / contract.EVENTS_FILE)
        env = backend_env(self.config)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [python, "-m", "backend", "run", str(self.job_file), "--run-started", repr(self.started)],
                cwd=str(self.job_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                **process_group.popen_kwargs(),  # Ctrl+C in Blender's terminal must not kill the job mid-write
            )
        except OSError as exc:
            raise BackendError(f"cannot start the backend {python!r}: {exc.strerror}") from exc
        finally:
            log.close()

    def _refuse_offline_hub(self) -> None:
        """With online access off, a job naming a hub model never reaches the backend."""
        if self.config.online_access:
            return
        try:
            model = contract.load_job(self.job_file).model
        except contract.ContractError:
            return  # the backend reports an unreadable job itself
        refusal = network_refusal(model.model, model.controlnet, online_access=False)
        if refusal is not None:
            raise BackendError(refusal)

    @property
    def launched(self) -> bool:
        """Whether :meth:`start` ran."""
        return self.process is not None

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
            full = self._disk_full()
            if full is not None:
                return BackendOutcome("error", code, message=full[0], hint=full[1], log_path=str(self.log_path))
            if process_group.killed_from_outside(code):  # not us (kill() is Ctrl+C's third press): most often the kernel's OOM killer
                stage = self.last_event.stage if self.last_event is not None and self.last_event.stage else ""
                setting = MEMORY_SETTINGS.get(stage, "the stage's size settings")
                where = f" in the {stage} stage" if stage else ""
                return BackendOutcome(
                    status="error",
                    returncode=code,
                    message=f"the backend stopped without a result (killed by SIGKILL{where})",
                    hint=f"it crashed or was killed, most often by the system when memory runs out: lower {setting} "
                    f"and run the job again to resume from its last checkpoint; the log is {self.log_path}",
                    log_path=str(self.log_path),
                )
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

    def _disk_full(self) -> tuple[str, str] | None:
        """(message, hint) when the job's disk has less room than the job needs: the likely reason a
        backend died without even writing its error event."""
        from ..contract import disk

        try:
            spec = contract.load_job(self.job_file)
        except contract.ContractError:
            return None
        need = disk.job_bytes(spec, capture=False)
        free = disk.free_bytes(self.job_dir)
        if free is None or free >= min(need, 16 * 2**20):
            return None
        message, hint = disk.disk_full_message(self.job_dir, need, "the job")
        return f"the backend stopped without a result: {message}", hint

    def cancel(self, reason: str = "user") -> None:
        """Ask the backend to checkpoint and stop; it notices at its next step."""
        contract.request_cancel(self.job_dir, reason)

    def terminate(self) -> None:
        """SIGTERM (Ctrl+Break on Windows): the backend treats it as a cancel (checkpoint, then
        stop), without waiting for its next look at cancel.json."""
        if self.running:
            assert self.process is not None
            process_group.terminate_group(self.process)

    def kill(self) -> None:
        """Stop the process now (it may lose the steps since its last checkpoint)."""
        if self.running:
            assert self.process is not None
            process_group.kill_group(self.process)

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
        on_interrupt: Callable[[str], None] | None = None,
    ) -> BackendOutcome:
        """The blocking path: follow the run to its end, passing every event to ``on_event``.

        Ctrl+C (KeyboardInterrupt) never leaves the backend running unattended: the first asks it
        to cancel (it checkpoints and exits; the job resumes when run again), the second sends it
        SIGTERM (also a cancel, noticed at once), a third kills it (the steps since its last
        checkpoint are lost). Each time ``on_interrupt`` gets a line for the user.
        """
        if not self.launched:
            raise BackendError("the backend was not started")
        cancel_sent = False
        interrupts = 0
        while True:
            try:
                exited = not self.running  # read before the events: none can follow exit
                for event in self.poll():
                    if on_event is not None:
                        on_event(event)
                if exited:
                    outcome = self.outcome()
                    assert outcome is not None
                    if interrupts and outcome.status == "error" and self.terminal is None:
                        outcome = BackendOutcome(
                            "cancelled", outcome.returncode, "the backend was stopped (Ctrl+C)",
                            "run the same job again to resume from its last checkpoint", log_path=str(self.log_path),
                        )
                    return outcome
                if should_cancel is not None and not cancel_sent and should_cancel():
                    self.cancel()
                    cancel_sent = True
                time.sleep(poll_interval_s)
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts == 1:
                    self.cancel("user")
                    cancel_sent = True
                    notice = "cancelling: the backend saves a checkpoint and stops (Ctrl+C again stops it at once)"
                elif interrupts == 2:
                    self.terminate()
                    notice = "stopping the backend now (SIGTERM; press Ctrl+C again to kill it, losing recent steps)"
                else:
                    self.kill()
                    notice = "killed the backend; the job resumes from its last checkpoint"
                if on_interrupt is not None:
                    on_interrupt(notice)


def python_of_this_process() -> str:
    """Used by tests and the headless command: the backend runs in the same environment."""
    return sys.executable
