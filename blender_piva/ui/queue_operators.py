"""Operators for prompt variants, batches, resuming them, the cache, and the pictures they leave
(the variants' contact sheet, a job's report). They orchestrate; the queue logic lives in
scene/queue_runner.py and core/queue.py, the pictures are drawn by the backend (backend/report/).

Like ``piva.edit``, each run has two paths: ``execute`` blocks (the bpy module, scripts, tests),
``invoke`` in the UI runs the queue from a modal timer, one item after another, so Blender stays
usable; the panel shows every item's state from the queue file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty, StringProperty

from .. import contract
from ..contract.layout import REPORT_FILE, REPORT_IMAGE_FILE
from ..core import cache
from ..core import queue as batch_queue
from ..core.request import EditFailed
from ..core.terminal import print_event
from ..scene.edit_job import job_root_of, settings_blocks
from ..scene.queue_runner import CONTACT_SHEET_FILE
from ..scene.queue_runner import QueueRunner, batch_objects, batch_queue as make_batch_queue, variants_queue
from .status import ACTIVE, is_busy, modal_capture_tick, redraw, request_from_panel, update_status


def _backend(context):
    from .preferences import backend_config

    return backend_config(context)


class _QueueOperator:
    """Runs a queue: blocking in ``execute``, item by item from a modal timer in ``invoke``."""

    _timer = None

    @classmethod
    def _idle(cls) -> bool:
        if is_busy():
            cls.poll_message_set("An edit is already running: wait for it or press Cancel")
            return False
        return True

    def build_queue(self, context) -> batch_queue.BatchQueue:
        raise NotImplementedError

    def _queue(self, context) -> batch_queue.BatchQueue | None:
        try:
            queue = self.build_queue(context)
        except (EditFailed, contract.ContractError) as exc:
            status = context.window_manager.piva_status
            status.error, status.hint = (exc.message, exc.hint) if isinstance(exc, EditFailed) else (str(exc), "")
            self.report({"ERROR"}, str(exc))
            return None
        context.scene.piva.queue_file = str(queue.path)
        return queue

    def execute(self, context):
        queue = self._queue(context)
        if queue is None:
            return {"CANCELLED"}
        status = context.window_manager.piva_status
        status.error = status.hint = ""

        def on_item(index: int, total: int, item: batch_queue.QueueItem) -> None:
            print(f"\n[item {index + 1}/{total}] {item.label}")

        runner = QueueRunner(queue, _backend(context))
        runner.run_sync(on_event=print_event, on_item=on_item)
        return self._report_end(context, queue, runner)

    def _report_end(self, context, queue: batch_queue.BatchQueue, runner: QueueRunner | None = None):
        if runner is not None and runner.contact_sheet is not None:
            self.report({"INFO"}, f"PIVA: contact sheet {runner.contact_sheet} (Queue panel: Open Contact Sheet)")
        elif runner is not None and runner.contact_sheet_problem is not None:
            self.report({"WARNING"}, f"PIVA: {runner.contact_sheet_problem}")
        counts = queue.counts()
        text = f"PIVA: {counts['done']} done, {counts['failed']} failed, {counts['cancelled'] + counts['pending']} left"
        failed = [i for i in queue.items if i.status == "failed"]
        for item in failed:
            self.report({"WARNING"}, f"{item.label}: {item.message}" + (f" — {item.hint}" if item.hint else ""))
        if failed:
            status = context.window_manager.piva_status
            status.error, status.hint = f"{len(failed)} of {len(queue.items)} items failed", f"see {queue.log_path}"
        self.report({"INFO"} if not failed else {"WARNING"}, text)
        return {"FINISHED"} if counts["done"] else {"CANCELLED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        queue = self._queue(context)
        if queue is None:
            return {"CANCELLED"}
        status = context.window_manager.piva_status
        status.error = status.hint = status.preview_path = status.message = ""
        ACTIVE.runner, ACTIVE.job, ACTIVE.cancel_requested = QueueRunner(queue, _backend(context)), None, False
        status.running = True
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        runner = ACTIVE.runner
        status = context.window_manager.piva_status
        assert runner is not None
        if ACTIVE.capture is not None:  # the current item's capture, one view per tick
            item = runner.current
            try:
                phase = modal_capture_tick(context, event)
            except EditFailed as exc:
                ACTIVE.job = None
                runner.fail(item, exc)
                return {"RUNNING_MODAL"}
            if phase == "cancelled":  # Esc or Cancel: this item is cancelled, the queue stops (Resume continues it)
                ACTIVE.job, ACTIVE.cancel_requested = None, True
                runner.fail(item, EditFailed("capture cancelled", "resume the queue to run it", status="cancelled"))
                return self._end(context, runner.queue)
            if phase in ("pass", "running"):
                return {"PASS_THROUGH"} if phase == "pass" else {"RUNNING_MODAL"}
            self._start_backend(context, runner, item, ACTIVE.job)
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if ACTIVE.job is None:
            if ACTIVE.cancel_requested:
                return self._end(context, runner.queue)
            item = runner.queue.next_pending()
            if item is None:
                return self._end(context, runner.queue)
            self._start_item(context, runner, item)
            redraw(context)
            return {"RUNNING_MODAL"}
        job = ACTIVE.job
        assert job.process is not None
        if ACTIVE.cancel_requested and not ACTIVE.cancel_sent:
            job.process.cancel()
            ACTIVE.cancel_sent = True
            status.message = "cancelling: saving a checkpoint"
        for ev in job.process.poll():
            update_status(status, ev)
        redraw(context)
        outcome = job.process.outcome()
        if outcome is None:
            return {"RUNNING_MODAL"}
        item = runner.current
        ACTIVE.job = None
        try:
            job.check_outcome(outcome)
            runner.succeed(item, job.finish())
        except EditFailed as exc:
            runner.fail(item, exc)
        return {"RUNNING_MODAL"}

    def _start_item(self, context, runner: QueueRunner, item: batch_queue.QueueItem) -> None:
        status = context.window_manager.piva_status
        index = runner.queue.items.index(item)
        status.queue_item = f"{index + 1}/{len(runner.queue.items)} {item.label}"
        status.stage, status.progress, status.eta_s, status.preview_path = "starting", 0.0, -1.0, ""
        try:
            job = runner.begin(item)
        except EditFailed:
            return  # recorded as failed; the next tick takes the next item
        try:
            session = job.begin_capture()  # rendered a view per tick by modal(); None = reused
        except EditFailed as exc:
            runner.fail(item, exc)
            return
        ACTIVE.job, ACTIVE.capture = job, session
        status.stage = "capture"
        if session is None:
            self._start_backend(context, runner, item, job)

    def _start_backend(self, context, runner: QueueRunner, item: batch_queue.QueueItem, job) -> None:
        status = context.window_manager.piva_status
        try:
            job.start_backend()
        except EditFailed as exc:
            ACTIVE.job = None
            runner.fail(item, exc)
            return
        ACTIVE.job, ACTIVE.cancel_sent = job, False
        ACTIVE.stage_started, ACTIVE.stage_name = time.monotonic(), ""
        status.job_dir, status.log_path = str(job.spec.job_dir), str(job.process.log_path)

    def _end(self, context, queue: batch_queue.BatchQueue):
        context.window_manager.event_timer_remove(self._timer)
        runner = ACTIVE.runner
        ACTIVE.runner, ACTIVE.job, ACTIVE.capture, ACTIVE.cancel_requested = None, None, None, False
        status = context.window_manager.piva_status
        status.running, status.queue_item = False, ""
        if runner is not None:
            runner.finish(render_missing=False)  # the UI waits for it: never render here
        redraw(context)
        return self._report_end(context, queue, runner)


class PIVA_OT_run_variants(_QueueOperator, bpy.types.Operator):
    """Edit the active mesh once per variant (target prompt and seed), sharing one capture and one fit; the results are laid out side by side"""

    bl_idname = "piva.run_variants"
    bl_label = "Run Variants"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not cls._idle():
            return False
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            cls.poll_message_set("Select a mesh object to edit (the active object is not a mesh)")
            return False
        settings = context.scene.piva
        if not settings.source_prompt.strip():
            cls.poll_message_set("Type the source prompt first")
            return False
        if not any(v.target_prompt.strip() for v in settings.variants):
            cls.poll_message_set("Add at least one variant with a target prompt (the + button)")
            return False
        return True

    def build_queue(self, context) -> batch_queue.BatchQueue:
        request = request_from_panel(context, context.active_object.name)
        items = [(v.target_prompt.strip(), v.seed) for v in context.scene.piva.variants if v.target_prompt.strip()]
        queue = variants_queue(request, [t for t, _ in items], [], str(job_root_of(request)))
        # Each row is its own (prompt, seed) pair, not a grid of all prompts by all seeds.
        for item, (target, seed) in zip(queue.items, items):
            item.target_prompt, item.seed = target, seed
        queue.save()
        return queue


class PIVA_OT_run_batch(_QueueOperator, bpy.types.Operator):
    """Edit every selected mesh (or every mesh of a collection) with the prompts above; '{name}' in a prompt becomes the object's name"""

    bl_idname = "piva.run_batch"
    bl_label = "Run Batch"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not cls._idle():
            return False
        settings = context.scene.piva
        if not settings.source_prompt.strip() or not settings.target_prompt.strip():
            cls.poll_message_set("Type a source prompt and a target prompt first ('{name}' = each object's name)")
            return False
        if settings.batch_source == "COLLECTION" and settings.batch_collection is None:
            cls.poll_message_set("Choose the collection to batch over")
            return False
        if settings.batch_source == "SELECTED" and not any(o.type == "MESH" for o in context.selected_objects):
            cls.poll_message_set("Select the meshes to batch over")
            return False
        return True

    def build_queue(self, context) -> batch_queue.BatchQueue:
        settings = context.scene.piva
        names = batch_objects(settings.batch_source, settings.batch_collection, context)
        request = request_from_panel(context, names[0] if names else "")
        return make_batch_queue(request, names, str(job_root_of(request)))


