"""The export stage: the edited field (or the reconstruction when no edit ran) as a textured mesh.

``JOB/export`` records what was exported (``export.json``); it is reused only when its owner marker
says it was made from this field with these settings and every file it lists is in ``results/``.
"""

from __future__ import annotations

import json

import numpy as np

from blender_piva import contract
from blender_piva.contract.capture import LightRig

from . import folders
from .context import JobContext, StageError

RECORD_FILE = "export.json"


def run(ctx: JobContext) -> dict:
    from ..export.extract import EmptyFieldError
    from ..export.pipeline import export_field
    from ..field.ngp_field import load_field

    spec = ctx.spec
    results = spec.results_path
    out_dir = spec.job_dir / "export"
    source_dir = spec.reconstruction_path
    source = folders.finished_owner(source_dir, "reconstruction", folders.reconstruction_inputs(spec), needed_by="export")
    if "edit" in spec.stages:
        source_dir = spec.job_dir / "edit"
        source = folders.finished_owner(
            source_dir, "edit", folders.edit_inputs(spec, source.fingerprint), needed_by="export"
        )
    owner = folders.claim(out_dir, "export", folders.export_inputs(spec, source.fingerprint))
    reused = _finished_record(out_dir, owner, results)
    if reused is not None:
        ctx.events.emit("log", stage="export", message="export already done; reusing it")
        return reused
    if owner.done:  # marked done, but its record or a result file is missing: export again
        owner = contract.set_state(out_dir, owner, "working")
    field_dir = source_dir / folders.FIELD_DIR
    try:
        field = load_field(field_dir, device=ctx.device)
    except FileNotFoundError as exc:
        raise StageError(str(exc), "run the reconstruct (and edit) stages first") from None
    transforms = json.loads((spec.capture_path / contract.TRANSFORMS_FILE).read_text())
    normalization = np.asarray(transforms["normalization"], dtype=np.float64)
    try:
        # Captures written before the rig was recorded bake the lit colours, as they always did.
        light_rig = LightRig.from_json(transforms["light_rig"]) if "light_rig" in transforms else None
    except ValueError as exc:
        raise StageError(str(exc), "re-capture the object") from None
    try:
        out = export_field(
            field,
            spec.export,
            np.linalg.inv(normalization),
            results,
            device=ctx.device,
            reporter=ctx.reporter("export"),
            light_rig=light_rig,
        )
    except EmptyFieldError as exc:
        raise StageError(
            str(exc), "the field has no surface: check the capture and the reconstruction's preview, or lower the edit steps"
        ) from None
    metrics = {f"export_{k}_seconds": float(v) for k, v in out["timings_s"].items()}
    metrics["export_faces"] = float(out["faces"].get("decimate", out["faces"].get("final", 0)) or 0)
    record = {"files": out["files"], "metrics": metrics}
    contract.write_json_atomic(out_dir / RECORD_FILE, record)
    contract.set_state(out_dir, owner, "done")
    return record


def _finished_record(out_dir, owner: contract.FolderOwner, results) -> dict | None:
    """The record of a finished export: marker done, ``export.json`` readable, every listed file
    present and non-empty in ``results/``; else None."""
    if not owner.done:
        return None
    try:
        record = json.loads((out_dir / RECORD_FILE).read_text(encoding="utf-8"))
        files = record["files"]
        present = all((results / name).is_file() and (results / name).stat().st_size > 0 for name in files.values())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        return None
    return record if present else None
