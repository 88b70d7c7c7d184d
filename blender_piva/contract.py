"""The job contract between the Blender extension and the backend.

Standard library only: the extension ships this file in its zip, and the backend imports it
without bpy (``from blender_piva import contract``). The two sides talk only through

* a **job spec** (``job.json``), written by the extension, read by the backend;
* **events**, one JSON object per line in ``events.jsonl``, appended by the backend;
* a **cancel request** (``cancel.json``), written by the extension, polled by the backend;
* a **results manifest** (``results/manifest.json``), written by the backend when it finishes.

Every document carries ``"contract": CONTRACT_VERSION``. A reader refuses a document of another
major version with an error that says which version it found and which it speaks.

Layout of a job folder::

    JOB/
      job.json              the spec (JobSpec)
      capture/              written by the extension: transforms.json, images/, depth/
      events.jsonl          appended by the backend, one Event per line
      cancel.json           present = please stop (CancelRequest)
      backend.log           the backend's stderr
      checkpoints/          resumable state of every stage
      previews/             preview renders referenced by events
      results/manifest.json ResultsManifest, written last and atomically
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

CONTRACT_VERSION = 1
"""Major version of every document below. Bump it on any incompatible change."""

METHODS = ("sds", "dds", "pds", "ssd", "piva")
"""Editing losses the backend implements (see backend/editing/)."""

DEVICES = ("auto", "cpu", "cuda")
"""Where the backend runs. ``auto`` means CUDA when available, else the CPU."""

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
"""Numeric precision of the diffusion model. ``auto``: fp32 on the CPU, fp16 on CUDA."""

STAGES = ("reconstruct", "edit", "export")
"""Backend stages, in order. Capture (before) and import (after) happen in Blender."""

EVENT_TYPES = ("started", "stage", "progress", "preview", "log", "finished", "cancelled", "error")
"""Kinds of event a backend may emit (see :class:`Event`)."""

JOB_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
CANCEL_FILE = "cancel.json"
LOG_FILE = "backend.log"
CAPTURE_DIR = "capture"
CHECKPOINT_DIR = "checkpoints"
PREVIEW_DIR = "previews"
RESULTS_DIR = "results"
MANIFEST_FILE = "manifest.json"
TRANSFORMS_FILE = "transforms.json"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_JOB = 2
EXIT_CANCELLED = 3
"""Backend process exit codes."""


class ContractError(ValueError):
    """A document does not follow the contract.

    ``field`` is the dotted path of the offending entry (``"edit.method"``), ``allowed`` a
    human-readable description of what would be accepted.
    """

    def __init__(self, field_path: str, problem: str, allowed: str = "") -> None:
        self.field = field_path
        self.problem = problem
        self.allowed = allowed
        text = f"{field_path}: {problem}"
        if allowed:
            text += f" (allowed: {allowed})"
        super().__init__(text)


# --------------------------------------------------------------------------------------------
# Settings blocks. Each field's docstring is the user-facing explanation.
# --------------------------------------------------------------------------------------------


@dataclass
class CaptureSettings:
    """How Blender renders the object for the backend (PIVA appendix A defaults)."""

    num_views: int = 100
    """Training views on the upper hemisphere."""
    num_eval_views: int = 8
    """Held-out views for evaluation, evenly spaced in azimuth at ``eval_elevation_deg``."""
    resolution: int = 256
    """Square render size in pixels."""
    samples: int = 16
    """Cycles samples per pixel (denoised when ``denoise``)."""
    denoise: bool = True
    """Run Cycles' OpenImageDenoise on every view."""
    elevation_deg: tuple[float, float] = (10.0, 60.0)
    """Range of camera elevations above the horizon, degrees."""
    fov_deg: tuple[float, float] = (40.0, 70.0)
    """Range of vertical = horizontal field of view, degrees."""
    distance: tuple[float, float] = (3.0, 4.0)
    """Range of camera distances from the centre of the normalised [-1, 1]^3 box."""
    eval_elevation_deg: float = 15.0
    """Elevation of the held-out views (the paper's evaluation protocol)."""
    eval_fov_deg: float = 50.0
    """Field of view of the held-out views."""
    eval_distance: float = 4.0
    """Distance of the held-out views."""
    seed: int = 0
    """Seed of the camera sampler: same seed, same cameras."""

    def validate(self, prefix: str = "capture") -> None:
        _check_int(self.num_views, f"{prefix}.num_views", 1, 10000)
        _check_int(self.num_eval_views, f"{prefix}.num_eval_views", 0, 1000)
        _check_int(self.resolution, f"{prefix}.resolution", 8, 4096)
        _check_int(self.samples, f"{prefix}.samples", 1, 4096)
        _check_bool(self.denoise, f"{prefix}.denoise")
        _check_range(self.elevation_deg, f"{prefix}.elevation_deg", -90.0, 90.0)
        _check_range(self.fov_deg, f"{prefix}.fov_deg", 1.0, 170.0)
        _check_range(self.distance, f"{prefix}.distance", 1.8, 1000.0)
        _check_float(self.eval_elevation_deg, f"{prefix}.eval_elevation_deg", -90.0, 90.0)
        _check_float(self.eval_fov_deg, f"{prefix}.eval_fov_deg", 1.0, 170.0)
        _check_float(self.eval_distance, f"{prefix}.eval_distance", 1.8, 1000.0)
        _check_int(self.seed, f"{prefix}.seed", 0, 2**31 - 1)


