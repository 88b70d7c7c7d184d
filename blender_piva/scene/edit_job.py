"""One edit of one object, end to end: check, capture, backend, import.

Operators (UI, modal) and the headless command (blocking) drive the same :class:`EditJob`:

    job = EditJob(request, backend_config)
    job.prepare()            # validates everything, writes job.json; nothing in the scene changes
    job.capture()            # renders in a temporary scene (skipped when the capture exists)
    job.start_backend()      # a subprocess, or the session's worker (BackendConfig.use_worker);
                             # poll job.process or call job.wait_backend()
    job.finish()             # imports the result next to the source

A job folder can be run again: the capture is reused and every backend stage resumes from its
checkpoints, so a crashed or cancelled job continues where it stopped. A job folder belongs to its
job: it is resumed only by a request for the same edit (object, prompts, seed, settings, model;
:func:`resume_inputs`), its capture only while the object looks as it did, and a folder holding
anything else is refused (``contract.ownership``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import bpy

from .. import contract
from ..contract import disk
from ..core import cache, presets
from ..core.backend_process import BackendConfig, BackendOutcome, BackendProcess
from ..core.request import EditFailed, EditRequest, new_job_id

if TYPE_CHECKING:
    from .capture import CaptureSession


def default_job_root() -> Path:
    """Where jobs go when the preferences name no folder: the extension's user folder, never
    the extension's own folder (Blender may replace it on update)."""
    from ..core.extension import PACKAGE as package
    try:
        return Path(bpy.utils.extension_path_user(package, path="jobs", create=True))
    except (ValueError, RuntimeError, TypeError):
        # Not loaded as an extension (the bpy module in scripts and tests).
        return Path(tempfile.gettempdir()) / "piva-jobs"


def job_root_of(request: EditRequest) -> Path:
    """The folder under which the request's job folder (and the cache) lives."""
    return Path(request.job_root).expanduser() if request.job_root else default_job_root()


def settings_blocks(request: EditRequest) -> dict[str, object]:
    """The preset's settings blocks with the request's overrides and choices applied.

    Raises ContractError naming an unknown block or setting.
    """
    blocks = presets.fresh_blocks(request.preset)
    for block_name, values in request.overrides.items():
        if block_name not in blocks:
            raise contract.ContractError(f"overrides.{block_name}", "unknown settings block", ", ".join(blocks))
        for key, value in values.items():
            if not hasattr(blocks[block_name], key):
                raise contract.ContractError(f"{block_name}.{key}", "unknown setting", "see blender_piva/contract/settings.py")
            setattr(blocks[block_name], key, value)
    edit = blocks["edit"]
    edit.method = request.method
    if request.steps is not None:
        edit.steps = request.steps
    if request.lambda_identity is not None:
        edit.lambda_identity = request.lambda_identity
    return blocks


