"""The job spec (``job.json``): one edit of one object, written by the extension, read by the backend.

Paths: ``output_dir`` is absolute and is the folder of the job file (the backend refuses a
``job.json`` outside it). ``capture_dir`` and ``reconstruction_dir`` may be relative: they are
resolved against the job file's folder (``output_dir``), never against the current folder of the
process that reads the spec, so ``"capture_dir": "../shared/capture"`` means the same folder to the
extension, to the backend and to a script started anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._schema import ContractError, check_int, check_prompt, check_str, check_version, from_dict, to_jsonable
from .atomic import write_json_atomic
from .layout import CAPTURE_DIR, CONTRACT_VERSION, DEVICES, JOB_FILE, RESULTS_DIR, STAGES
from .settings import CaptureSettings, EditSettings, ExportSettings, ModelSettings, ReconstructSettings

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
    negative_prompt: str = ""
    """What the edit should steer away from, e.g. ``blurry, low quality``: the prompt of
    classifier-free guidance's unconditional branch (diffusers' ``negative_prompt``). Empty = the
    empty prompt, the behaviour without one. At most 1000 characters."""
    capture_dir: str = ""
    """Folder holding ``transforms.json``; empty = ``OUTPUT_DIR/capture``; a relative path is
    resolved against ``OUTPUT_DIR`` (the job file's folder). May be shared by jobs."""
    reconstruction_dir: str = ""
    """Folder of the fitted field; empty = ``OUTPUT_DIR/reconstruction``; a relative path is
    resolved against ``OUTPUT_DIR`` (the job file's folder). May be shared by jobs."""
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
        return self._in_job_dir(self.capture_dir or CAPTURE_DIR)

    @property
    def reconstruction_path(self) -> Path:
        return self._in_job_dir(self.reconstruction_dir or "reconstruction")

    def _in_job_dir(self, path: str) -> Path:
        """``path`` if absolute, else resolved against the job folder (``..`` folded away)."""
        return Path(path) if os.path.isabs(path) else Path(os.path.normpath(self.job_dir / path))

    def owner_inputs(self) -> dict[str, Any]:
        """What the job folder's owner marker (``contract.ownership``) fingerprints: which object,
        which edit (prompts, the negative prompt when set, method, seed). The settings are
        fingerprinted by the folders they shape (capture, reconstruction, ``edit/``, ``export/``);
        the stages to run, the device and the paths are not part of the job's identity."""
        return {
            "object_name": self.object_name,
            "source_prompt": self.source_prompt,
            "target_prompt": self.target_prompt,
            "method": self.edit.method,
            "seed": self.seed,
            # only when set: the fingerprints of jobs without one stay what they were
            **({"negative_prompt": self.negative_prompt} if self.negative_prompt else {}),
        }

    @property
    def results_path(self) -> Path:
        return self.job_dir / RESULTS_DIR

    def validate(self) -> "JobSpec":
        """Check every field; raise :class:`ContractError` naming the first bad one."""
        check_version(self.contract, "contract")
        check_str(self.job_id, "job_id", allow_empty=False)
        if any(c in self.job_id for c in '/\\:*?"<>|') or self.job_id in (".", ".."):
            raise ContractError("job_id", f"{self.job_id!r} is not a safe file name", "letters, digits, '-', '_', '.'")
        check_str(self.object_name, "object_name", allow_empty=False)
        check_prompt(self.source_prompt, "source_prompt")
        check_prompt(self.target_prompt, "target_prompt")
        check_str(self.negative_prompt, "negative_prompt", allow_empty=True)
        if self.negative_prompt.strip():  # a prompt like the others; empty = the empty prompt
            check_prompt(self.negative_prompt, "negative_prompt")
        check_str(self.output_dir, "output_dir", allow_empty=False)
        if not os.path.isabs(self.output_dir):
            raise ContractError("output_dir", f"{self.output_dir!r} is relative", "an absolute folder path")
        check_str(self.capture_dir, "capture_dir", allow_empty=True)
        check_str(self.reconstruction_dir, "reconstruction_dir", allow_empty=True)
        if not isinstance(self.stages, list):
            raise ContractError("stages", "must be a list", ", ".join(STAGES))
        for stage in self.stages:
            if stage not in STAGES:
                raise ContractError("stages", f"unknown stage {stage!r}", ", ".join(STAGES))
        if self.stages != sorted(set(self.stages), key=STAGES.index):
            raise ContractError("stages", f"{self.stages} is not in pipeline order without repeats", ", ".join(STAGES))
        if self.device not in DEVICES:
            raise ContractError("device", f"unknown device {self.device!r}", ", ".join(DEVICES))
        check_int(self.seed, "seed", 0, 2**31 - 1)
        self.capture.validate()
        self.reconstruct.validate()
        if "reconstruct" in self.stages and self.reconstruct.steps < 1:
            raise ContractError(
                "reconstruct.steps", "is 0 but the reconstruct stage runs: a fit needs at least one step",
                "integers 1..10000000, or leave reconstruct out of the stages",
            )
        self.edit.validate()
        self.export.validate()
        self.model.validate()
        return self

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Any) -> "JobSpec":
        """Build and validate a spec from parsed JSON; unknown keys are errors (typos teach)."""
        spec = from_dict(cls, data, "")
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