@dataclass
class ReconstructSettings:
    """How the backend fits a neural field to the capture."""

    steps: int = 2000
    """Adam steps of the fit."""
    rays_per_batch: int = 4096
    """Rays per optimisation step."""
    learning_rate: float = 1e-2
    """Initial learning rate (decayed over the run)."""
    samples_per_ray: int = 64
    """Samples per ray of the pure-PyTorch sampler (the occupancy grid adapts on CUDA)."""
    depth_weight: float = 0.1
    """Weight of the depth supervision term."""
    mask_weight: float = 0.1
    """Weight of the opacity-vs-alpha term."""
    checkpoint_every: int = 500
    """Steps between checkpoints (a killed fit resumes from the last one)."""
    preview_every: int = 250
    """Steps between preview renders."""
    seed: int = 0
    """Seed of the field's initialisation and ray sampling. Kept apart from the job's seed so that
    prompt variants (which differ in the job's seed) share one fitted field."""

    def validate(self, prefix: str = "reconstruct") -> None:
        _check_int(self.steps, f"{prefix}.steps", 0, 10_000_000)
        _check_int(self.rays_per_batch, f"{prefix}.rays_per_batch", 1, 1 << 24)
        _check_float(self.learning_rate, f"{prefix}.learning_rate", 0.0, 10.0, low_open=True)
        _check_int(self.samples_per_ray, f"{prefix}.samples_per_ray", 2, 4096)
        _check_float(self.depth_weight, f"{prefix}.depth_weight", 0.0, 1e6)
        _check_float(self.mask_weight, f"{prefix}.mask_weight", 0.0, 1e6)
        _check_int(self.checkpoint_every, f"{prefix}.checkpoint_every", 1, 10_000_000)
        _check_int(self.preview_every, f"{prefix}.preview_every", 1, 10_000_000)
        _check_int(self.seed, f"{prefix}.seed", 0, 2**31 - 1)


