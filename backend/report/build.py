"""The report of one job (``results/report.html`` and ``results/report.png``), and the runner's
wrapper that never lets a report fail a job.

1. gather the folder (``record.read_job``): spec, events, previews, manifest;
2. draw the loss curves (``curves.plot_losses``);
3. the before/after comparison: the held-out views (``views.py``) when the job has them, else
   the first and last preview of its last stage that rendered any (one camera, over time);
4. the previews over time, at most ``filmstrip_per_stage`` per stage, the last one always kept;
5. write ``report.html`` (``page.py``) and ``report.png`` (the same parts, tiled), atomically.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blender_piva import contract
from blender_piva.contract.layout import REPORT_FILE, REPORT_IMAGE_FILE

from . import images
from .curves import plot_losses
from .page import Figure, ReportContent, render_page
from .record import JobRecord, PreviewFrame, read_job
from .views import INDEX_FILE, VIEWS_DIR, load_views, views_dir, write_views

if TYPE_CHECKING:
    import torch

MANIFEST_ROLES = {"report": REPORT_FILE, "report_image": REPORT_IMAGE_FILE}
"""Results-manifest roles of the report's files (``ResultsManifest.files``)."""
VIEWS_ROLE = "views"
"""Results-manifest role of the held-out views' index (``views/views.json``)."""


@dataclass
class ReportSettings:
    """How big the report's pictures are."""

    view_size: int = 128
    """Longest side of the held-out renders, pixels."""
    max_views: int = 8
    """At most this many held-out cameras are compared."""
    filmstrip_per_stage: int = 10
    """At most this many previews per stage in the filmstrip (evenly spread, the last one kept)."""
    thumb_size: int = 112
    """Longest side of a filmstrip image in ``report.png``, pixels."""


@dataclass
class ReportFiles:
    """What :func:`build_report` wrote."""

    html: Path
    png: Path
    record: JobRecord


def build_report(
    job_dir: str | Path,
    *,
    manifest: dict | None = None,
    status: str | None = None,
    message: str | None = None,
    settings: ReportSettings | None = None,
) -> ReportFiles:
    """Write ``job_dir/results/report.html`` and ``report.png`` from what the folder holds.

    ``manifest``: the results manifest as a dict when it is not written yet (the runner); None
    reads it. ``status``: the job's status when the events do not say it yet (``finished`` before
    the ``finished`` event); ``message``: why it stopped, likewise. A missing or broken events
    file, preview or manifest is shown as a problem in the report, never raised.
    """
    settings = settings or ReportSettings()
    job_dir = Path(job_dir)
    # 1. what the folder holds
    record = read_job(job_dir, manifest)
    if status is not None:
        record.status = status
    if message is not None:
        record.message = message
    results = job_dir / contract.RESULTS_DIR
    # 2. loss curves
    losses_png = plot_losses(record.losses)
    # 3. before and after
    comparison, note = _comparison(record, results)
    # 4. previews over time
    filmstrip = _filmstrip(record.previews, settings.filmstrip_per_stage)
    content = ReportContent(record, losses_png, comparison, note, filmstrip)
    # 5. the page and its picture
    html_path, png_path = results / REPORT_FILE, results / REPORT_IMAGE_FILE
    contract.write_bytes_atomic(html_path, render_page(content).encode("utf-8"))
    contract.write_bytes_atomic(png_path, images.png_bytes(_picture(content, settings)))
    return ReportFiles(html_path, png_path, record)


def _comparison(record: JobRecord, results: Path) -> tuple[list[tuple[str, list[Figure]]], str]:
    views = load_views(results)
    if views is not None:
        folder = views_dir(results)
        rows = []
        for label, names in (("source", views.source), (views.result_label or "result", views.result)):
            rows.append((label, [Figure((folder / n).read_bytes(), f"camera {i}") for i, n in enumerate(names)]))
        which = "held-out" if views.split == "eval" else "training (the capture has no held-out view)"
        return rows, f"The capture's {which} views and the {views.result_label} field rendered from the same cameras."
    for stage in reversed(record.stages or list(contract.STAGES)):
        frames = [p for p in record.previews if p.stage == stage]
        if len(frames) >= 1:
            first, last = frames[0], frames[-1]
            row = [_figure(first, f"step {first.step}")]
            if last is not first:
                row.append(_figure(last, f"step {last.step}"))
            return [(f"{stage} previews", [f for f in row if f is not None])], (
                f"No held-out renders: the first and last preview of the {stage} stage (one camera, over time)."
            )
    return [], ""


