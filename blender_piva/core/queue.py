"""A queue of edits that survives a restart: prompt variants of one object, or a batch over objects.

The queue lives in its own folder under the job root (no bpy here):

    JOB_ROOT/batches/BATCH_ID/queue.json       what to do and how far it got (rewritten atomically)
    JOB_ROOT/batches/BATCH_ID/log.json         one entry per item start and end (rewritten atomically)
    JOB_ROOT/batches/BATCH_ID/BATCH_ID-NN/     item NN's job folder (checkpoints, results)

Every item has its job folder from the start, so an item interrupted by a cancel, a crash or a
closed Blender resumes from its checkpoints; finished items are skipped. Items of one object share
its cached capture and fit (``cache.py``), so N variants cost one capture and one fit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import contract

QUEUE_FILE = "queue.json"
LOG_FILE = "log.json"
BATCHES_DIR = "batches"
QUEUE_FORMAT = 1

ITEM_STATES = ("pending", "running", "done", "failed", "cancelled")
"""``running`` on disk means the process that ran it stopped without saying how (a crash)."""

KINDS = ("variants", "batch")


@dataclass
class QueueItem:
    """One edit of the queue and how it ended."""

    object_name: str
    """The source object."""
    source_prompt: str
    """What it is now."""
    target_prompt: str
    """What it should become."""
    seed: int = 0
    """The edit's seed."""
    slot: int = 0
    """Place of the result in the row beside its source (0 = next to it)."""
    status: str = "pending"
    """One of ITEM_STATES."""
    job_dir: str = ""
    """The item's job folder (assigned when the queue is made)."""
    result_object: str = ""
    """Name of the imported result, once done."""
    message: str = ""
    """What went wrong (failed or cancelled)."""
    hint: str = ""
    """How to fix it."""
    seconds: float = 0.0
    """Wall time of the item's last run, capture and import included."""
    cache_hit: dict = field(default_factory=dict)
    """``{"capture": bool, "reconstruction": bool}``: what came from the cache in its last run."""

    @property
    def label(self) -> str:
        return f"{self.object_name}: {self.target_prompt!r} (seed {self.seed})"


@dataclass
class BatchQueue:
    """The queue document; ``folder`` (not saved) is where it lives."""

    batch_id: str
    kind: str
    """One of KINDS: ``variants`` (one object, several prompts/seeds) or ``batch`` (several objects)."""
    settings: dict
    """Shared edit settings: method, steps, lambda_identity, preset, model, device, overrides, use_cache."""
    items: list[QueueItem]
    created: str = ""
    blend_file: str = ""
    """The .blend the queue was made from (empty for an unsaved file)."""
    format: int = QUEUE_FORMAT
    folder: Path = field(default=Path("."), compare=False, repr=False)

    # -- files --------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.folder / QUEUE_FILE

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE

    def save(self) -> Path:
        data = dataclasses.asdict(self)
        data.pop("folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        contract.write_json_atomic(self.path, data)
        return self.path

    def log(self, item: QueueItem, event: str, **details: Any) -> None:
        """Append one entry to log.json: ``event`` is started, done, failed or cancelled."""
        entries = read_log(self.log_path)
        entries.append(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "item": self.items.index(item),
                "object": item.object_name,
                "target_prompt": item.target_prompt,
                "seed": item.seed,
                "event": event,
                "job_dir": item.job_dir,
                **details,
            }
        )
        contract.write_json_atomic(self.log_path, entries)

    # -- progress -----------------------------------------------------------------------------
    def next_pending(self) -> QueueItem | None:
        return next((item for item in self.items if item.status == "pending"), None)

    def counts(self) -> dict[str, int]:
        return {state: sum(item.status == state for item in self.items) for state in ITEM_STATES}

    @property
    def finished(self) -> bool:
        """No item is left to run (each is done or failed)."""
        return all(item.status in ("done", "failed") for item in self.items)

    def prepare_resume(self, retry_failed: bool = False) -> int:
        """Make interrupted (running, cancelled) items, and failed ones when asked, pending again;
        returns how many items will run."""
        states = ("running", "cancelled", "failed") if retry_failed else ("running", "cancelled")
        for item in self.items:
            if item.status in states:
                item.status, item.message, item.hint = "pending", "", ""
        return sum(item.status == "pending" for item in self.items)


def new_queue(
    job_root: str | os.PathLike,
    kind: str,
    items: list[QueueItem],
    settings: dict,
    blend_file: str = "",
) -> BatchQueue:
    """A queue with a fresh folder under ``job_root/batches`` and a job folder per item (saved)."""
    if kind not in KINDS:
        raise contract.ContractError("queue.kind", f"unknown kind {kind!r}", ", ".join(KINDS))
    if not items:
        raise contract.ContractError("queue.items", "is empty", "at least one object and one target prompt")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    batch_id = f"{kind}-{stamp}-{int(time.time() * 1000) % 1000:03d}"
    folder = Path(job_root).expanduser().resolve() / BATCHES_DIR / batch_id
    for index, item in enumerate(items):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.object_name).strip("._") or "object"
        item.job_dir = str(folder / f"{batch_id}-{index:02d}-{safe[:32]}")
    queue = BatchQueue(
        batch_id=batch_id,
        kind=kind,
        settings=settings,
        items=items,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        blend_file=blend_file,
        folder=folder,
    )
    queue.save()
    return queue


