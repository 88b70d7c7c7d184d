"""Prompt variants and batches: build a queue (core/queue.py) and run it through EditJob.

The blocking path (:meth:`QueueRunner.run_sync`: the bpy module, scripts, tests, the headless
command) and the modal operator in the UI share :meth:`QueueRunner.begin`,
:meth:`QueueRunner.succeed`, :meth:`QueueRunner.fail`; an item that fails is recorded and the
queue moves on, a cancel stops the queue (run it again to resume).
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Callable, Iterable

import bpy

from .. import contract
from ..core.backend_process import BackendConfig
from ..core.queue import BatchQueue, QueueItem, new_queue
from ..core.request import EditFailed, EditRequest
from .edit_job import EditJob

REQUEST_SETTINGS = ("method", "steps", "lambda_identity", "preset", "device", "overrides", "use_cache", "stages")
"""EditRequest fields a queue shares between its items (plus ``model``, stored as a dict)."""

SOURCE_PROMPT_PROPERTY = "piva_source_prompt"
"""Custom property of an object that overrides the batch's source prompt for it."""
TARGET_PROMPT_PROPERTY = "piva_target_prompt"
"""Custom property of an object that overrides the batch's target prompt for it."""


def settings_of(request: EditRequest) -> dict:
    """The shared settings of a queue, from a template request (JSON-ready)."""
    settings = {name: getattr(request, name) for name in REQUEST_SETTINGS}
    settings["model"] = dataclasses.asdict(request.model)
    return settings


def object_prompt(obj: "bpy.types.Object | None", template: str, prop: str, name: str) -> str:
    """The object's own prompt (custom property ``prop``) or ``template`` with ``{name}`` filled in
    with a readable form of the object's name ("Old_Chair.001" -> "old chair")."""
    if obj is not None and isinstance(obj.get(prop), str) and obj.get(prop).strip():
        return obj.get(prop).strip()
    readable = re.sub(r"\.\d{3}$", "", name)
    readable = re.sub(r"[_\-.]+", " ", readable).strip().lower()
    return template.replace("{name}", readable)


def variants_queue(
    template: EditRequest,
    targets: list[str],
    seeds: list[int],
    job_root: str,
) -> BatchQueue:
    """Every (target prompt, seed) pair for one object, laid out side by side."""
    targets = [t.strip() for t in targets if t.strip()]
    if not targets:
        raise EditFailed("no target prompt for the variants", "add at least one target prompt")
    items = [
        QueueItem(template.object_name, template.source_prompt, target, seed=seed, slot=slot)
        for slot, (target, seed) in enumerate((t, s) for t in targets for s in (seeds or [template.seed]))
    ]
    return new_queue(job_root, "variants", items, settings_of(template), blend_file=bpy.data.filepath)


def batch_queue(template: EditRequest, object_names: Iterable[str], job_root: str) -> BatchQueue:
    """One edit per object; the prompts may hold ``{name}`` or come from the objects' own
    ``piva_source_prompt`` / ``piva_target_prompt`` custom properties."""
    items = []
    for name in object_names:
        obj = bpy.data.objects.get(name)
        items.append(
            QueueItem(
                name,
                object_prompt(obj, template.source_prompt, SOURCE_PROMPT_PROPERTY, name),
                object_prompt(obj, template.target_prompt, TARGET_PROMPT_PROPERTY, name),
                seed=template.seed,
            )
        )
    if not items:
        raise EditFailed("the batch has no objects", "select meshes, or choose a collection that holds meshes")
    return new_queue(job_root, "batch", items, settings_of(template), blend_file=bpy.data.filepath)