@dataclass
class EditSettings:
    """How the backend edits the field towards the target prompt."""

    method: str = "piva"
    """Editing loss, one of METHODS."""
    steps: int = 1000
    """Optimisation steps of the edit."""
    render_resolution: int = 128
    """Side of the square render fed to the diffusion model (512 in the paper)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance of the base model (diffusers convention)."""
    field_learning_rate: float = 1e-2
    """Learning rate of the field (hash grid) during the edit."""
    lora_learning_rate: float = 1e-4
    """Learning rate of PIVA's LoRA adapters."""
    lora_rank: int = 4
    """Rank of PIVA's LoRA adapters."""
    lambda_identity: float = 0.4
    """PIVA's regulariser weight lambda (0.4 objects, 0.2 real scenes in the paper)."""
    method_params: dict[str, Any] = field(default_factory=dict)
    """Extra hyperparameters of the chosen method, checked by the backend against its config."""
    checkpoint_every: int = 100
    """Steps between checkpoints (a killed edit resumes from the last one)."""
    preview_every: int = 50
    """Steps between preview renders."""

    def validate(self, prefix: str = "edit") -> None:
        if self.method not in METHODS:
            raise ContractError(f"{prefix}.method", f"unknown method {self.method!r}", ", ".join(METHODS))
        _check_int(self.steps, f"{prefix}.steps", 0, 10_000_000)
        _check_int(self.render_resolution, f"{prefix}.render_resolution", 8, 4096)
        _check_float(self.guidance_scale, f"{prefix}.guidance_scale", 0.0, 1000.0)
        _check_float(self.field_learning_rate, f"{prefix}.field_learning_rate", 0.0, 10.0, low_open=True)
        _check_float(self.lora_learning_rate, f"{prefix}.lora_learning_rate", 0.0, 10.0)
        _check_int(self.lora_rank, f"{prefix}.lora_rank", 1, 1024)
        _check_float(self.lambda_identity, f"{prefix}.lambda_identity", 0.0, 100.0)
        if not isinstance(self.method_params, dict) or not all(isinstance(k, str) for k in self.method_params):
            raise ContractError(f"{prefix}.method_params", "must be an object with string keys", "{}")
        for key, value in self.method_params.items():
            if not isinstance(value, (int, float, str, bool)) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                raise ContractError(
                    f"{prefix}.method_params.{key}", f"unsupported value {value!r}", "finite numbers, strings, booleans"
                )
        _check_int(self.checkpoint_every, f"{prefix}.checkpoint_every", 1, 10_000_000)
        _check_int(self.preview_every, f"{prefix}.preview_every", 1, 10_000_000)


@dataclass
class ExportSettings:
    """How the edited field becomes a textured mesh."""

    grid_resolution: int = 256
    """Marching-cubes grid resolution per axis."""
    face_budget: int = 20000
    """Faces kept after decimation (xatlas is slow on dense meshes)."""
    texture_size: int = 1024
    """Side of the baked square texture in pixels."""
    min_component_fraction: float = 0.01
    """Connected components with fewer faces than this fraction of the largest are dropped."""
    iso_density: float = 0.0
    """Density of the surface; 0 = automatic (a 1/256-of-the-box segment is half opaque). Lower it
    when a short or low-resolution fit exports nothing; raise it to shave off haze."""

    def validate(self, prefix: str = "export") -> None:
        _check_int(self.grid_resolution, f"{prefix}.grid_resolution", 16, 2048)
        _check_int(self.face_budget, f"{prefix}.face_budget", 100, 10_000_000)
        _check_int(self.texture_size, f"{prefix}.texture_size", 16, 16384)
        _check_float(self.min_component_fraction, f"{prefix}.min_component_fraction", 0.0, 1.0)
        _check_float(self.iso_density, f"{prefix}.iso_density", 0.0, 1e9)


@dataclass
class ModelSettings:
    """Which diffusion model the backend loads (diffusers layout, safetensors only)."""

    model: str = "toy"
    """Hub id (e.g. ``stabilityai/stable-diffusion-2-1-base``), a local folder, or ``toy`` for the
    embedded default model."""
    controlnet: str = ""
    """Depth ControlNet: hub id or local folder; empty = the model's own default or none."""
    precision: str = "auto"
    """One of PRECISIONS."""

    def validate(self, prefix: str = "model") -> None:
        _check_str(self.model, f"{prefix}.model", allow_empty=False)
        _check_str(self.controlnet, f"{prefix}.controlnet", allow_empty=True)
        if self.precision not in PRECISIONS:
            raise ContractError(f"{prefix}.precision", f"unknown precision {self.precision!r}", ", ".join(PRECISIONS))


