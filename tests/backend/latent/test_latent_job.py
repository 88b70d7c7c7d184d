"""The latent mode end to end: ``python -m backend run`` on a job with ``reconstruct.field = latent``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blender_piva import contract

ROOT = Path(__file__).resolve().parents[3]


def test_field_setting_is_validated_with_the_allowed_values():
    with pytest.raises(contract.ContractError, match=r"reconstruct.field: unknown field 'latnet' \(allowed: rgb, latent\)"):
        contract.ReconstructSettings(field="latnet").validate()
    spec = contract.JobSpec(job_id="j", object_name="o", source_prompt="a", target_prompt="b", output_dir="/tmp/x")
    data = spec.to_dict()
    data["reconstruct"]["field"] = 3
    with pytest.raises(contract.ContractError, match="reconstruct.field"):
        contract.JobSpec.from_dict(data)
    data["reconstruct"]["field"] = "latent"
    assert contract.JobSpec.from_dict(data).reconstruct.field == "latent"


def test_rgb_fingerprints_and_cache_keys_tell_the_modes_apart():
    from blender_piva.core.cache import fit_key

    rgb, latent = contract.ReconstructSettings(), contract.ReconstructSettings(field="latent")
    assert "field" not in contract.content_settings(rgb)  # folders fitted before the setting existed stay ours
    assert contract.content_settings(latent)["field"] == "latent"
    assert fit_key(rgb) != fit_key(latent)


@pytest.mark.slow
def test_latent_job_runs_reconstruct_edit_export_through_the_backend(tmp_path, tiny_model):
    from backend.data.synthetic_capture import write_sphere_capture
    from backend.field.latent_field import is_latent_field

    spec = contract.JobSpec(
        job_id="job", object_name="Ball", source_prompt="a red ball", target_prompt="a blue ball",
        output_dir=str(tmp_path / "job"), device="cpu", model=contract.ModelSettings(model=str(tiny_model)),
    )
    spec.reconstruct.field = "latent"
    spec.reconstruct.steps, spec.reconstruct.rays_per_batch, spec.reconstruct.samples_per_ray = 20, 144, 16
    spec.reconstruct.preview_every = 10
    spec.edit.method, spec.edit.steps, spec.edit.render_resolution, spec.edit.preview_every = "dds", 3, 12, 3
    spec.export.grid_resolution, spec.export.texture_size, spec.export.face_budget = 32, 64, 500
    spec.export.iso_density = 0.2
    job = spec.write()
    write_sphere_capture(spec.capture_path, num_train=4, num_eval=1, resolution=12)
    out = subprocess.run(
        [sys.executable, "-m", "backend", "run", str(job)], cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=600, check=False,
    )
    events = contract.EventReader(job.parent / contract.EVENTS_FILE).poll()
    assert out.returncode == contract.EXIT_OK, [(e.message, e.hint) for e in events if e.type == "error"] or out.stderr[-2000:]
    assert [e.stage for e in events if e.type == "stage"] == ["reconstruct", "edit", "export"]
    assert any("latent field" in (e.message or "") for e in events if e.type == "stage")
    assert is_latent_field(spec.reconstruction_path / "field") and is_latent_field(spec.job_dir / "edit" / "field")
    manifest = contract.load_manifest(spec.results_path)
    assert {"mesh", "texture"} <= set(manifest.files) and "heldout_psnr_db" in manifest.metrics
    assert (spec.results_path / manifest.files["mesh"]).stat().st_size > 0
    # Run again: every stage is reused, nothing refits.
    again = subprocess.run(
        [sys.executable, "-m", "backend", "run", str(job)], cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert again.returncode == contract.EXIT_OK
    logs = [e.message for e in contract.EventReader(job.parent / contract.EVENTS_FILE).poll() if e.type == "log"]
    assert any("reusing the fitted field" in m for m in logs) and any("edit already done" in m for m in logs)
