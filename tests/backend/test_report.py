"""The job report and the contact sheet, from synthetic job folders (no torch except where a field
is rendered): what exists is drawn, what is broken is named, nothing raises into the runner."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.report import views as report_views
from backend.report.build import MANIFEST_ROLES, build_report, report_after_run
from backend.report.contact_sheet import contact_sheet
from backend.report.record import read_job
from blender_piva import contract
from blender_piva.contract.layout import REPORT_FILE, REPORT_IMAGE_FILE

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _png(path: Path, colour: tuple[int, int, int], size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def make_job(root: Path, name: str = "job", target: str = "a blue cube", seed: int = 0, finished: bool = True) -> Path:
    """A job folder as a run leaves it: job.json, events with losses and previews, a manifest."""
    spec = contract.JobSpec(
        job_id=name, object_name="Cube", source_prompt="a red cube", target_prompt=target,
        output_dir=str(root / name), seed=seed, device="cpu",
    )
    spec.write()
    job = spec.job_dir
    events = contract.EventWriter(job / contract.EVENTS_FILE)
    events.emit("started", message="backend test")
    for stage, total in (("reconstruct", 40), ("edit", 20)):
        events.emit("stage", stage=stage, total=total)
        for step in range(10, total + 1, 10):
            losses = {"loss": 1.0 / step, "psnr": 10.0 + step}
            events.emit("progress", stage=stage, step=step, total=total, losses=losses)
            preview = _png(job / contract.PREVIEW_DIR / f"{stage}_{step:06d}.png", (step * 5, 0, 255 - step * 5))
            events.emit("preview", stage=stage, step=step, preview=str(preview))
    if finished:
        results = job / contract.RESULTS_DIR
        results.mkdir()
        contract.ResultsManifest(
            job_id=name, metrics={"heldout_psnr_db": 27.5, "edit_seconds": 3.0}, target_prompt=target, seed=seed,
            method="piva",
        ).write(results)
        events.emit("finished", results=str(results / contract.MANIFEST_FILE))
    return job


def add_views(job: Path, colour: tuple[int, int, int], cameras: int = 4, size: int = 16) -> None:
    """results/views/ as the runner writes it at the end of a finished job."""
    folder = job / contract.RESULTS_DIR / report_views.VIEWS_DIR
    views = report_views.HeldoutViews(result_label="edit", size=size)
    for i in range(cameras):
        _png(folder / f"source_{i:02d}.png", (200, 30, 30), size)
        _png(folder / f"result_{i:02d}.png", colour, size)
        views.source.append(f"source_{i:02d}.png")
        views.result.append(f"result_{i:02d}.png")
        views.cameras.append(f"images/eval_{i:04d}.png")
    contract.write_json_atomic(folder / report_views.INDEX_FILE, dataclasses.asdict(views))


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def test_report_embeds_the_loss_plot_the_previews_and_the_metrics(tmp_path):
    job = make_job(tmp_path)
    files = build_report(job)
    html = files.html.read_text(encoding="utf-8")
    assert files.html == job / "results" / REPORT_FILE and files.html.stat().st_size > 10_000
    pngs = embedded_pngs(html)
    assert pngs and all(p.startswith(PNG) for p in pngs)
    # The loss plot: a matplotlib figure two panels wide (reconstruct, edit), the widest image.
    plot = max((Image.open(io.BytesIO(p)) for p in pngs), key=lambda im: im.size[0])
    assert plot.size[0] >= 800 and np.asarray(plot.convert("L")).std() > 1.0 and "from the progress events" in html
    # Every preview (4 + 2) in the filmstrip, plus the first and last edit preview compared.
    assert len(pngs) == 1 + 6 + 2 and "step 40" in html and "step 20" in html
    assert "heldout_psnr_db" in html and "27.5" in html and "finished" in html
    assert "a red cube" in html and "a blue cube" in html
    picture = Image.open(files.png)
    assert files.png.name == REPORT_IMAGE_FILE and picture.size[0] >= 800 and picture.size[1] > 300


def test_report_compares_the_held_out_views_when_the_job_has_them(tmp_path):
    job = make_job(tmp_path)
    add_views(job, (30, 30, 200))
    html = build_report(job).html.read_text(encoding="utf-8")
    assert "camera 3" in html and "held-out views and the edit field" in html
    assert len(embedded_pngs(html)) == 1 + 6 + 8  # curves, filmstrip, 2 rows x 4 cameras


def test_the_record_keeps_losses_per_stage_in_step_order(tmp_path):
    record = read_job(make_job(tmp_path))
    assert sorted(record.losses) == ["edit", "reconstruct"]
    assert [s for s, _ in record.losses["reconstruct"]["loss"]] == [10, 20, 30, 40]
    assert record.status == "finished" and record.metrics["heldout_psnr_db"] == 27.5 and not record.problems


def test_broken_events_still_yield_a_report_that_names_the_problem(tmp_path):
    job = make_job(tmp_path, finished=False)
    with open(job / contract.EVENTS_FILE, "ab") as fh:
        fh.write(b"not json at all\n{\"type\": \"nonsense\"}\n{\"type\": \"progress\", \"stage\": \"edit\", \"ste")
    (job / contract.PREVIEW_DIR / "edit_000010.png").unlink()  # a preview removed since
    files = build_report(job, status="cancelled", message="edit cancelled at step 20")
    html = files.html.read_text(encoding="utf-8")
    assert "3 line(s) of events.jsonl are not valid events" in html
    assert "cancelled" in html and "edit cancelled at step 20" in html
    # Curves, the 5 previews left, and the one edit preview left as the comparison.
    assert "No metrics" in html and "step 30" in html and len(embedded_pngs(html)) == 1 + 5 + 1


def test_a_missing_events_file_and_job_file_still_yield_a_report(tmp_path):
    job = tmp_path / "empty"
    job.mkdir()
    html = build_report(job).html.read_text(encoding="utf-8")
    assert "events.jsonl is missing" in html and "job.json is missing" in html
    assert "No stage reported a loss" in html and "No preview was rendered" in html


def test_report_after_run_never_raises_and_says_why_in_a_log_event(tmp_path, capsys):
    job = make_job(tmp_path, finished=False)
    spec = contract.load_job(job / contract.JOB_FILE)
    (job / contract.RESULTS_DIR).write_text("a file where the results folder should be")
    events = contract.EventWriter(job / contract.EVENTS_FILE)
    files = report_after_run(spec, events, "failed", message="boom", device="cpu")  # no field, no folder
    assert files == {}
    logs = [e.message for e in contract.EventReader(job / contract.EVENTS_FILE).poll() if e.type == "log"]
    assert any("held-out views not rendered" in m for m in logs)
    assert any(m.startswith("job report not written") for m in logs)


def test_report_after_run_returns_the_manifest_roles_it_wrote(tmp_path):
    job = make_job(tmp_path, finished=False)
    spec = contract.load_job(job / contract.JOB_FILE)
    files = report_after_run(spec, contract.EventWriter(job / contract.EVENTS_FILE), "cancelled")
    assert files == MANIFEST_ROLES
    assert all((spec.results_path / name).is_file() for name in files.values())


def test_held_out_views_render_the_final_field_from_the_capture_cameras(tmp_path):
    torch = pytest.importorskip("torch")
    from backend.data.synthetic_capture import write_sphere_capture
    from backend.field.ngp_field import NGPField, NGPFieldConfig, save_field

    spec = contract.JobSpec(
        job_id="views", object_name="Ball", source_prompt="a ball", target_prompt="a ball",
        output_dir=str(tmp_path / "views"), stages=["reconstruct"], device="cpu",
    )
    spec.write()
    write_sphere_capture(spec.capture_path, num_train=2, num_eval=3, resolution=16)
    torch.manual_seed(0)
    field_ = NGPField(NGPFieldConfig(num_levels=4, log2_table_size=10, max_resolution=64, hidden_dim=16))
    save_field(spec.reconstruction_path / "field", field_)
    views = report_views.write_views(spec, "cpu", size=12, max_views=2)
    assert views.result_label == "reconstruction" and views.split == "eval" and len(views.result) == 2
    loaded = report_views.load_views(spec.results_path)
    assert loaded == views
    folder = report_views.views_dir(spec.results_path)
    for name in views.source + views.result:
        assert Image.open(folder / name).size == (12, 12)
    source = np.asarray(Image.open(folder / views.source[0]), dtype=np.float32)
    assert source.std() > 1.0  # the sphere on white, not a blank tile


def test_contact_sheet_has_one_row_per_job_and_one_column_per_camera(tmp_path):
    pairs = [("a blue cube", 0), ("a green cube", 7)]
    jobs = [make_job(tmp_path, f"v{i}", target=t, seed=s) for i, (t, s) in enumerate(pairs)]
    add_views(jobs[0], (30, 30, 200))
    add_views(jobs[1], (30, 200, 30))
    jobs.append(make_job(tmp_path, "v2", target="a gold cube", seed=3, finished=False))  # failed: no views
    out = tmp_path / "sheet.png"
    layout = contact_sheet(jobs, out, tile=32, label_width=100)
    assert (layout.rows, layout.columns) == (4, 4)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert sheet.shape == (4 * 32, 100 + 4 * 32, 3) and layout.size == (100 + 4 * 32, 4 * 32)
    # Row 0 the source (red), then each variant's colour, then the failed one's grey tiles.
    centre = lambda row, col: tuple(sheet[row * 32 + 16, 100 + col * 32 + 16])  # noqa: E731
    assert centre(0, 0) == (200, 30, 30) and centre(1, 3) == (30, 30, 200) and centre(2, 0) == (30, 200, 30)
    assert tuple(sheet[3 * 32 + 30, 100 + 2 * 32 + 30]) == (225, 225, 225)  # below its "no view" text
    assert sheet[:, :100].std() > 1.0  # the labels are written


def test_contact_sheet_without_any_views_is_a_clean_error(tmp_path):
    with pytest.raises(ValueError, match="held-out views"):
        contact_sheet([make_job(tmp_path, finished=False)], tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.png").exists()


def _backend(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backend", *args], cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_report_and_contact_sheet_commands(tmp_path):
    jobs = [make_job(tmp_path, "a"), make_job(tmp_path, "b", seed=1)]
    for job in jobs:
        add_views(job, (10, 10, 10), cameras=2)
    out = _backend("report", str(jobs[0]), "--no-render")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(jobs[0] / "results" / REPORT_FILE)
    manifest = contract.load_manifest(jobs[0] / "results")
    assert manifest.files["report"] == REPORT_FILE and manifest.files["report_image"] == REPORT_IMAGE_FILE
    sheet = tmp_path / "sheet.png"
    out = _backend("contact-sheet", str(sheet), *map(str, jobs), "--tile", "24")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(sheet) and Image.open(sheet).size == (220 + 2 * 24, 3 * 24)
    bad = _backend("contact-sheet", str(sheet), str(tmp_path / "nope"))
    assert bad.returncode == 1 and "not a folder" in bad.stderr
