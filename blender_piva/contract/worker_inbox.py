"""The worker's inbox: how jobs reach a long-lived ``python -m backend serve`` (standard library only).

The inbox is one folder; every request is a file in it, written atomically (``atomic``):

* ``NAME.json``       a submission (:class:`Submission`): ``{"job": "/abs/JOB/job.json"}``; the
                      submitter picks NAME (letters, digits, ``-``, ``_``; it must not end in
                      ``.done``). Submissions run oldest first (then by name).
* ``NAME.claimed``    the worker renamed the submission (atomic: one worker wins) and then wrote
                      its own pid into it (:class:`Claim`); a claim whose worker is dead is renamed
                      back to ``NAME.json`` by the next worker, which resumes the job from its
                      checkpoints.
* ``NAME.done.json``  the job ended (:class:`Done`): its exit status (``layout.EXIT_*``). The
                      job's own events are in its ``events.jsonl``, as with ``backend run``.
* ``stop.json``       stop the worker after the current job (SIGTERM does the same). A cancel of
                      the running job is its folder's ``cancel.json``, as always.
* ``release.json``    free the cached model (and CUDA's cache) without stopping.

``stop.json`` and ``release.json`` are :class:`Request` documents; the worker removes them when it
acts on them, and on start removes those written before it started (left by an earlier worker).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._schema import ContractError
from .atomic import write_json_atomic

SUBMIT_SUFFIX = ".json"
CLAIMED_SUFFIX = ".claimed"
DONE_SUFFIX = ".done.json"
STOP_FILE = "stop.json"
RELEASE_FILE = "release.json"
CONTROL_FILES = (STOP_FILE, RELEASE_FILE)
"""Inbox files that are requests to the worker, not submissions."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
"""A submission's NAME: what the submitter may choose."""

CLAIM_GRACE_S = 30.0
"""A claim that names no worker (the worker died between the rename and writing its pid) is
orphaned once it is this old (seconds)."""


@dataclass
class Submission:
    """``NAME.json``: one job for the worker."""

    job: str
    """Absolute path of the job's ``job.json`` (inside its job folder)."""

    def to_dict(self) -> dict:
        return {"job": self.job}

    @classmethod
    def from_dict(cls, data: object, where: str = "submission") -> "Submission":
        if not isinstance(data, dict) or not isinstance(data.get("job"), str) or not data["job"]:
            raise ContractError(f"{where}: job", f"missing or not a string in {data!r}", '{"job": "/abs/path/JOB/job.json"}')
        if not Path(data["job"]).is_absolute():
            raise ContractError(f"{where}: job", f"{data['job']!r} is not an absolute path", "the absolute path of a job.json")
        return cls(job=data["job"])


@dataclass
class Claim(Submission):
    """``NAME.claimed``: the submission, with the worker that runs it."""

    worker_pid: int = 0
    """Process id of the worker running the job (0: not written yet)."""
    claimed_at: float = 0.0
    """When the worker claimed it (seconds since the epoch)."""

    def to_dict(self) -> dict:
        return {"job": self.job, "worker_pid": self.worker_pid, "claimed_at": self.claimed_at}

    @classmethod
    def from_dict(cls, data: object, where: str = "claim") -> "Claim":
        base = Submission.from_dict(data, where)
        pid = data.get("worker_pid", 0) if isinstance(data, dict) else 0
        at = data.get("claimed_at", 0.0) if isinstance(data, dict) else 0.0
        return cls(
            job=base.job,
            worker_pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
            claimed_at=float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else 0.0,
        )


@dataclass
class Done:
    """``NAME.done.json``: how the job ended."""

    job: str
    """The submission's ``job``."""
    exit_code: int
    """``layout.EXIT_OK``, ``EXIT_ERROR``, ``EXIT_BAD_JOB`` or ``EXIT_CANCELLED``, as ``backend run`` exits."""
    worker_pid: int = 0
    """The worker that ran it."""
    finished_at: float = field(default_factory=time.time)
    """When it ended (seconds since the epoch)."""
    message: str = ""
    """Why it could not start, when it failed before its job folder had events ('' otherwise:
    the job's ``events.jsonl`` tells what happened)."""

    def to_dict(self) -> dict:
        return {"job": self.job, "exit_code": self.exit_code, "worker_pid": self.worker_pid,
                "finished_at": self.finished_at, "message": self.message}

    @classmethod
    def from_dict(cls, data: object, where: str = "done") -> "Done":
        if not isinstance(data, dict) or not isinstance(data.get("exit_code"), int):
            raise ContractError(f"{where}: exit_code", f"missing or not an integer in {data!r}", "an integer (contract.EXIT_*)")
        return cls(job=str(data.get("job", "")), exit_code=data["exit_code"],
                   worker_pid=int(data.get("worker_pid", 0)), finished_at=float(data.get("finished_at", 0.0)),
                   message=str(data.get("message", "")))


@dataclass
class Request:
    """``stop.json`` or ``release.json``."""

    requested_at: float = field(default_factory=time.time)
    """When it was written (seconds since the epoch): a worker started later ignores it."""

    def to_dict(self) -> dict:
        return {"requested_at": self.requested_at}


def check_name(name: str) -> str:
    """``name`` if it may name a submission; else a ContractError naming the rule."""
    if not NAME_PATTERN.match(name) or name.endswith(".done") or f"{name}.json" in CONTROL_FILES:
        raise ContractError(
            "inbox name", f"{name!r} is not allowed",
            f"1-100 letters, digits, '-' or '_', not ending in '.done', not {', '.join(Path(f).stem for f in CONTROL_FILES)}",
        )
    return name


def submit(inbox: str | Path, name: str, job_path: str | Path) -> Path:
    """Submit the job ``job_path`` to the worker watching ``inbox``; return the submission's path."""
    path = Path(inbox) / f"{check_name(name)}{SUBMIT_SUFFIX}"
    write_json_atomic(path, Submission(job=str(Path(job_path).resolve())).to_dict())
    return path


def request(inbox: str | Path, file_name: str) -> Path:
    """Write ``stop.json`` or ``release.json`` (``file_name``) into ``inbox``."""
    if file_name not in CONTROL_FILES:
        raise ContractError("inbox request", f"unknown file {file_name!r}", ", ".join(CONTROL_FILES))
    path = Path(inbox) / file_name
    write_json_atomic(path, Request().to_dict())
    return path


def done_path(inbox: str | Path, name: str) -> Path:
    return Path(inbox) / f"{name}{DONE_SUFFIX}"


def claimed_path(inbox: str | Path, name: str) -> Path:
    return Path(inbox) / f"{name}{CLAIMED_SUFFIX}"


def load_done(inbox: str | Path, name: str) -> Done | None:
    """The job's ``NAME.done.json``, or None while it has not ended."""
    path = done_path(inbox, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return Done.from_dict(data, str(path))