def batch_objects(mode: str, collection: "bpy.types.Collection | None" = None, context=None) -> list[str]:
    """Names of the objects a batch covers: ``SELECTED`` meshes or every mesh of ``collection``
    (its child collections included), in a stable order."""
    context = context or bpy.context
    if mode == "SELECTED":
        objects = [o for o in (getattr(context, "selected_objects", None) or []) if o.type == "MESH"]
    elif mode == "COLLECTION":
        if collection is None:
            raise EditFailed("no collection is chosen for the batch", "pick the collection in the Batch panel")
        objects = [o for o in collection.all_objects if o.type == "MESH"]
    else:
        raise EditFailed(f"unknown batch source {mode!r}", "SELECTED or COLLECTION")
    # Results of earlier edits are not sources of new ones.
    return sorted(o.name for o in objects if not o.get("piva_job_id"))


class QueueRunner:
    """Runs a queue's items one after another with EditJob."""

    def __init__(self, queue: BatchQueue, backend: BackendConfig, job_root: str = "") -> None:
        self.queue = queue
        self.backend = backend
        self.job_root = job_root or str(queue.folder.parent.parent)  # JOB_ROOT/batches/BATCH_ID
        self.current: QueueItem | None = None
        self._started = 0.0

    def request_for(self, item: QueueItem) -> EditRequest:
        settings = dict(self.queue.settings)
        model = contract.ModelSettings(**settings.pop("model", {}))
        known = {f.name for f in dataclasses.fields(EditRequest)}
        settings = {k: v for k, v in settings.items() if k in known}
        return EditRequest(
            object_name=item.object_name,
            source_prompt=item.source_prompt,
            target_prompt=item.target_prompt,
            seed=item.seed,
            slot=item.slot,
            job_root=self.job_root,
            job_dir=item.job_dir,
            model=model,
            **settings,
        )

    # -- one item: begin, then succeed / fail ---------------------------------------------------
    def begin(self, item: QueueItem) -> EditJob:
        """Mark ``item`` running and prepare its job (raises EditFailed, already recorded)."""
        self.current, self._started = item, time.monotonic()
        item.status, item.message, item.hint = "running", "", ""
        self.queue.save()
        self.queue.log(item, "started")
        job = EditJob(self.request_for(item), self.backend)
        try:
            job.prepare()
        except EditFailed as exc:
            self.fail(item, exc)
            raise
        item.cache_hit = dict(job.cache_hit)
        self.queue.save()
        return job

    def succeed(self, item: QueueItem, result: "bpy.types.Object | None") -> None:
        item.status = "done"
        item.result_object = result.name if result is not None else ""
        item.seconds = round(time.monotonic() - self._started, 2)
        self.queue.save()
        self.queue.log(item, "done", result_object=item.result_object, seconds=item.seconds, cache_hit=item.cache_hit)
        self.current = None

    def fail(self, item: QueueItem, exc: EditFailed) -> None:
        item.status = "cancelled" if exc.status == "cancelled" else "failed"
        item.message, item.hint = exc.message, exc.hint
        item.seconds = round(time.monotonic() - self._started, 2)
        self.queue.save()
        self.queue.log(item, item.status, message=exc.message, hint=exc.hint, seconds=item.seconds)
        self.current = None

    # -- the blocking path ------------------------------------------------------------------------
    def run_sync(
        self,
        on_event: Callable[[contract.Event], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_item: Callable[[int, int, QueueItem], None] | None = None,
        on_interrupt: Callable[[str], None] | None = None,
    ) -> BatchQueue:
        """Run every pending item; stop at the first cancel (Ctrl+C included: see
        BackendProcess.wait). Returns the queue (see item states)."""
        total = len(self.queue.items)
        while (item := self.queue.next_pending()) is not None:
            if on_item is not None:
                on_item(self.queue.items.index(item), total, item)
            try:
                job = self.begin(item)
            except EditFailed:
                continue
            try:
                job.capture(should_cancel=should_cancel)
                job.start_backend()
                outcome = job.wait_backend(on_event, should_cancel, on_interrupt)
                job.check_outcome(outcome)
                result = job.finish()
            except EditFailed as exc:
                self.fail(item, exc)
                if exc.status == "cancelled":
                    break
                continue
            self.succeed(item, result)
        return self.queue
