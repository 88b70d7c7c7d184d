"""Which folders a stage may reuse or write, by their owner markers (``contract.ownership``).

Each stage folder holds a ``.piva-owner.json`` whose fingerprint covers the inputs that determine
its content:

* reconstruction: the digest of the capture's ``transforms.json``, the capture's own fingerprint
  (its marker, written by the extension: the object as it looked and the capture settings) and
  the fit settings;
* ``JOB/edit``: the reconstruction it started from (its fingerprint), the prompts (the negative
  one when set), the seed, the edit and model settings (not the memory mode);
* ``JOB/export``: the field it exported (the edit's or the reconstruction's fingerprint) and the
  export settings.

A stage claims its folder before writing anything into it; a folder holding anything else (files
this job did not write, or a folder made for other inputs) stops the job with a
:class:`~backend.stages.context.StageError` that names the folder. "Done" means the marker says so
AND the expected files are there and load (:func:`finished_field`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from blender_piva import contract

from .context import StageError

FIELD_DIR = "field"
METRICS_FILE = "metrics.json"


def transforms_digest(capture_dir: Path) -> str:
    """sha256 of the capture's ``transforms.json`` bytes."""
    return hashlib.sha256((Path(capture_dir) / contract.TRANSFORMS_FILE).read_bytes()).hexdigest()


def capture_fingerprint(capture_dir: Path) -> str:
    """The fingerprint the extension recorded in the capture's marker ("" when it has none)."""
    try:
        owner = contract.read_owner(capture_dir)
    except contract.ContractError:
        return ""
    return owner.fingerprint if owner is not None and owner.kind == "capture" else ""


def reconstruction_inputs(spec: contract.JobSpec) -> dict[str, Any]:
    inputs = {
        "transforms_sha256": transforms_digest(spec.capture_path),
        "capture": capture_fingerprint(spec.capture_path),
        "reconstruct": contract.content_settings(spec.reconstruct),
    }
    if spec.reconstruct.field == "latent":  # a latent fit lives in its model's VAE latent space
        inputs["model"] = spec.model.model
    return inputs


MODEL_NOT_CONTENT = ("memory",)
"""ModelSettings fields that change how fast the edit runs and its peak memory, never the edited
field: left out of the edit folder's fingerprint (a job resumed in the ``low`` memory mode after
running out of memory keeps its checkpoints)."""


def edit_inputs(spec: contract.JobSpec, field_fingerprint: str) -> dict[str, Any]:
    """What ``JOB/edit`` is made from. Keys added after folders were first written (the negative
    prompt) appear only when set, so the fingerprints of existing edit folders stay the same."""
    inputs: dict[str, Any] = {
        "field": field_fingerprint,
        "source_prompt": spec.source_prompt,
        "target_prompt": spec.target_prompt,
        "seed": spec.seed,
        "edit": contract.content_settings(spec.edit),
        "model": {k: v for k, v in dataclasses.asdict(spec.model).items() if k not in MODEL_NOT_CONTENT},
    }
    if spec.negative_prompt:
        inputs["negative_prompt"] = spec.negative_prompt
    return inputs


def export_inputs(spec: contract.JobSpec, field_fingerprint: str) -> dict[str, Any]:
    return {"field": field_fingerprint, "export": contract.content_settings(spec.export)}


def check(folder: Path, kind: str, inputs: dict[str, Any]) -> contract.FolderOwner | None:
    """:func:`contract.check_owner` with its refusal as a StageError (nothing is written)."""
    try:
        return contract.check_owner(folder, kind, inputs)
    except contract.FolderNotOurs as exc:
        raise StageError(str(exc), exc.hint) from None


def claim(folder: Path, kind: str, inputs: dict[str, Any], allowed: tuple[str, ...] = ()) -> contract.FolderOwner:
    """:func:`contract.claim_folder` with its refusal as a StageError."""
    try:
        return contract.claim_folder(folder, kind, inputs, allowed)
    except contract.FolderNotOurs as exc:
        raise StageError(str(exc), exc.hint) from None


def claim_job_folder(spec: contract.JobSpec) -> contract.FolderOwner:
    """Claim the job folder for this job (the extension claims it first when it writes job.json).

    A folder without a marker may hold only what comes before a job's first run: the job file,
    the backend's log and events, a cancel request, and the capture when it lives inside."""
    allowed = contract.ownership.job_names_before_first_run(spec.job_dir, spec.capture_path)
    return claim(spec.job_dir, "job", spec.owner_inputs(), allowed)


def leftover_roots(spec: contract.JobSpec) -> list[Path]:
    """The folder trees a run cleans of dead processes' temporaries: the job folder, and the
    capture and reconstruction folders (with their siblings' partial captures) when outside it."""
    job_dir = Path(spec.job_dir).resolve()
    roots = [job_dir]
    for folder in (spec.capture_path, spec.reconstruction_path):
        folder = folder.resolve()
        if job_dir not in folder.parents and folder != job_dir:
            roots.append(folder)
    return roots


def read_metrics(folder: Path) -> dict[str, float] | None:
    """``folder/metrics.json`` as a dict of numbers, None when missing or unreadable."""
    try:
        data = json.loads((Path(folder) / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return {str(k): float(v) for k, v in data.items()}
    except (TypeError, ValueError):
        return None


def field_loads(field_dir: Path) -> bool:
    """True when ``field_dir`` holds a field :func:`~backend.field.ngp_field.load_field` rebuilds."""
    from safetensors import SafetensorError

    from ..field.ngp_field import load_field

    try:
        load_field(field_dir, device="cpu")
    except (OSError, ValueError, RuntimeError, SafetensorError):
        return False
    return True


def finished_field(folder: Path, owner: contract.FolderOwner | None) -> dict[str, float] | None:
    """The metrics of a finished stage folder holding a field, or None when it is not finished:
    its marker must say done, ``metrics.json`` must read and ``field/`` must load."""
    if owner is None or not owner.done:
        return None
    metrics = read_metrics(folder)
    if metrics is None or not field_loads(Path(folder) / FIELD_DIR):
        return None
    return metrics


def finished_owner(folder: Path, kind: str, inputs: dict[str, Any], needed_by: str) -> contract.FolderOwner:
    """The marker of the finished ``kind`` folder a later stage starts from; a StageError that says
    which stage to run when it is missing, unfinished or made from other inputs."""
    owner = check(folder, kind, inputs)
    if finished_field(folder, owner) is None:
        raise StageError(
            f"{folder} holds no finished {kind} for this job's inputs, which the {needed_by} stage starts from",
            f"run the {'reconstruct' if kind == 'reconstruction' else kind} stage first (include it in the job's stages)",
        )
    assert owner is not None
    return owner
