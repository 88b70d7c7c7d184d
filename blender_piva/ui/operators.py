"""Operators of one edit: they orchestrate; the work lives in scene/edit_job.py, scene/capture.py
and scene/importer.py, the shared UI state in ui/status.py.

``piva.edit`` has two paths. ``execute`` blocks until the job ends (the bpy module, scripts,
tests and the headless command: timers never fire in background mode). ``invoke`` in the UI
starts the backend and returns; a modal timer follows its events, so Blender stays usable.
It adds an object, so it is undoable (``UNDO``): Blender pushes one undo step when it returns
FINISHED, from ``execute`` or at the end of the modal run; nothing is pushed while it runs or
when it is cancelled. Its only property is hidden, so the Adjust Last Operation panel (which would
run the whole edit again through ``execute``) never appears for it.

A hub model is used only while Blender's online access is on (``core/network.py``): otherwise the
edit is refused before anything starts.
"""

from __future__ import annotations

import time

import bpy
from bpy.props import EnumProperty, StringProperty

from ..core.known_models import KNOWN_MODELS
from ..core.request import EditFailed
from ..core.terminal import print_capture_progress, print_event
from ..scene.edit_job import EditJob
from .status import ACTIVE, is_busy, modal_capture_tick, redraw, request_from_panel, update_status