class PIVA_OT_resume_queue(_QueueOperator, bpy.types.Operator):
    """Resume this scene's latest variants or batch: finished items are kept, interrupted ones continue from their checkpoints"""

    bl_idname = "piva.resume_queue"
    bl_label = "Resume"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Queue", description="queue.json to resume; empty = the scene's latest", options={"SKIP_SAVE"})
    retry_failed: BoolProperty(name="Retry failed items", default=False, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        if not cls._idle():
            return False
        queue = batch_queue.load_queue_cached(context.scene.piva.queue_file) if context.scene.piva.queue_file else None
        if queue is None or all(i.status == "done" for i in queue.items):
            cls.poll_message_set("Nothing to resume: this scene's latest queue is complete or missing")
            return False
        return True

    def build_queue(self, context) -> batch_queue.BatchQueue:
        path = self.filepath or context.scene.piva.queue_file
        queue = batch_queue.load_queue(bpy.path.abspath(path))
        if queue.prepare_resume(retry_failed=self.retry_failed) == 0:
            raise EditFailed("nothing left to run in this queue", "tick 'Retry failed items' to run the failed ones again")
        queue.save()
        return queue


class PIVA_OT_variant_add(bpy.types.Operator):
    """Add a prompt variant (a copy of the target prompt with the next seed)"""

    bl_idname = "piva.variant_add"
    bl_label = "Add Variant"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings = context.scene.piva
        variant = settings.variants.add()
        variant.target_prompt = settings.target_prompt
        variant.seed = max([v.seed for v in settings.variants[:-1]], default=settings.seed - 1) + 1
        settings.variant_index = len(settings.variants) - 1
        return {"FINISHED"}


class PIVA_OT_variant_remove(bpy.types.Operator):
    """Remove the selected prompt variant"""

    bl_idname = "piva.variant_remove"
    bl_label = "Remove Variant"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not context.scene.piva.variants:
            cls.poll_message_set("There is no variant to remove")
            return False
        return True

    def execute(self, context):
        settings = context.scene.piva
        settings.variants.remove(min(settings.variant_index, len(settings.variants) - 1))
        settings.variant_index = max(0, min(settings.variant_index, len(settings.variants) - 1))
        return {"FINISHED"}


class PIVA_OT_clear_cache(bpy.types.Operator):
    """Forget the active mesh's cached capture and fit (the next edit renders and fits it again)"""

    bl_idname = "piva.clear_cache"
    bl_label = "Clear Cache"

    @classmethod
    def poll(cls, context):
        if is_busy():
            cls.poll_message_set("Wait for the running edit to end")
            return False
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            cls.poll_message_set("Select the mesh whose cache to clear")
            return False
        return True

    def execute(self, context):
        from ..scene.fingerprint import object_fingerprint

        request = request_from_panel(context, context.active_object.name)
        try:
            capture = settings_blocks(request)["capture"]
        except contract.ContractError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        key = cache.object_key(object_fingerprint(context.active_object), capture)
        if cache.clear_cache(job_root_of(request), key):
            self.report({"INFO"}, f"PIVA: removed the cached capture and fit of {context.active_object.name!r}")
        else:
            self.report({"INFO"}, "PIVA: nothing cached for this object under the current settings")
        return {"FINISHED"}


def show_image(context, path: str | os.PathLike) -> "bpy.types.Image":
    """Load the PNG ``path`` into ``bpy.data.images`` (reloaded from disk when it is already there)
    and show it in an Image Editor: the window's first one, else the largest area of a new window
    (``wm.window_new``) turned into one. In background mode (no window) it is only loaded."""
    path = str(Path(path).resolve())
    image = bpy.data.images.load(path, check_existing=True)
    image.reload()  # a sheet or report drawn again since it was loaded
    if bpy.app.background or context.window is None:
        return image
    areas = [a for a in context.window.screen.areas if a.type == "IMAGE_EDITOR"]
    if not areas:
        windows = set(context.window_manager.windows[:])
        bpy.ops.wm.window_new()
        new = [w for w in context.window_manager.windows if w not in windows]
        screen = new[0].screen if new else context.window.screen
        area = max(screen.areas, key=lambda a: a.width * a.height)
        area.type = "IMAGE_EDITOR"
        areas = [area]
    areas[0].spaces.active.image = image
    areas[0].tag_redraw()
    return image


def contact_sheet_of(context) -> Path | None:
    """The contact sheet of this scene's latest queue (beside its queue.json); None without a queue."""
    queue_file = context.scene.piva.queue_file
    return Path(bpy.path.abspath(queue_file)).parent / CONTACT_SHEET_FILE if queue_file else None


class PIVA_OT_open_contact_sheet(bpy.types.Operator):
    """Show the latest variants' contact sheet (the source and every variant from the same cameras) in an Image Editor"""

    bl_idname = "piva.open_contact_sheet"
    bl_label = "Open Contact Sheet"

    @classmethod
    def poll(cls, context):
        sheet = contact_sheet_of(context)
        if sheet is None or not sheet.is_file():
            cls.poll_message_set("No contact sheet yet: run prompt variants to the end first")
            return False
        return True

    def execute(self, context):
        path = contact_sheet_of(context)  # scripts showing another PNG call show_image()
        if path is None or not path.is_file():
            self.report({"ERROR"}, f"PIVA: no contact sheet at {path}: run the variants to the end first")
            return {"CANCELLED"}
        image = show_image(context, path)
        self.report({"INFO"}, f"PIVA: contact sheet {path} ({image.size[0]}x{image.size[1]})")
        return {"FINISHED"}


def report_of(job_dir: str) -> Path | None:
    """``JOB/results/report.html``; None without a job folder."""
    return Path(bpy.path.abspath(job_dir)) / contract.RESULTS_DIR / REPORT_FILE if job_dir else None


class PIVA_OT_open_report(bpy.types.Operator):
    """Open the last job's report (loss curves, previews over time, before/after, metrics) in the web browser, or as a picture in an Image Editor"""

    bl_idname = "piva.open_report"
    bl_label = "Open Report"

    job_dir: StringProperty(
        name="Job folder", description="job whose report to open; empty = the last job", options={"SKIP_SAVE"}
    )
    in_blender: BoolProperty(
        name="In Blender", description="show report.png in an Image Editor instead of report.html in the browser",
        default=False, options={"SKIP_SAVE"},
    )

    @classmethod
    def poll(cls, context):
        report = report_of(context.window_manager.piva_status.job_dir)
        if report is None or not report.is_file():
            cls.poll_message_set("No report yet: the last job has not ended (or ran no stage)")
            return False
        return True

    def execute(self, context):
        report = report_of(self.job_dir or context.window_manager.piva_status.job_dir)
        if report is None or not report.is_file():
            self.report({"ERROR"}, f"PIVA: no report at {report}: run the job first")
            return {"CANCELLED"}
        picture = report.parent / REPORT_IMAGE_FILE
        if self.in_blender or bpy.app.background:  # no browser in background mode: the picture
            if not picture.is_file():
                fix = f"rebuild it with: python -m backend report {report.parent.parent}"
                self.report({"ERROR"}, f"PIVA: {picture} is missing; {fix}")
                return {"CANCELLED"}
            show_image(context, picture)
            self.report({"INFO"}, f"PIVA: report {picture}")
            return {"FINISHED"}
        bpy.ops.wm.url_open(url=report.as_uri())
        self.report({"INFO"}, f"PIVA: report {report}")
        return {"FINISHED"}


CLASSES = (
    PIVA_OT_run_variants,
    PIVA_OT_run_batch,
    PIVA_OT_resume_queue,
    PIVA_OT_variant_add,
    PIVA_OT_variant_remove,
    PIVA_OT_clear_cache,
    PIVA_OT_open_contact_sheet,
    PIVA_OT_open_report,
)