@dataclass
class JobSpec:
    """One edit of one object: everything the backend needs, nothing Blender-specific."""

    job_id: str
    """Unique, file-name-safe identifier of the job."""
    object_name: str
    """Name of the source object in the Blender scene (for labels and import)."""
    source_prompt: str
    """What the object is now, e.g. ``a red cube``."""
    target_prompt: str
    """What it should become, e.g. ``a blue cube``."""
    output_dir: str
    """The job folder (absolute path); every file of the job lives under it."""
    capture_dir: str = ""
    """Folder holding ``transforms.json``; empty = ``OUTPUT_DIR/capture``. May be shared by jobs."""
    reconstruction_dir: str = ""
    """Folder of the fitted field; empty = ``OUTPUT_DIR/reconstruction``. May be shared by jobs."""
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    """Backend stages to run, a subsequence of STAGES; empty = only validate the job and capture."""
    device: str = "auto"
    """One of DEVICES."""
    seed: int = 0
    """Seed of the edit's random numbers (diffusion noise, timesteps, edit cameras); the capture's
    cameras and the fit have seeds of their own (``capture.seed``, ``reconstruct.seed``)."""
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    reconstruct: ReconstructSettings = field(default_factory=ReconstructSettings)
    edit: EditSettings = field(default_factory=EditSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    contract: int = CONTRACT_VERSION
    """Contract version this document follows."""

    # -- derived paths ------------------------------------------------------------------------
    @property
    def job_dir(self) -> Path:
        return Path(self.output_dir)

    @property
    def capture_path(self) -> Path:
        return Path(self.capture_dir) if self.capture_dir else self.job_dir / CAPTURE_DIR

    @property
    def reconstruction_path(self) -> Path:
        return Path(self.reconstruction_dir) if self.reconstruction_dir else self.job_dir / "reconstruction"

    @property
    def results_path(self) -> Path:
        return self.job_dir / RESULTS_DIR

    def validate(self) -> "JobSpec":
        """Check every field; raise :class:`ContractError` naming the first bad one."""
        if self.contract != CONTRACT_VERSION:
            raise ContractError("contract", f"version {self.contract!r} is not supported", str(CONTRACT_VERSION))
        _check_str(self.job_id, "job_id", allow_empty=False)
        if any(c in self.job_id for c in '/\\:*?"<>|') or self.job_id in (".", ".."):
            raise ContractError("job_id", f"{self.job_id!r} is not a safe file name", "letters, digits, '-', '_', '.'")
        _check_str(self.object_name, "object_name", allow_empty=False)
        _check_prompt(self.source_prompt, "source_prompt")
        _check_prompt(self.target_prompt, "target_prompt")
        _check_str(self.output_dir, "output_dir", allow_empty=False)
        if not os.path.isabs(self.output_dir):
            raise ContractError("output_dir", f"{self.output_dir!r} is relative", "an absolute folder path")
        _check_str(self.capture_dir, "capture_dir", allow_empty=True)
        _check_str(self.reconstruction_dir, "reconstruction_dir", allow_empty=True)
        if not isinstance(self.stages, list):
            raise ContractError("stages", "must be a list", ", ".join(STAGES))
        for stage in self.stages:
            if stage not in STAGES:
                raise ContractError("stages", f"unknown stage {stage!r}", ", ".join(STAGES))
        if self.stages != sorted(set(self.stages), key=STAGES.index):
            raise ContractError("stages", f"{self.stages} is not in pipeline order without repeats", ", ".join(STAGES))
        if self.device not in DEVICES:
            raise ContractError("device", f"unknown device {self.device!r}", ", ".join(DEVICES))
        _check_int(self.seed, "seed", 0, 2**31 - 1)
        self.capture.validate()
        self.reconstruct.validate()
        self.edit.validate()
        self.export.validate()
        self.model.validate()
        return self

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Any) -> "JobSpec":
        """Build and validate a spec from parsed JSON; unknown keys are errors (typos teach)."""
        spec = _from_dict(cls, data, "")
        return spec.validate()

    def write(self, path: str | os.PathLike | None = None) -> Path:
        """Validate and write atomically to ``path`` (default ``OUTPUT_DIR/job.json``)."""
        self.validate()
        target = Path(path) if path is not None else self.job_dir / JOB_FILE
        write_json_atomic(target, self.to_dict())
        return target


