"""Prompt variants and batches: build a queue (core/queue.py) and run it through EditJob.

The blocking path (:meth:`QueueRunner.run_sync`: the bpy module, scripts, tests, the headless
command) and the modal operator in the UI share :meth:`QueueRunner.begin`,
:meth:`QueueRunner.succeed`, :meth:`QueueRunner.fail`; an item that fails is recorded and the
queue moves on, a cancel stops the queue (run it again to resume). A variants queue ends with
its contact sheet (:func:`write_contact_sheet`): the source and every variant from the same cameras.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

import bpy

from .. import contract
from ..core.backend_process import BackendConfig, BackendError, backend_env
from ..core.queue import BatchQueue, QueueItem, new_queue
from ..core.request import EditFailed, EditRequest
from .edit_job import EditJob

REQUEST_SETTINGS = (
    "method", "steps", "lambda_identity", "preset", "device", "overrides", "use_cache", "stages", "negative_prompt",
)
"""EditRequest fields a queue shares between its items (plus ``model``, stored as a dict)."""

SOURCE_PROMPT_PROPERTY = "piva_source_prompt"
"""Custom property of an object that overrides the batch's source prompt for it."""
TARGET_PROMPT_PROPERTY = "piva_target_prompt"
"""Custom property of an object that overrides the batch's target prompt for it."""
CONTACT_SHEET_FILE = "contact_sheet.png"
"""The variants' contact sheet, in the queue's folder (``JOB_ROOT/batches/BATCH_ID/``)."""
CONTACT_SHEET_TIMEOUT_S = 300.0
"""The longest the backend may take to draw a contact sheet (it renders the views a job lacks)."""


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


def contact_sheet_path(queue: BatchQueue) -> Path:
    """Where ``queue``'s contact sheet is (or will be) written."""
    return queue.folder / CONTACT_SHEET_FILE