class PIVA_OT_edit(bpy.types.Operator):
    """Capture the active mesh, edit it towards the target prompt, and import the result next to it"""

    bl_idname = "piva.edit"
    bl_label = "Edit with PIVA"
    bl_options = {"REGISTER", "UNDO"}

    object_name: StringProperty(
        name="Object", description="Object to edit; empty = the active object", options={"SKIP_SAVE", "HIDDEN"}
    )

    @classmethod
    def poll(cls, context):
        if is_busy():
            cls.poll_message_set("An edit is already running: wait for it or press Cancel")
            return False
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            cls.poll_message_set("Select a mesh object to edit (the active object is not a mesh)")
            return False
        if not context.scene.piva.source_prompt.strip() or not context.scene.piva.target_prompt.strip():
            cls.poll_message_set("Type a source prompt and a target prompt first")
            return False
        return True

    def _object_name(self, context) -> str:
        if self.object_name:
            return self.object_name
        return context.active_object.name if context.active_object is not None else ""

    def _job(self, context) -> EditJob:
        from .preferences import backend_config

        return EditJob(request_from_panel(context, self._object_name(context)), backend_config(context))

    def _refused_offline(self, context, job: EditJob) -> bool:
        """Refuse (and say why) a hub model while Blender's online access is off."""
        from ..core.network import network_refusal

        refusal = network_refusal(job.request.model.model, job.request.model.controlnet, bpy.app.online_access)
        if refusal is None:
            return False
        status = context.window_manager.piva_status
        status.error, status.hint = refusal, ""
        self.report({"ERROR"}, refusal)
        return True

    def execute(self, context):
        status = context.window_manager.piva_status
        status.error = status.hint = ""
        job = self._job(context)
        if self._refused_offline(context, job):
            return {"CANCELLED"}
        try:
            obj = job.run_sync(on_event=print_event, on_capture=print_capture_progress)
        except EditFailed as exc:
            status.error, status.hint = exc.message, exc.hint
            status.job_dir = str(job.spec.job_dir) if job.spec else ""
            self.report({"ERROR"} if exc.status == "error" else {"WARNING"}, str(exc))
            return {"CANCELLED"}
        status.job_dir = str(job.spec.job_dir) if job.spec else ""
        self.report({"INFO"}, f"PIVA: created {obj.name}" if obj is not None else "PIVA: job finished")
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        status = context.window_manager.piva_status
        status.error = status.hint = status.preview_path = status.message = ""
        job = self._job(context)
        if self._refused_offline(context, job):
            return {"CANCELLED"}
        wm = context.window_manager
        try:
            job.prepare()
            session = job.begin_capture()  # None: the capture is reused
        except EditFailed as exc:
            status.error, status.hint = exc.message, exc.hint
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        ACTIVE.job, ACTIVE.capture, ACTIVE.cancel_requested = job, session, False
        ACTIVE.stage_started, ACTIVE.stage_name = time.monotonic(), ""
        status.running, status.stage, status.progress, status.eta_s = True, "capture", 0.0, -1.0
        status.job_dir = str(job.spec.job_dir)
        if session is None and not self._start_backend(context, job):
            return {"CANCELLED"}
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _start_backend(self, context, job: EditJob) -> bool:
        status = context.window_manager.piva_status
        try:
            job.start_backend()
        except EditFailed as exc:
            ACTIVE.job = None
            status.running = False
            status.error, status.hint = exc.message, exc.hint
            self.report({"ERROR"}, str(exc))
            return False
        status.stage, status.progress = "starting", 0.0
        status.log_path = str(job.process.log_path)
        return True

    def _stop(self, context) -> None:
        context.window_manager.event_timer_remove(self._timer)
        ACTIVE.job, ACTIVE.capture = None, None
        context.window_manager.piva_status.running = False
        redraw(context)

    def modal(self, context, event):
        status = context.window_manager.piva_status
        job = ACTIVE.job
        assert job is not None
        try:
            phase = modal_capture_tick(context, event)
        except EditFailed as exc:
            self._stop(context)
            status.error, status.hint = exc.message, exc.hint
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if phase == "cancelled":
            self._stop(context)
            status.error, status.hint = "capture cancelled", "the scene is as it was; run the edit again to start over"
            self.report({"WARNING"}, "PIVA: capture cancelled")
            return {"CANCELLED"}
        if phase in ("pass", "running"):
            return {"PASS_THROUGH"} if phase == "pass" else {"RUNNING_MODAL"}
        if phase == "complete":
            if not self._start_backend(context, job):
                self._stop(context)
                return {"CANCELLED"}
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        assert job.process is not None
        if ACTIVE.cancel_requested:
            job.process.cancel()
            ACTIVE.cancel_requested = False
            status.message = "cancelling: saving a checkpoint"
        for ev in job.process.poll():
            update_status(status, ev)
        redraw(context)
        outcome = job.process.outcome()
        if outcome is None:
            return {"RUNNING_MODAL"}
        self._stop(context)
        try:
            job.check_outcome(outcome)
            obj = job.finish()
        except EditFailed as exc:
            status.error, status.hint = exc.message, exc.hint
            self.report({"ERROR"} if exc.status == "error" else {"WARNING"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"PIVA: created {obj.name}" if obj is not None else "PIVA: job finished")
        return {"FINISHED"}


class PIVA_OT_cancel(bpy.types.Operator):
    """Stop the running edit after its next checkpoint (run it again to resume)"""

    bl_idname = "piva.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        if not is_busy():
            cls.poll_message_set("No edit is running")
            return False
        return True

    def execute(self, context):
        ACTIVE.cancel_requested = True
        return {"FINISHED"}


class PIVA_OT_release(bpy.types.Operator):
    """Stop the backend (the running job checkpoints first, and resumes when run again) and free its GPU memory, including the worker that keeps the model loaded between jobs"""

    bl_idname = "piva.release"
    bl_label = "Release Backend"

    @classmethod
    def poll(cls, context):
        from ..core.worker_client import running_workers

        job_running = ACTIVE.job is not None and ACTIVE.job.process is not None and ACTIVE.job.process.running
        if not job_running and not running_workers():
            cls.poll_message_set("No backend process or worker is running")
            return False
        return True

    def execute(self, context):
        from ..core.worker_client import release_all

        if ACTIVE.job is not None and ACTIVE.job.process is not None:
            ACTIVE.job.process.release()
        stopped = release_all()
        self.report({"INFO"}, f"PIVA: released the backend ({stopped} worker{'s' if stopped != 1 else ''} stopped)")
        return {"FINISHED"}


class PIVA_OT_check_backend(bpy.types.Operator):
    """Report the torch, CUDA, diffusers, peft, nerfacc and tinycudann the backend finds, and its devices"""

    bl_idname = "piva.check_backend"
    bl_label = "Check Backend"

    def execute(self, context):
        import json

        from ..core.network import network_refusal
        from .preferences import backend_config, check_backend_devices, get_preferences

        prefs = get_preferences(context)
        model, controlnet = (prefs.model, prefs.controlnet) if prefs else ("", "")
        refusal = network_refusal(model, controlnet, bpy.app.online_access)
        if refusal is not None:
            model = controlnet = ""  # the packages are still checked; the model would need the network
        ok, lines, devices = check_backend_devices(backend_config(context), model=model, controlnet=controlnet)
        if refusal is not None:
            lines.append(f"PROBLEM: model not loaded: {refusal}")
            ok = False
        if prefs is not None:
            prefs.check_report = "\n".join(lines)
            if devices is not None:
                prefs.devices_found = json.dumps(devices)
        for line in lines:
            print(line)
        self.report({"INFO"} if ok else {"WARNING"}, lines[-1] if lines else "no answer")
        return {"FINISHED"}


class PIVA_OT_check_model(bpy.types.Operator):
    """Check the chosen model and ControlNet without loading them: a folder's components and safetensors weights; a hub id needs online access"""

    bl_idname = "piva.check_model"
    bl_label = "Check Model"

    def execute(self, context):
        from ..core.model_check import check_model_choice
        from .preferences import backend_config, get_preferences

        prefs = get_preferences(context)
        if prefs is None:
            self.report({"ERROR"}, "the PIVA preferences are not loaded (enable the extension)")
            return {"CANCELLED"}
        ok, lines = check_model_choice(
            bpy.path.abspath(prefs.model) if prefs.model.startswith("//") else prefs.model,
            bpy.path.abspath(prefs.controlnet) if prefs.controlnet.startswith("//") else prefs.controlnet,
            online_access=bpy.app.online_access,
            backend_root=backend_config(context).resolved_root(),
        )
        prefs.model_report = "\n".join(lines)
        for line in lines:
            print(line)
        self.report({"INFO"} if ok else {"WARNING"}, lines[-1] if lines else "nothing to check")
        return {"FINISHED"}


class PIVA_OT_use_known_model(bpy.types.Operator):
    """Fill Model and Depth ControlNet with a model known to work"""

    bl_idname = "piva.use_known_model"
    bl_label = "Use Known Model"

    key: EnumProperty(name="Model", items=[(m.key, m.label, m.description) for m in KNOWN_MODELS.values()])

    def execute(self, context):
        from .preferences import get_preferences

        prefs = get_preferences(context)
        if prefs is None:
            self.report({"ERROR"}, "the PIVA preferences are not loaded (enable the extension)")
            return {"CANCELLED"}
        chosen = KNOWN_MODELS[self.key]
        prefs.model, prefs.controlnet, prefs.model_report = chosen.model, chosen.controlnet, ""
        self.report({"INFO"}, f"PIVA: model {chosen.model}" + (f", ControlNet {chosen.controlnet}" if chosen.controlnet else ""))
        return {"FINISHED"}


CLASSES = (
    PIVA_OT_edit, PIVA_OT_cancel, PIVA_OT_release, PIVA_OT_check_backend, PIVA_OT_check_model, PIVA_OT_use_known_model,
)