def load_job(path: str | os.PathLike) -> JobSpec:
    """Read and validate a job file; every failure is a :class:`ContractError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContractError(str(path), "job file does not exist", "a path to a job.json written by the extension")
    except OSError as exc:
        raise ContractError(str(path), f"cannot read the job file: {exc.strerror}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(
            str(path), f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", "a JSON object"
        ) from None
    return JobSpec.from_dict(data)


# --------------------------------------------------------------------------------------------
# Events (backend -> extension), cancel (extension -> backend), results manifest.
# --------------------------------------------------------------------------------------------


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
        if self.contract != CONTRACT_VERSION:
            raise ContractError("event.contract", f"version {self.contract!r} is not supported", str(CONTRACT_VERSION))
        if self.type not in EVENT_TYPES:
            raise ContractError("event.type", f"unknown event type {self.type!r}", ", ".join(EVENT_TYPES))
        if self.stage and self.stage not in STAGES + ("validate",):
            raise ContractError("event.stage", f"unknown stage {self.stage!r}", ", ".join(STAGES + ("validate",)))
        _check_int(self.step, "event.step", 0, 2**62)
        _check_int(self.total, "event.total", 0, 2**62)
        if self.type == "error" and not self.message:
            raise ContractError("event.message", "an error event needs a message", "non-empty text")
        return self

    def to_json(self) -> str:
        data = {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", {}, 0, 0.0) or k in ("type", "contract")}
        data["time"] = self.time or time.time()
        return json.dumps(_to_jsonable(data), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> "Event":
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ContractError("event", f"malformed event line: {exc.msg}", "one JSON object per line") from None
        return _from_dict(cls, data, "event.").validate()


class EventWriter:
    """Appends events to ``events.jsonl``, one flushed line each (readers may tail the file)."""

    def __init__(self, path: str | os.PathLike, echo: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._echo = echo

    def emit(self, event_type: str, **fields: Any) -> Event:
        event = Event(type=event_type, time=time.time(), **fields).validate()
        line = event.to_json()
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
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
    """Written to ``cancel.json`` by the extension; the backend checkpoints and stops."""

    reason: str = "user"
    """Why: ``user`` (Cancel button), ``release`` (Release backend), ``shutdown`` (Blender quits)."""
    time: float = 0.0
    contract: int = CONTRACT_VERSION


def request_cancel(job_dir: str | os.PathLike, reason: str = "user") -> Path:
    """Ask the backend working in ``job_dir`` to stop at its next step."""
    path = Path(job_dir) / CANCEL_FILE
    write_json_atomic(path, _to_jsonable(dataclasses.asdict(CancelRequest(reason=reason, time=time.time()))))
    return path


def cancel_requested(job_dir: str | os.PathLike) -> bool:
    return (Path(job_dir) / CANCEL_FILE).exists()


def clear_cancel(job_dir: str | os.PathLike) -> None:
    """Remove a stale cancel request before (re)starting a job."""
    try:
        os.remove(Path(job_dir) / CANCEL_FILE)
    except FileNotFoundError:
        pass


@dataclass
class ResultsManifest:
    """``results/manifest.json``: what the backend produced, relative to the results folder."""

    job_id: str
    status: str = "finished"
    """``finished`` (all requested stages ran)."""
    files: dict[str, str] = field(default_factory=dict)
    """Role -> file name inside ``results/``: ``mesh`` (GLB), ``texture`` (PNG), ``field`` ..."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Figures measured by the stages, e.g. ``heldout_psnr_db``, ``depth_error_rel``."""
    normalization: list[list[float]] = field(default_factory=list)
    """4x4 matrix mapping the object's local frame to the normalised capture frame (from
    ``transforms.json``); the mesh in ``files["mesh"]`` is already in the object's local frame."""
    source_prompt: str = ""
    target_prompt: str = ""
    method: str = ""
    seed: int = 0
    contract: int = CONTRACT_VERSION

    def validate(self, results_dir: str | os.PathLike | None = None) -> "ResultsManifest":
        if self.contract != CONTRACT_VERSION:
            raise ContractError("manifest.contract", f"version {self.contract!r} is not supported", str(CONTRACT_VERSION))
        _check_str(self.job_id, "manifest.job_id", allow_empty=False)
        if self.status != "finished":
            raise ContractError("manifest.status", f"unexpected status {self.status!r}", "finished")
        for role, name in self.files.items():
            if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in Path(name).parts:
                raise ContractError(f"manifest.files.{role}", f"{name!r} is not a relative file name", "a file inside results/")
            if results_dir is not None and not (Path(results_dir) / name).is_file():
                raise ContractError(
                    f"manifest.files.{role}",
                    f"{name!r} is missing from {results_dir}",
                    "re-run the job's export stage (the results folder is incomplete)",
                )
        return self

    def write(self, results_dir: str | os.PathLike) -> Path:
        self.validate(results_dir)
        path = Path(results_dir) / MANIFEST_FILE
        write_json_atomic(path, _to_jsonable(dataclasses.asdict(self)))
        return path