def write_contact_sheet(
    queue: BatchQueue,
    backend: BackendConfig,
    *,
    render_missing: bool = True,
    timeout_s: float = CONTACT_SHEET_TIMEOUT_S,
) -> Path:
    """Draw ``queue``'s contact sheet: the source and every item (failed ones as grey rows) from
    the held-out cameras every job shares, each row labelled with its target prompt and seed.

    Built by the backend's Python (``python -m backend contact-sheet OUT.png JOB_DIR...``) as a
    subprocess through the same BackendConfig as the jobs, rather than in Blender with numpy and
    bpy's image API: the views (``results/views/``) are the backend's own files, it has Pillow to
    decode, tile and label them (Blender has no text drawing into pixels without a render), and
    it can render the views of a job that lacks them (``render_missing``; on the CPU, seconds per
    job: the UI passes False); the extension never imports torch or Pillow. Raises EditFailed
    (what went wrong, how to fix it) when no sheet could be drawn.
    """
    out = contact_sheet_path(queue)
    job_dirs = [i.job_dir for i in queue.items if i.job_dir and (Path(i.job_dir) / contract.JOB_FILE).is_file()]
    if not job_dirs:
        raise EditFailed("no contact sheet: no item of the queue has a job folder yet", "run the queue first")
    try:
        command = [backend.resolved_python(), "-m", "backend", "contact-sheet", str(out), *job_dirs]
        command += ["--render-missing"] if render_missing else []
        run = subprocess.run(
            command, env=backend_env(backend), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except BackendError as exc:
        raise EditFailed(f"no contact sheet: {exc}", "set the backend Python in the add-on preferences") from None
    except subprocess.TimeoutExpired:
        raise EditFailed(
            f"no contact sheet: the backend took more than {timeout_s:.0f} s",
            f"draw it by hand: python -m backend contact-sheet {out} JOB_DIR... (the items' job folders)",
        ) from None
    except OSError as exc:
        raise EditFailed(f"no contact sheet: the backend could not start ({exc})", "check the backend Python") from None
    if run.returncode != 0 or not out.is_file():
        why = (run.stderr.strip() or run.stdout.strip() or f"exit code {run.returncode}").splitlines()[-1]
        why = why.removeprefix("PIVA backend: ")
        raise EditFailed(f"no contact sheet: {why}", f"see the items' job folders under {queue.folder}")
    return out


EXECUTORS = ("worker", "process", "workers", "ray")
"""Where a queue's items run: ``worker`` (the default) one long-lived worker, item after item, with
the model loaded once; ``process`` a new backend process per item; ``workers`` one worker per
visible GPU of this machine; ``ray`` one actor per GPU of a Ray cluster (``address``). The last two
capture every item first (Blender renders one view at a time), then run them all at once through
``python -m backend dispatch`` and import each result."""

DISPATCH_LOG = "dispatch.log"
"""The output of ``python -m backend dispatch``, in the queue's folder."""


class QueueRunner:
    """Runs a queue's items with EditJob on one of :data:`EXECUTORS`."""

    def __init__(
        self, queue: BatchQueue, backend: BackendConfig, job_root: str = "", *, executor: str = "worker",
        address: str = "",
    ) -> None:
        if executor not in EXECUTORS:
            raise EditFailed(f"unknown executor {executor!r}", f"one of {', '.join(EXECUTORS)}")
        self.queue = queue
        self.executor = executor
        self.address = address
        """The Ray cluster (``HOST:PORT``) for the ``ray`` executor; empty = a local one."""
        if executor in ("worker", "process"):
            backend = dataclasses.replace(backend, use_worker=executor == "worker")
        self.backend = backend
        self.job_root = job_root or str(queue.folder.parent.parent)  # JOB_ROOT/batches/BATCH_ID
        self.current: QueueItem | None = None
        self._started = 0.0
        self.contact_sheet: Path | None = None
        """The contact sheet drawn at the end of a variants queue (:meth:`finish`)."""
        self.contact_sheet_problem: EditFailed | None = None
        """Why it could not be drawn (the queue itself is not affected)."""

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

    # -- the end of the queue -------------------------------------------------------------------
    def finish(self, render_missing: bool = True) -> Path | None:
        """After the last item: a variants queue with any finished item gets its contact sheet
        (a failure to draw it is kept in :attr:`contact_sheet_problem`, never raised);
        ``render_missing``: see :func:`write_contact_sheet`."""
        self.contact_sheet = self.contact_sheet_problem = None
        if self.queue.kind != "variants" or not any(i.status == "done" for i in self.queue.items):
            return None
        try:
            self.contact_sheet = write_contact_sheet(self.queue, self.backend, render_missing=render_missing)
        except EditFailed as exc:
            self.contact_sheet_problem = exc
        return self.contact_sheet

    # -- the blocking path ------------------------------------------------------------------------
    def run_sync(
        self,
        on_event: Callable[[contract.Event], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_item: Callable[[int, int, QueueItem], None] | None = None,
        on_interrupt: Callable[[str], None] | None = None,
        on_capture: Callable[[int, int], None] | None = None,
    ) -> BatchQueue:
        """Run every pending item; stop at the first cancel (Ctrl+C included: see
        BackendProcess.wait); then :meth:`finish`. Returns the queue (see item states)."""
        if self.executor in ("workers", "ray"):
            return self._run_dispatched(on_event, should_cancel, on_item, on_interrupt, on_capture)
        total = len(self.queue.items)
        while (item := self.queue.next_pending()) is not None:
            job, cancelled = self._begin_and_capture(item, total, on_item, on_capture, should_cancel)
            if cancelled:
                break
            if job is None:
                continue
            try:
                job.start_backend()
                outcome = job.wait_backend(on_event, should_cancel, on_interrupt)
            except EditFailed as exc:
                self.fail(item, exc)
                if exc.status == "cancelled":
                    break
                continue
            failure = self._conclude(item, job, outcome)
            if failure is not None and failure.status == "cancelled":
                break
        self.finish()
        return self.queue

    def _begin_and_capture(self, item: QueueItem, total: int, on_item, on_capture, should_cancel) -> tuple[EditJob | None, bool]:
        """Start ``item`` and capture its object: (the job, False); (None, False) when it failed (it
        is marked so); (None, True) when the capture was cancelled."""
        if on_item is not None:
            on_item(self.queue.items.index(item), total, item)
        try:
            job = self.begin(item)
        except EditFailed:
            return None, False
        try:
            job.capture(progress=on_capture, should_cancel=should_cancel)
        except EditFailed as exc:
            self.fail(item, exc)
            return None, exc.status == "cancelled"
        return job, False

    def _conclude(self, item: QueueItem, job: EditJob, outcome) -> EditFailed | None:
        """Check the backend's outcome of ``item`` and import its result: succeeded (None) or
        failed (the failure, so a cancel can stop the queue)."""
        try:
            job.check_outcome(outcome)
            result = job.finish()
        except EditFailed as exc:
            self.fail(item, exc)
            return exc
        self.succeed(item, result)
        return None

    # -- several items at once: python -m backend dispatch --------------------------------------
    def _run_dispatched(self, on_event, should_cancel, on_item, on_interrupt, on_capture) -> BatchQueue:
        """Capture every pending item, run them all on the ``workers`` or ``ray`` executor, import
        each result. A cancel (or Ctrl+C) reaches every running item; the queue resumes as always."""
        total = len(self.queue.items)
        prepared: list[tuple[QueueItem, EditJob, float]] = []
        cancelled = False
        for item in [i for i in self.queue.items if i.status == "pending"]:
            job, cancelled = self._begin_and_capture(item, total, on_item, on_capture, should_cancel)
            if cancelled:
                break
            if job is not None:
                prepared.append((item, job, self._started))
        if cancelled:  # the captured items go back to the queue, to run on Resume
            for item, _, _ in prepared:
                item.status = "pending"
            self.queue.save()
            return self.queue
        if prepared:
            outcomes = self._dispatch([job for _, job, _ in prepared], on_event, should_cancel, on_interrupt)
            for (item, job, began), outcome in zip(prepared, outcomes):
                self.current, self._started = item, began
                self._conclude(item, job, outcome)
        self.finish()
        return self.queue

    def _dispatch(self, jobs: list[EditJob], on_event, should_cancel, on_interrupt) -> list:
        """Run ``jobs`` through one ``python -m backend dispatch`` and follow their events; the
        outcome of each (from its own events, as for a job of its own)."""
        from ..core import process_group
        from ..core.backend_process import BackendOutcome

        job_dirs = [job.spec.job_dir for job in jobs]
        readers = []
        for job_dir in job_dirs:
            contract.clear_cancel(job_dir)
            readers.append(contract.EventReader.from_end(job_dir / contract.EVENTS_FILE))
        command = [self.backend.resolved_python(), "-m", "backend", "dispatch", "--executor", self.executor]
        command += ["--address", self.address] if self.address else []
        command += [str(d / contract.JOB_FILE) for d in job_dirs]
        log_path = self.queue.folder / DISPATCH_LOG
        with open(log_path, "ab") as log:
            try:
                process = subprocess.Popen(
                    command, env=backend_env(self.backend), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    **process_group.popen_kwargs(),
                )
            except OSError as exc:
                raise EditFailed(f"cannot start the backend dispatcher: {exc.strerror}", "check the backend Python") from None
        terminal: list[contract.Event | None] = [None] * len(jobs)
        cancel_sent, interrupts = False, 0

        def cancel_all(reason: str) -> None:
            for job_dir in job_dirs:
                contract.request_cancel(job_dir, reason)

        while True:
            try:
                exited = process.poll() is not None
                for index, reader in enumerate(readers):
                    for event in reader.poll():
                        if event.type in ("finished", "cancelled", "error"):
                            terminal[index] = event
                        if on_event is not None:
                            on_event(event)
                if exited:
                    break
                if should_cancel is not None and not cancel_sent and should_cancel():
                    cancel_all("user")
                    cancel_sent = True
                time.sleep(0.2)
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts == 1:
                    cancel_all("user")
                    notice = "cancelling every item: each saves a checkpoint and stops (Ctrl+C again stops at once)"
                else:
                    process_group.kill_group(process)
                    notice = "stopped the dispatcher; Resume continues every item from its last checkpoint"
                if on_interrupt is not None:
                    on_interrupt(notice)
        outcomes = []
        for event in terminal:
            if event is None:
                outcomes.append(BackendOutcome(
                    "cancelled" if interrupts else "error", process.returncode,
                    message="the item did not end (the dispatcher stopped first)",
                    hint=f"resume the queue to continue it from its last checkpoint; the log is {log_path}",
                    log_path=str(log_path),
                ))
            else:
                outcomes.append(BackendOutcome(event.type, process.returncode, event.message, event.hint, event.results, str(log_path)))
        return outcomes
