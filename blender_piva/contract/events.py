"""Events (``events.jsonl``, backend -> extension, one JSON object per line) and the cancel request
(``cancel.json``, extension -> backend)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ._schema import ContractError, check_int, check_version, from_dict, to_jsonable
from .atomic import temp_path, write_json_atomic
from .layout import CANCEL_FILE, CONTRACT_VERSION, EVENT_TYPES, STAGES

@dataclass
class Event:
    """One line of ``events.jsonl``.

    ``started``   the backend accepted the job (``message`` holds versions and device)
    ``stage``     a stage begins (``stage``, ``total`` steps)
    ``progress``  a step finished (``stage``, ``step``, ``total``, ``losses``)
    ``preview``   a preview render was written (``stage``, ``step``, ``preview`` path)
    ``log``       free text for the user (``message``)
    ``finished``  all stages done (``results`` = path of the manifest)
    ``cancelled`` stopped on request after writing a checkpoint (``stage``, ``step``)
    ``error``     failed (``message`` what happened, ``hint`` how to fix it)
    """

    type: str
    stage: str = ""
    step: int = 0
    total: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    preview: str = ""
    message: str = ""
    hint: str = ""
    results: str = ""
    time: float = 0.0
    contract: int = CONTRACT_VERSION

    def validate(self) -> "Event":
        check_version(self.contract, "event.contract")
        if self.type not in EVENT_TYPES:
            raise ContractError("event.type", f"unknown event type {self.type!r}", ", ".join(EVENT_TYPES))
        if self.stage and self.stage not in STAGES + ("validate",):
            raise ContractError("event.stage", f"unknown stage {self.stage!r}", ", ".join(STAGES + ("validate",)))
        check_int(self.step, "event.step", 0, 2**62)
        check_int(self.total, "event.total", 0, 2**62)
        if self.type == "error" and not self.message:
            raise ContractError("event.message", "an error event needs a message", "non-empty text")
        return self

    def to_json(self) -> str:
        data = {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", {}, 0, 0.0) or k in ("type", "contract")}
        data["time"] = self.time or time.time()
        return json.dumps(to_jsonable(data), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> "Event":
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ContractError("event", f"malformed event line: {exc.msg}", "one JSON object per line") from None
        return from_dict(cls, data, "event.").validate()


class EventWriter:
    """Appends events to ``events.jsonl``, one flushed line each (readers may tail the file)."""

    def __init__(self, path: str | os.PathLike, echo: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._echo = echo

    def emit(self, event_type: str, **fields: Any) -> Event:
        """Append one event; a failed write (a full disk) leaves no partial line behind and raises."""
        event = Event(type=event_type, time=time.time(), **fields).validate()
        line = event.to_json()
        data = (line + "\n").encode("utf-8")
        with open(self.path, "ab", buffering=0) as fh:
            start = fh.seek(0, os.SEEK_END)
            try:
                done = 0
                while done < len(data):
                    done += fh.write(data[done:])
            except OSError as exc:
                try:
                    fh.truncate(start)
                except OSError:
                    pass  # not a regular file (a pipe, /dev/full): nothing to take back
                if exc.filename is None:
                    exc.filename = str(self.path)
                raise
        if self._echo is not None:
            self._echo(line)
        return event


class EventReader:
    """Incremental reader of ``events.jsonl``: each :meth:`poll` returns the complete new lines.

    A half-written last line (the writer is mid-append) is kept for the next poll.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    @classmethod
    def from_end(cls, path: str | os.PathLike) -> "EventReader":
        """A reader of what is appended from now on: the events of earlier (cancelled, crashed)
        runs stay in the file for the record, and a new run follows only its own."""
        reader = cls(path)
        try:
            reader._offset = reader.path.stat().st_size
        except FileNotFoundError:
            pass
        return reader

    def poll(self) -> list[Event]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [Event.from_json(line.decode("utf-8")) for line in lines if line.strip()]

    def __iter__(self) -> Iterator[Event]:
        return iter(self.poll())


@dataclass
class CancelRequest:
    """Written to ``cancel.json`` by the extension; the backend checkpoints and stops.

    A request is meant for the run that is going on when it is written: a run honours only
    requests whose ``time`` is not older than its own start (the extension passes the moment it
    launched the backend, ``python -m backend run --run-started``; else the backend's own start)
    and removes older ones when it begins (:func:`clear_stale_cancel`), so a ``cancel.json`` left
    by an earlier cancel never stops a later run. A file that is not a valid request counts with
    its modification time.
    """

    reason: str = "user"
    """Why: ``user`` (Cancel button), ``release`` (Release backend), ``shutdown`` (Blender quits)."""
    time: float = 0.0
    """When it was written (seconds since the epoch)."""
    contract: int = CONTRACT_VERSION


def request_cancel(job_dir: str | os.PathLike, reason: str = "user") -> Path:
    """Ask the backend working in ``job_dir`` to stop at its next step."""
    path = Path(job_dir) / CANCEL_FILE
    write_json_atomic(path, to_jsonable(dataclasses.asdict(CancelRequest(reason=reason, time=time.time()))))
    return path


def cancel_time(job_dir: str | os.PathLike) -> float | None:
    """When the pending request in ``job_dir`` was made; None when there is none.

    A ``cancel.json`` that is not a valid request (hand-written, an older writer) counts from its
    modification time."""
    return _request_time(Path(job_dir) / CANCEL_FILE)


def cancel_requested(job_dir: str | os.PathLike, since: float | None = None) -> bool:
    """True when ``job_dir`` holds a cancel request not older than ``since`` (None: any request)."""
    if since is None:
        return (Path(job_dir) / CANCEL_FILE).exists()
    made = cancel_time(job_dir)
    return made is not None and made >= since


def clear_stale_cancel(job_dir: str | os.PathLike, since: float) -> bool:
    """Remove a cancel request older than ``since`` (a run's start); True if one was removed.

    The request is first renamed aside, so that one written meanwhile by the extension (a fresh
    Cancel) is never lost: a fresh request found aside is put back.
    """
    path = Path(job_dir) / CANCEL_FILE
    made = _request_time(path)
    if made is None or made >= since:
        return False
    aside = temp_path(path)  # named like any temporary: removed with the leftovers if we die here
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return False
    made = _request_time(aside)
    if made is not None and made >= since and not path.exists():
        os.replace(aside, path)  # a Cancel arrived between the two reads: keep it
        return False
    os.remove(aside)
    return True


def _request_time(path: Path) -> float | None:
    try:
        text = path.read_text(encoding="utf-8")
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return time.time()  # there but unreadable: counts as made now (honoured)
    try:
        made = json.loads(text).get("time")
    except (json.JSONDecodeError, AttributeError):
        made = None
    if isinstance(made, bool) or not isinstance(made, (int, float)) or made <= 0:
        return mtime
    return float(made)


def clear_cancel(job_dir: str | os.PathLike) -> None:
    """Remove a stale cancel request before (re)starting a job."""
    try:
        os.remove(Path(job_dir) / CANCEL_FILE)
    except FileNotFoundError:
        pass