def load_manifest(results_dir: str | os.PathLike) -> ResultsManifest:
    """Read and check a results manifest, including that every listed file exists."""
    path = Path(results_dir) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(str(path), "results manifest does not exist", "run the job to completion first") from None
    except json.JSONDecodeError as exc:
        raise ContractError(str(path), f"malformed JSON: {exc.msg}", "a manifest written by the backend") from None
    return _from_dict(ResultsManifest, data, "manifest.").validate(results_dir)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to a temporary file in the same folder, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``, naming the field of every mismatch."""
    name = prefix.rstrip(".") or "job"
    if not isinstance(data, dict):
        raise ContractError(name, f"expected a JSON object, got {type(data).__name__}", "a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ContractError(f"{prefix}{unknown[0]}", "unknown field", ", ".join(sorted(fields)))
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = fields[key]
        nested = _NESTED.get(f.name) if cls is JobSpec else None
        if nested is not None:
            kwargs[key] = _from_dict(nested, value, f"{prefix}{key}.")
        elif isinstance(value, list) and f.name.endswith(("_deg", "distance")) and len(value) == 2:
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    missing = [f.name for f in fields.values() if f.name not in kwargs and _required(f)]
    if missing:
        raise ContractError(f"{prefix}{missing[0]}", "missing required field", "see blender_piva/contract.py")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        raise ContractError(name, str(exc)) from None


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]


_NESTED = {
    "capture": CaptureSettings,
    "reconstruct": ReconstructSettings,
    "edit": EditSettings,
    "export": ExportSettings,
    "model": ModelSettings,
}


def _check_int(value: Any, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(name, f"expected an integer, got {value!r}", f"integers {low}..{high}")
    if not low <= value <= high:
        raise ContractError(name, f"{value} is out of range", f"integers {low}..{high}")


def _check_float(value: Any, name: str, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ContractError(name, f"expected a finite number, got {value!r}", f"numbers in [{low}, {high}]")
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ContractError(name, f"{value} is out of range", f"numbers in {bracket}{low}, {high}]")


def _check_range(value: Any, name: str, low: float, high: float) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ContractError(name, f"expected [min, max], got {value!r}", f"two numbers in [{low}, {high}]")
    for v in value:
        _check_float(v, name, low, high)
    if value[0] > value[1]:
        raise ContractError(name, f"min {value[0]} is greater than max {value[1]}", "min <= max")


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise ContractError(name, f"expected true or false, got {value!r}", "true, false")


def _check_str(value: Any, name: str, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise ContractError(name, f"expected text, got {value!r}", "a string")
    if not allow_empty and not value.strip():
        raise ContractError(name, "is empty", "non-empty text")


def _check_prompt(value: Any, name: str) -> None:
    _check_str(value, name, allow_empty=False)
    if len(value) > 1000:
        raise ContractError(name, f"is {len(value)} characters long", "at most 1000 characters")
