"""What a job folder holds, read leniently: the report shows what there is.

A job that failed, was cancelled or is still running may have a truncated ``events.jsonl``, no
manifest or previews that were removed. :func:`read_job` never raises for any of that: each thing it
could not read becomes one sentence in :attr:`JobRecord.problems`, printed in the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from blender_piva import contract

TERMINAL_STATUS = {"finished": "finished", "cancelled": "cancelled", "error": "failed"}
"""Terminal event type -> the job's status in the report."""


@dataclass
class PreviewFrame:
    """One preview render announced by a ``preview`` event."""

    stage: str
    """The stage that rendered it (``reconstruct``, ``edit``)."""
    step: int
    """Its step within the stage."""
    path: Path
    """The PNG (found in ``previews/`` when the event's absolute path no longer exists)."""


@dataclass
class JobRecord:
    """Everything the report draws, gathered from one job folder."""

    job_dir: Path
    """The job folder."""
    job_id: str = ""
    source_prompt: str = ""
    target_prompt: str = ""
    method: str = ""
    seed: int = 0
    stages: list[str] = field(default_factory=list)
    """Stages the job asked for, in order (from ``job.json``)."""
    status: str = "incomplete"
    """``finished``, ``failed``, ``cancelled`` (the last terminal event) or ``incomplete`` (none)."""
    message: str = ""
    """The terminal event's message (why it failed or where it stopped), with its hint."""
    losses: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    """Stage -> loss name -> [(step, value)] from the ``progress`` events, in file order."""
    previews: list[PreviewFrame] = field(default_factory=list)
    """Previews that still exist, in event order."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The results manifest's metrics (empty without a manifest)."""
    problems: list[str] = field(default_factory=list)
    """What could not be read, one sentence each."""

    @property
    def title(self) -> str:
        if self.target_prompt:
            return f"{self.source_prompt or '?'} \u2192 {self.target_prompt}"
        return self.job_id or self.job_dir.name


def read_job(job_dir: str | Path, manifest: dict | None = None) -> JobRecord:
    """Gather ``job_dir``'s spec, events, previews and manifest; never raises for a broken file.

    ``manifest``: the results manifest as a dict when the caller has it before it is written (the
    runner); None reads ``results/manifest.json``.
    """
    job_dir = Path(job_dir)
    record = JobRecord(job_dir=job_dir, job_id=job_dir.name)
    _read_spec(record)
    _read_events(record)
    if manifest is None:
        manifest = _read_json(job_dir / contract.RESULTS_DIR / contract.MANIFEST_FILE, record, missing_ok=True)
    if isinstance(manifest, dict):
        _read_manifest(record, manifest)
    return record


def _read_json(path: Path, record: JobRecord, missing_ok: bool = False):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not missing_ok:
            record.problems.append(f"{path.name} is missing")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        record.problems.append(f"{path.name} cannot be read ({type(exc).__name__}: {exc})")
    return None


def _read_spec(record: JobRecord) -> None:
    data = _read_json(record.job_dir / contract.JOB_FILE, record)
    if not isinstance(data, dict):
        return
    edit = data.get("edit") if isinstance(data.get("edit"), dict) else {}
    record.job_id = str(data.get("job_id") or record.job_id)
    record.source_prompt = str(data.get("source_prompt") or "")
    record.target_prompt = str(data.get("target_prompt") or "")
    record.method = str(edit.get("method") or "")
    record.seed = data.get("seed") if isinstance(data.get("seed"), int) else 0
    stages = data.get("stages")
    record.stages = [s for s in stages if isinstance(s, str)] if isinstance(stages, list) else []


def _read_events(record: JobRecord) -> None:
    path = record.job_dir / contract.EVENTS_FILE
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        record.problems.append(f"{contract.EVENTS_FILE} is missing: the backend wrote no events")
        return
    except OSError as exc:
        record.problems.append(f"{contract.EVENTS_FILE} cannot be read ({exc.strerror or exc})")
        return
    bad = 0
    for raw in lines:
        if not raw.strip():
            continue
        try:
            event = contract.Event.from_json(raw.decode("utf-8"))
        except (contract.ContractError, UnicodeDecodeError, TypeError, ValueError):
            bad += 1
            continue
        _take(record, event)
    if bad:
        record.problems.append(f"{bad} line(s) of {contract.EVENTS_FILE} are not valid events and were skipped")


def _take(record: JobRecord, event: contract.Event) -> None:
    if event.type == "progress" and event.stage:
        curves = record.losses.setdefault(event.stage, {})
        for name, value in event.losses.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                curves.setdefault(name, []).append((event.step, float(value)))
    elif event.type == "preview" and event.preview:
        path = Path(event.preview)
        if not path.is_file():  # the job folder was moved: look in its own previews/
            path = record.job_dir / contract.PREVIEW_DIR / path.name
        if path.is_file():
            record.previews.append(PreviewFrame(event.stage, event.step, path))
    elif event.type in TERMINAL_STATUS:
        record.status = TERMINAL_STATUS[event.type]
        record.message = event.message + (f" (how to fix: {event.hint})" if event.hint else "")
    elif event.type == "started":  # a run again: its own end decides
        record.status, record.message = "incomplete", ""


def _read_manifest(record: JobRecord, data: dict) -> None:
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        record.metrics = {
            str(k): float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
    for key in ("source_prompt", "target_prompt", "method"):
        if isinstance(data.get(key), str) and data[key]:
            setattr(record, key, data[key])
    if isinstance(data.get("seed"), int):
        record.seed = data["seed"]