class EditJob:
    """State of one edit; see the module docstring for the order of calls."""

    def __init__(self, request: EditRequest, backend: BackendConfig) -> None:
        self.request = request
        self.backend = backend
        self.spec: contract.JobSpec | None = None
        self.process: BackendProcess | None = None
        self.result_object_name: str = ""
        self.cache_entry: cache.CacheEntry | None = None
        self.cache_hit: dict[str, bool] = {"capture": False, "reconstruction": False}
        """Whether the capture and the fit came from the cache (known after prepare())."""

    # -- 1. prepare ------------------------------------------------------------------------
    def source_object(self) -> bpy.types.Object:
        from .capture import CaptureError, check_capturable

        obj = bpy.data.objects.get(self.request.object_name) if self.request.object_name else None
        if obj is None and self.request.object_name:
            raise EditFailed(
                f"there is no object named {self.request.object_name!r}",
                "select the mesh to edit (or pass the exact object name)",
            )
        try:
            check_capturable(obj)
        except CaptureError as exc:
            raise EditFailed(str(exc)) from None
        assert obj is not None
        return obj

    def build_spec(self) -> contract.JobSpec:
        req = self.request
        try:
            blocks = settings_blocks(req)
            root = job_root_of(req)
            if req.job_dir:
                job_dir = Path(req.job_dir).resolve()
                job_id = job_dir.name
            else:
                job_id = new_job_id(req.object_name)
                job_dir = (root / job_id).resolve()
            cache_dirs = {}
            if req.use_cache:
                entry = self._cache_entry(root.resolve(), blocks["capture"], blocks["reconstruct"], req.model.model)
                cache_dirs = {"capture_dir": str(entry.capture_dir), "reconstruction_dir": str(entry.reconstruction_dir)}
            spec = contract.JobSpec(
                job_id=job_id,
                object_name=req.object_name,
                source_prompt=req.source_prompt.strip(),
                target_prompt=req.target_prompt.strip(),
                negative_prompt=req.negative_prompt.strip(),
                output_dir=str(job_dir),
                stages=list(req.stages),
                device=req.device,
                seed=req.seed,
                model=req.model,
                **cache_dirs,
                **blocks,
            )
            return spec.validate()
        except contract.ContractError as exc:
            raise EditFailed(str(exc), "change the setting named above") from None

    def _cache_entry(
        self, job_root: Path, capture: contract.CaptureSettings, reconstruct: contract.ReconstructSettings,
        model: str = "",
    ) -> cache.CacheEntry:
        from .fingerprint import object_fingerprint

        entry = cache.cache_entry(job_root, object_fingerprint(self.source_object()), capture, reconstruct, model)
        self.cache_entry = entry
        self.cache_hit = {"capture": entry.has_capture, "reconstruction": entry.has_reconstruction}
        return entry

    def prepare(self) -> contract.JobSpec:
        """Check the object and the settings, create (or claim) the job folder and write job.json.

        An existing job.json is resumed only when it describes this request's edit; a folder
        holding anything else is refused, and nothing is written then."""
        from ..core.backend_process import BackendError, check_backend_python
        from ..core.network import network_refusal

        self.source_object()
        spec = self.build_spec()
        try:
            check_backend_python(self.backend)  # before the capture: a Python without torch fails now, not later
        except BackendError as exc:
            raise EditFailed(str(exc)) from None
        refusal = network_refusal(spec.model.model, spec.model.controlnet, online_access=self.backend.online_access)
        if refusal is not None:  # before the capture, like the Python check
            raise EditFailed(refusal)
        job_dir = spec.job_dir
        existing = job_dir / contract.JOB_FILE
        if existing.is_file():
            try:
                on_disk = contract.load_job(existing)
            except contract.ContractError as exc:
                raise EditFailed(f"cannot resume {job_dir}: {exc}", "start a new job instead") from None
            differences = contract.describe_differences(
                resume_inputs(on_disk), resume_inputs(spec), labels=("in its job.json", "in this edit")
            )
            if differences:
                raise EditFailed(
                    f"cannot resume {job_dir}: it holds another edit ({differences})",
                    "leave the job folder empty to start a new job, or repeat that job's object, prompts and settings",
                )
            # Resuming: the spec on disk wins for everything the stages already computed; how
            # the backend runs (device, memory mode) is this request's, so a job that ran out of
            # memory resumes in a lower memory mode.
            on_disk.device = spec.device
            on_disk.model.memory = spec.model.memory
            spec = on_disk
        job_files = contract.ownership.job_names_before_first_run(spec.job_dir, spec.capture_path)
        try:
            contract.check_owner(job_dir, "job", spec.owner_inputs(), job_files)  # before anything is written
            job_dir.mkdir(parents=True, exist_ok=True)
            probe = job_dir / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            contract.claim_folder(job_dir, "job", spec.owner_inputs(), job_files)
            spec.write()
        except contract.FolderNotOurs as exc:
            raise EditFailed(str(exc), exc.hint) from None
        except OSError as exc:
            if disk.is_disk_full(exc):
                raise EditFailed(*disk.disk_full_message(job_dir, disk.job_bytes(spec), "the job")) from None
            raise EditFailed(
                f"cannot write the job folder {job_dir}: {exc.strerror or exc}",
                "choose a writable job folder in the add-on preferences (or --jobs on the command line)",
            ) from None
        self.spec = spec
        return spec

    # -- 2. capture -------------------------------------------------------------------------
    def capture(
        self,
        progress: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Path:
        from .capture import CaptureCancelled, CaptureError, capture_object, reusable_capture

        spec = self._spec()
        source = self.source_object()
        try:
            if reusable_capture(source, spec.capture, spec.capture_path):
                return spec.capture_path / contract.TRANSFORMS_FILE
        except contract.FolderNotOurs as exc:
            raise EditFailed(str(exc), exc.hint) from None
        try:
            return capture_object(source, spec.capture, spec.capture_path, progress=progress, should_cancel=should_cancel)
        except CaptureCancelled:
            raise EditFailed("capture cancelled", "run the edit again to start over", status="cancelled") from None
        except KeyboardInterrupt:  # Ctrl+C in a terminal: the partial capture is already removed
            raise EditFailed("capture interrupted (Ctrl+C)", "run the edit again to start over", status="cancelled") from None
        except CaptureError as exc:
            raise EditFailed(str(exc)) from None

    def begin_capture(self) -> "CaptureSession | None":
        """The capture as a :class:`~.capture.CaptureSession` already begun, to render a view at a
        time (the panel's modal operator: Blender stays responsive); None when the existing capture
        is reused. Drive it with :meth:`capture_step`; ``session.abort()`` cancels it."""
        from .capture import CaptureError, CaptureSession, reusable_capture

        spec = self._spec()
        source = self.source_object()
        try:
            if reusable_capture(source, spec.capture, spec.capture_path):
                return None
            session = CaptureSession(source, spec.capture, spec.capture_path)
            session.begin()
        except contract.FolderNotOurs as exc:
            raise EditFailed(str(exc), exc.hint) from None
        except CaptureError as exc:
            raise EditFailed(str(exc)) from None
        return session

    @staticmethod
    def capture_step(session: "CaptureSession") -> bool:
        """Render the session's next view (or, after the last, complete it); True once complete.
        Errors abort the session and become EditFailed."""
        from .capture import CaptureError

        try:
            if not session.all_rendered:
                session.render_next()
                return False
            session.complete()
            return True
        except CaptureError as exc:
            raise EditFailed(str(exc)) from None
        except BaseException:
            session.abort()
            raise

    # -- 3. backend -------------------------------------------------------------------------
    def start_backend(self) -> BackendProcess:
        from ..core.backend_process import BackendError

        spec = self._spec()
        try:
            if self.backend.use_worker:  # the session's long-lived worker: the model stays loaded
                from ..core.worker_client import shared_worker

                self.process = shared_worker(self.backend, job_root_of(self.request)).submit(spec.job_dir)
            else:
                self.process = BackendProcess(self.backend, spec.job_dir)
            self.process.start()
        except BackendError as exc:
            raise EditFailed(str(exc)) from None
        return self.process

    def wait_backend(
        self,
        on_event: Callable[[contract.Event], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_interrupt: Callable[[str], None] | None = None,
    ) -> BackendOutcome:
        """Follow the backend to its end; Ctrl+C cancels it (see BackendProcess.wait)."""
        assert self.process is not None, "start_backend() first"
        return self.process.wait(on_event, should_cancel=should_cancel, on_interrupt=on_interrupt)

    def check_outcome(self, outcome: BackendOutcome) -> None:
        if outcome.status == "finished":
            return
        if outcome.status == "cancelled":
            raise EditFailed("edit cancelled", "run the same job again to resume from its checkpoint", status="cancelled")
        raise EditFailed(outcome.message or "the backend failed", outcome.hint or f"see {outcome.log_path}")

    # -- 4. import --------------------------------------------------------------------------
    def finish(self) -> bpy.types.Object | None:
        """Import the result next to the source; None when the job exported no mesh."""
        spec = self._spec()
        try:
            manifest = contract.load_manifest(spec.results_path)
        except contract.ContractError as exc:
            raise EditFailed(str(exc), "run the job again to complete it") from None
        if "mesh" not in manifest.files:
            return None
        from .importer import ImportResultError, import_result, side_by_side_offset

        existing = find_result_object(spec.job_id)
        if existing is not None:  # a resumed batch whose result was imported before
            self.result_object_name = existing.name
            return existing
        source = self.source_object()
        try:
            obj = import_result(
                spec.results_path,
                source,
                offset=side_by_side_offset(source, self.request.slot),
                collection_name=self.request.collection_name or f"PIVA {spec.object_name}",
                label=f"{spec.target_prompt} (seed {spec.seed})",
                job_info={
                    "piva_job_id": spec.job_id,
                    "piva_source_prompt": spec.source_prompt,
                    "piva_target_prompt": spec.target_prompt,
                    "piva_method": spec.edit.method,
                    "piva_seed": spec.seed,
                    "piva_steps": spec.edit.steps,
                    "piva_job_dir": str(spec.job_dir),
                },
            )
        except ImportResultError as exc:
            raise EditFailed(str(exc)) from None
        self.result_object_name = obj.name
        return obj

    # -- the blocking path ---------------------------------------------------------------------
    def run_sync(
        self,
        on_event: Callable[[contract.Event], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_capture: Callable[[int, int], None] | None = None,
        on_interrupt: Callable[[str], None] | None = None,
    ) -> bpy.types.Object | None:
        """Everything in one call (scripts, tests, the headless command)."""
        self.prepare()
        self.capture(progress=on_capture, should_cancel=should_cancel)
        self.start_backend()
        outcome = self.wait_backend(on_event, should_cancel, on_interrupt)
        self.check_outcome(outcome)
        return self.finish()

    def _spec(self) -> contract.JobSpec:
        if self.spec is None:
            raise RuntimeError("prepare() the job first")
        return self.spec


def resume_inputs(spec: contract.JobSpec) -> dict[str, object]:
    """What a request must share with a job folder's job.json to resume it: the object, the
    prompts, the seed, every setting that shapes a result (``contract.content_settings``) and the
    model (not its memory mode). The stages, the device, the memory mode and the folders may differ."""
    return {
        "object_name": spec.object_name,
        "source_prompt": spec.source_prompt,
        "target_prompt": spec.target_prompt,
        **({"negative_prompt": spec.negative_prompt} if spec.negative_prompt else {}),
        "seed": spec.seed,
        "capture": contract.content_settings(spec.capture),
        "reconstruct": contract.content_settings(spec.reconstruct),
        "edit": contract.content_settings(spec.edit),
        "export": contract.content_settings(spec.export),
        "model": {k: v for k, v in dataclasses.asdict(spec.model).items() if k != "memory"},
    }


def find_result_object(job_id: str) -> bpy.types.Object | None:
    """The object an earlier finish() of this job imported, if it is still in the file."""
    for obj in bpy.data.objects:
        if obj.get("piva_job_id") == job_id:
            return obj
    return None