def _figure(frame: PreviewFrame, caption: str) -> Figure | None:
    try:
        return Figure(frame.path.read_bytes(), caption)
    except OSError:
        return None


def _filmstrip(previews: list[PreviewFrame], per_stage: int) -> list[tuple[str, list[Figure]]]:
    rows = []
    for stage in dict.fromkeys(p.stage for p in previews):
        frames = [p for p in previews if p.stage == stage]
        if len(frames) > per_stage:  # evenly spread, first and last kept
            picks = sorted({round(i * (len(frames) - 1) / (per_stage - 1)) for i in range(per_stage)})
            frames = [frames[i] for i in picks]
        figures = [f for f in (_figure(p, f"step {p.step}") for p in frames) if f is not None]
        if figures:
            rows.append((stage, figures))
    return rows


def _picture(content: ReportContent, settings: ReportSettings):
    """``report.png``: the title, the comparison, the curves and the filmstrip, one below the other."""
    import io

    from PIL import Image

    record = content.record
    label_w = 140
    title = record.title.replace("\u2192", "->")  # Pillow's default font has no arrow
    lines = f"{title}\n{record.status} | method {record.method or '?'} | seed {record.seed} | job {record.job_id}"
    if record.metrics:
        lines += "\n" + ", ".join(f"{k} {v:.4g}" for k, v in sorted(record.metrics.items())[:8])
    if record.message:
        lines += "\n" + record.message
    blocks = []
    for rows, size in ((content.comparison, settings.view_size), (content.filmstrip, settings.thumb_size)):
        for label, figures in rows:
            tiles = [images.square(Image.open(io.BytesIO(f.png)).convert("RGB"), size) for f in figures]
            blocks.append(images.hstack([images.label_tile(label, label_w, size), *tiles]))
    if content.losses_png is not None:
        blocks.insert(len(content.comparison), Image.open(io.BytesIO(content.losses_png)).convert("RGB"))
    width = max([b.width for b in blocks] + [640])
    heading = images.label_tile(lines, width, 24 + 19 * len(images.wrap(lines, width - 16)))
    return images.vstack([heading, *blocks])


def report_after_run(
    spec: contract.JobSpec,
    events: contract.EventWriter,
    status: str,
    *,
    message: str | None = None,
    manifest: contract.ResultsManifest | None = None,
    device: "torch.device | str | None" = None,
    settings: ReportSettings | None = None,
) -> dict[str, str]:
    """The runner's report at the end of a job; returns the manifest roles of the files it wrote.

    ``device``: render the held-out views with it first (a finished job; None = no rendering, the
    cheap report of a failed or cancelled one). Never raises: a failure is a ``log`` event (and
    its traceback goes to stderr, i.e. ``backend.log``) and the job goes on as if there were no
    report.
    """
    import dataclasses

    settings = settings or ReportSettings()
    files: dict[str, str] = {}
    if device is not None:
        try:
            write_views(spec, device, size=settings.view_size, max_views=settings.max_views)
            files[VIEWS_ROLE] = f"{VIEWS_DIR}/{INDEX_FILE}"
        except Exception as exc:  # a report never fails the job
            _say(events, f"held-out views not rendered for the report: {type(exc).__name__}: {exc}")
    try:
        build_report(
            spec.job_dir,
            manifest=dataclasses.asdict(manifest) if manifest is not None else None,
            status=status,
            message=message,
            settings=settings,
        )
        files.update(MANIFEST_ROLES)
    except Exception as exc:  # a report never fails the job
        _say(events, f"job report not written: {type(exc).__name__}: {exc}")
    return files


def _say(events: contract.EventWriter, message: str) -> None:
    traceback.print_exc(file=sys.stderr)
    try:
        events.emit("log", message=message)
    except (OSError, contract.ContractError) as exc:
        print(f"PIVA backend: {message}; the event could not be written: {exc}", file=sys.stderr)
