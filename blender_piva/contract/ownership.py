"""Who made a folder, and for which inputs: the owner marker ``.piva-owner.json``.

A job folder belongs to its job. Every folder PIVA writes (the job folder, a capture, a
reconstruction, a job's ``edit/`` and ``export/``) holds a marker, written atomically::

    {"contract": 1, "kind": "reconstruction", "fingerprint": "3f9c...", "state": "done",
     "inputs": {"transforms_sha256": "...", "capture": "...", "reconstruct": {...}}, "time": 1718000000.0}

``fingerprint`` hashes ``inputs``: what determines the folder's content (a reconstruction: the
capture's ``transforms.json`` digest, the capture's own fingerprint and the fit settings; a capture:
the object's fingerprint and the capture settings; an edit: the field it started from, the prompts,
the seed, the edit and model settings; a job folder: the object, the prompts, the method and the
seed; see each writer). ``state`` is ``working`` from the moment the folder is claimed and ``done``
once its files are complete. Both sides follow one rule (:func:`claim_folder`):

* a missing or empty folder is claimed: created, marker ``working``;
* a folder whose marker has the same kind and fingerprint is the caller's own (reuse it when
  ``done`` and its files load, resume or redo it otherwise);
* anything else is refused with :class:`FolderNotOurs`, naming the folder and why: files this job
  did not write, a folder of another kind, or one made for other inputs (which ones differ).

"Done" is never read from a marker alone: the writer also checks that the expected files exist
and load. Standard library only; no side effect at import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ._schema import ContractError, check_version, from_dict, to_jsonable
from .atomic import write_json_atomic
from .layout import CANCEL_FILE, CONTRACT_VERSION, EVENTS_FILE, JOB_FILE, LOG_FILE
from .leftovers import writer_pid

OWNER_FILE = ".piva-owner.json"
"""Name of the marker inside the folder it describes."""

FOLDER_KINDS = ("job", "capture", "reconstruction", "edit", "export")
"""What a marked folder is."""

OWNER_STATES = ("working", "done")
"""``working``: claimed, being written (or interrupted); ``done``: complete."""

NOT_CONTENT_SETTINGS = ("checkpoint_every", "preview_every")
"""Settings of a block that change how often a stage saves or previews, never what it makes:
left out of every fingerprint (a job resumed with another preview rate keeps its folders)."""

IGNORED_NAMES = (OWNER_FILE, ".lock")
"""Entries that do not make a folder "non-empty": the marker and the backend's folder lock (and
PIVA's own temporaries, ``leftovers.LEFTOVER_PATTERNS``: a live writer's, or a dead one's that the
next run removes)."""

JOB_FILES_BEFORE_FIRST_RUN = (JOB_FILE, LOG_FILE, EVENTS_FILE, CANCEL_FILE)
"""What a job folder may hold before its marker exists: the spec, the backend's log and events
(an earlier run that stopped at validation) and a cancel request. Its capture folder too, when it
lives inside (the caller adds that name)."""


def job_names_before_first_run(job_dir: str | os.PathLike, capture_dir: str | os.PathLike) -> tuple[str, ...]:
    """JOB_FILES_BEFORE_FIRST_RUN, plus the capture folder's name when it lies directly in the job folder."""
    names = list(JOB_FILES_BEFORE_FIRST_RUN)
    capture = Path(capture_dir).resolve()
    if capture.parent == Path(job_dir).resolve():
        names.append(capture.name)
    return tuple(names)


class FolderNotOurs(ValueError):
    """A folder holds something this job did not make for these inputs: ``hint`` says what to do."""

    def __init__(self, folder: str | os.PathLike, problem: str, hint: str) -> None:
        self.folder = Path(folder)
        self.problem = problem
        self.hint = hint
        super().__init__(f"{folder} {problem}")


@dataclass
class FolderOwner:
    """The content of ``.piva-owner.json``."""

    kind: str
    """One of FOLDER_KINDS."""
    fingerprint: str
    """:func:`fingerprint_of` the inputs."""
    inputs: dict[str, Any] = field(default_factory=dict)
    """What the folder was made from (kept so that a refusal can say what differs)."""
    state: str = "working"
    """One of OWNER_STATES."""
    time: float = 0.0
    """When the marker was last written (seconds since the epoch)."""
    contract: int = CONTRACT_VERSION

    def validate(self) -> "FolderOwner":
        check_version(self.contract, "owner.contract")
        if self.kind not in FOLDER_KINDS:
            raise ContractError("owner.kind", f"unknown folder kind {self.kind!r}", ", ".join(FOLDER_KINDS))
        if self.state not in OWNER_STATES:
            raise ContractError("owner.state", f"unknown state {self.state!r}", ", ".join(OWNER_STATES))
        if not isinstance(self.fingerprint, str) or not self.fingerprint:
            raise ContractError("owner.fingerprint", "must be non-empty text", "a hex digest")
        if not isinstance(self.inputs, dict):
            raise ContractError("owner.inputs", "must be a JSON object", "a JSON object")
        return self

    @property
    def done(self) -> bool:
        return self.state == "done"


def plain(inputs: Any) -> Any:
    """``inputs`` as JSON would give it back (tuples become lists), for comparisons."""
    return json.loads(json.dumps(to_jsonable(inputs), sort_keys=True, allow_nan=False, default=str))