def load_queue(path: str | os.PathLike) -> BatchQueue:
    """Read queue.json (or the folder holding it); every problem names the field."""
    path = Path(path)
    if path.is_dir():
        path = path / QUEUE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise contract.ContractError("queue", f"{path} does not exist", "the queue.json of a batch folder") from None
    except json.JSONDecodeError as exc:
        raise contract.ContractError("queue", f"{path} is malformed JSON ({exc.msg})", "start a new batch") from None
    if not isinstance(data, dict):
        raise contract.ContractError("queue", "is not a JSON object", "start a new batch")
    if data.get("format") != QUEUE_FORMAT:
        raise contract.ContractError("queue.format", f"{data.get('format')!r} is not supported", str(QUEUE_FORMAT))
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise contract.ContractError("queue.items", "must be a non-empty list", "start a new batch")
    known = {f.name for f in dataclasses.fields(QueueItem)}
    items = []
    for index, raw in enumerate(raw_items):
        if not isinstance(raw, dict) or not {"object_name", "source_prompt", "target_prompt"} <= set(raw):
            raise contract.ContractError(f"queue.items[{index}]", "lacks object_name, source_prompt or target_prompt")
        unknown = set(raw) - known
        if unknown:
            raise contract.ContractError(f"queue.items[{index}]", f"unknown fields {sorted(unknown)}", ", ".join(sorted(known)))
        for name, value in raw.items():
            _check_type(f"queue.items[{index}].{name}", value, ITEM_TYPES[name])
        item = QueueItem(**raw)
        if item.status not in ITEM_STATES:
            raise contract.ContractError(f"queue.items[{index}].status", f"unknown state {item.status!r}", ", ".join(ITEM_STATES))
        items.append(item)
    if data.get("kind") not in KINDS:
        raise contract.ContractError("queue.kind", f"unknown kind {data.get('kind')!r}", ", ".join(KINDS))
    for name in ("batch_id", "created", "blend_file"):
        if name in data:
            _check_type(f"queue.{name}", data[name], (str,))
    settings = data.get("settings") or {}
    _check_type("queue.settings", settings, (dict,))
    for name, value in settings.items():
        if name in SETTING_TYPES:
            _check_type(f"queue.settings.{name}", value, SETTING_TYPES[name])
    model = settings.get("model", {})
    for name, value in model.items():
        if name not in MODEL_FIELDS:
            raise contract.ContractError(f"queue.settings.model.{name}", "unknown field", ", ".join(MODEL_FIELDS))
        _check_type(f"queue.settings.model.{name}", value, (str,))
    for block, values in settings.get("overrides", {}).items():
        _check_type(f"queue.settings.overrides.{block}", values, (dict,))
    if not all(isinstance(stage, str) for stage in settings.get("stages", [])):
        raise contract.ContractError(
            "queue.settings.stages", "must be a list of stage names", ", ".join(contract.STAGES)
        )
    return BatchQueue(
        batch_id=str(data.get("batch_id", path.parent.name)),
        kind=data["kind"],
        settings=dict(settings),
        items=items,
        created=str(data.get("created", "")),
        blend_file=str(data.get("blend_file", "")),
        folder=path.parent,
    )


ITEM_TYPES: dict[str, tuple[type, ...]] = {
    "object_name": (str,), "source_prompt": (str,), "target_prompt": (str,), "seed": (int,), "slot": (int,),
    "status": (str,), "job_dir": (str,), "result_object": (str,), "message": (str,), "hint": (str,),
    "seconds": (int, float), "cache_hit": (dict,),
}
"""JSON types of every QueueItem field (``bool`` is never an int here)."""

SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,), "steps": (int, type(None)), "lambda_identity": (int, float, type(None)), "preset": (str,),
    "device": (str,), "overrides": (dict,), "use_cache": (bool,), "stages": (list,), "model": (dict,),
}
"""JSON types of a queue's shared settings (see scene/queue_runner.py REQUEST_SETTINGS)."""

MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(contract.ModelSettings))

_TYPE_NAMES = {
    str: "text", int: "an integer", float: "a number", dict: "an object", list: "a list", bool: "true or false",
}


def _check_type(name: str, value: Any, types: tuple[type, ...]) -> None:
    """Refuse ``value`` unless it is one of ``types`` (true/false count only where bool is named)."""
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        allowed = " or ".join(_TYPE_NAMES.get(t, "null") for t in types)
        raise contract.ContractError(name, f"is {json.dumps(value)[:60]}, of the wrong type", allowed)


def read_log(path: str | os.PathLike) -> list[dict]:
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return entries if isinstance(entries, list) else []


def unfinished_queues(job_root: str | os.PathLike) -> list[Path]:
    """queue.json files under ``job_root/batches`` with items left to run, newest first."""
    root = Path(job_root).expanduser() / BATCHES_DIR
    found = []
    for path in sorted(root.glob(f"*/{QUEUE_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            if not load_queue(path).finished:
                found.append(path)
        except contract.ContractError:
            continue
    return found


_CACHED: dict[str, tuple[int, BatchQueue | None]] = {}


def load_queue_cached(path: str) -> BatchQueue | None:
    """For the panel's draw(): the queue at ``path``, re-read only when the file changes; None if unreadable."""
    try:
        mtime = os.stat(path).st_mtime_ns if os.path.isfile(path) else os.stat(Path(path) / QUEUE_FILE).st_mtime_ns
    except OSError:
        return None
    cached = _CACHED.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        queue = load_queue(path)
    except contract.ContractError:
        queue = None
    _CACHED[path] = (mtime, queue)
    return queue