def fingerprint_of(inputs: Any) -> str:
    """sha256 (32 hex digits) of the canonical JSON of ``inputs``."""
    text = json.dumps(plain(inputs), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


ADDED_SETTINGS_DEFAULTS = {"field": "rgb"}
"""Settings added after folders were first written, with the default that reproduces what those
folders hold: left out of fingerprints while at that default, so existing folders stay ours
(``reconstruct.field``: every earlier fit was an RGB fit)."""


def content_settings(block: Any) -> dict[str, Any]:
    """A settings block (a dataclass) as a dict, without NOT_CONTENT_SETTINGS (nor an
    ADDED_SETTINGS_DEFAULTS entry at its default)."""
    return {
        k: v for k, v in dataclasses.asdict(block).items()
        if k not in NOT_CONTENT_SETTINGS and not (k in ADDED_SETTINGS_DEFAULTS and v == ADDED_SETTINGS_DEFAULTS[k])
    }


def describe_differences(
    theirs: Any, ours: Any, limit: int = 3, labels: tuple[str, str] = ("in the folder", "for this job")
) -> str:
    """``"edit.steps: 10 in the folder, 20 for this job; ..."``: the first ``limit`` leaves that differ."""
    a, b = _flatten(plain(theirs)), _flatten(plain(ours))
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, "<none>") != b.get(k, "<none>")]
    there, here = labels
    parts = [f"{k}: {_short(a.get(k, '<none>'))} {there}, {_short(b.get(k, '<none>'))} {here}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts)


def read_owner(folder: str | os.PathLike) -> FolderOwner | None:
    """The folder's marker, None when it has none; a malformed marker is a ContractError."""
    path = Path(folder) / OWNER_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(str(path), f"malformed JSON ({exc.msg} at line {exc.lineno})", "an owner marker") from None
    return from_dict(FolderOwner, data, "owner.").validate()


def write_owner(folder: str | os.PathLike, owner: FolderOwner) -> Path:
    """Write the marker atomically (``time`` = now)."""
    owner.time = time.time()
    path = Path(folder) / OWNER_FILE
    write_json_atomic(path, to_jsonable(dataclasses.asdict(owner.validate())))
    return path


def foreign_entries(folder: str | os.PathLike, allowed: Iterable[str] = ()) -> list[str]:
    """Names in ``folder`` other than IGNORED_NAMES, PIVA temporaries and ``allowed`` (sorted; []
    when the folder is missing)."""
    skip = set(IGNORED_NAMES) | set(allowed)
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(name for name in names if name not in skip and writer_pid(name) is None)


def check_owner(
    folder: str | os.PathLike, kind: str, inputs: Any, allowed: Iterable[str] = ()
) -> FolderOwner | None:
    """Whether the caller may use ``folder`` for a ``kind`` made from ``inputs``, without writing.

    Returns the marker when the folder is the caller's own, None when it is free (missing, empty,
    or holding only ``allowed`` names); raises :class:`FolderNotOurs` otherwise.
    """
    folder = Path(folder)
    hint = "choose an empty folder or delete it"
    if folder.exists() and not folder.is_dir():
        raise FolderNotOurs(folder, "is a file, not a folder", hint)
    try:
        owner = read_owner(folder)
    except ContractError as exc:
        raise FolderNotOurs(folder, f"holds an owner marker PIVA cannot read ({exc})", hint) from None
    if owner is None:
        foreign = foreign_entries(folder, allowed)
        if not foreign:
            return None
        names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FolderNotOurs(folder, f"holds files this job did not write ({names})", hint)
    if owner.kind != kind:
        raise FolderNotOurs(folder, f"is a PIVA {owner.kind} folder, not a {kind} folder", hint)
    if owner.fingerprint != fingerprint_of(inputs):
        what = describe_differences(owner.inputs, inputs) or "its fingerprint differs"
        raise FolderNotOurs(
            folder, f"holds a {kind} made from other inputs ({what})", f"{hint} to make the {kind} again"
        )
    return owner


def claim_folder(
    folder: str | os.PathLike, kind: str, inputs: Any, allowed: Iterable[str] = ()
) -> FolderOwner:
    """Make ``folder`` the caller's ``kind`` folder for ``inputs`` (see the module docstring).

    Returns the existing marker when the folder is already the caller's (its ``state`` says
    whether it is done), else creates the folder and writes a ``working`` marker. Raises
    :class:`FolderNotOurs` for any other non-empty folder, OSError when it cannot be written.
    """
    owner = check_owner(folder, kind, inputs, allowed)
    if owner is not None:
        return owner
    Path(folder).mkdir(parents=True, exist_ok=True)
    owner = FolderOwner(kind=kind, fingerprint=fingerprint_of(inputs), inputs=plain(inputs))
    write_owner(folder, owner)
    return owner


def set_state(folder: str | os.PathLike, owner: FolderOwner, state: str) -> FolderOwner:
    """Record ``state`` (``working`` or ``done``) in the folder's marker; returns the new marker."""
    updated = dataclasses.replace(owner, state=state)
    write_owner(folder, updated)
    return updated


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
