"""Issue 19 in the backend's stages: the negative prompt reaches the 3D and 2D edits' unconditional
branch, the edit folder's fingerprint, the memory estimate and mode in the log, and the devices."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from backend.check import probe, usable_devices
from backend.edit2d import build_parser, edit_image
from backend.edit3d import edit_field
from backend.editing.registry import build_method
from backend.field.ngp_field import NGPField, NGPFieldConfig
from backend.progress import StageReporter
from backend.runner import resolve_device
from backend.stages import edit as edit_stage
from backend.stages import folders
from backend.stages.context import StageError
from blender_piva import contract

SMALL_FIELD = NGPFieldConfig(num_levels=4, log2_table_size=10, base_resolution=8, max_resolution=64, hidden_dim=16)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from backend.diffusion.model import DiffusionModel
    from backend.diffusion.tiny import save_tiny_model

    folder = save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    return DiffusionModel.load(str(folder), controlnet=str(folder / "controlnet"), device=torch.device("cpu"), dtype=torch.float32)


def spy_on(model, monkeypatch) -> list[torch.Tensor]:
    """Record the conditioning of every noise prediction of ``model``."""
    conds: list[torch.Tensor] = []
    real = model.predict_noise

    def recording(x_t, t, cond, **kw):
        conds.append(cond.detach().clone())
        return real(x_t, t, cond, **kw)

    monkeypatch.setattr(model, "predict_noise", recording)
    return conds


def make_spec(tmp_path, **changes) -> contract.JobSpec:
    spec = contract.JobSpec(
        job_id="edit", object_name="Cube", source_prompt="a red cube", target_prompt="a blue cube",
        output_dir=str(tmp_path), seed=3, **changes,
    )
    spec.edit.method = "sds"
    spec.edit.steps = 1
    spec.edit.render_resolution = 16
    return spec


@pytest.mark.parametrize("negative", ["blurry", ""])
def test_3d_edit_conditions_the_unconditional_branch_on_the_negative_prompt(tmp_path, model, monkeypatch, negative):
    spec = make_spec(tmp_path, negative_prompt=negative)
    conds = spy_on(model, monkeypatch)
    torch.manual_seed(0)
    method = build_method("sds", model, spec.edit)
    try:
        edit_field(NGPField(SMALL_FIELD), model, method, spec, tmp_path, device=torch.device("cpu"),
                   reporter=StageReporter.silent("edit"))
    finally:
        method.close()
    uncond, cond = conds[0].chunk(2)  # SDS: [uncond, cond]
    torch.testing.assert_close(uncond, model.encode_prompt(negative).expand_as(uncond))
    torch.testing.assert_close(cond, model.encode_prompt("a blue cube").expand_as(cond))


def test_2d_edit_takes_the_negative_prompt(model, monkeypatch):
    conds = spy_on(model, monkeypatch)
    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    settings = contract.EditSettings(method="dds", steps=1)
    edit_image(image, "a red cube", "a blue cube", "dds", settings, model, negative_prompt="blurry")
    names = list(conds[0])  # DDS, batch 1: [uncond, src, uncond, tgt]
    torch.testing.assert_close(names[0], model.encode_prompt("blurry")[0])
    torch.testing.assert_close(names[2], model.encode_prompt("blurry")[0])
    assert build_parser().parse_args(["a.png", "b.png", "--source", "s", "--target", "t", "--model", "toy",
                                      "--negative", "blurry"]).negative == "blurry"


def test_edit_fingerprint_keeps_old_folders_and_ignores_the_memory_mode(tmp_path):
    plain = make_spec(tmp_path)
    inputs = folders.edit_inputs(plain, "field-fp")
    assert "negative_prompt" not in inputs and "memory" not in inputs["model"]
    assert set(inputs["model"]) == {"model", "controlnet", "precision"}  # what folders were fingerprinted with
    low = dataclasses.replace(plain, model=dataclasses.replace(plain.model, memory="low"))
    assert folders.edit_inputs(low, "field-fp") == inputs  # resume in another memory mode
    negative = dataclasses.replace(plain, negative_prompt="blurry")
    assert folders.edit_inputs(negative, "field-fp") == {**inputs, "negative_prompt": "blurry"}
    assert contract.fingerprint_of(folders.edit_inputs(negative, "field-fp")) != contract.fingerprint_of(inputs)


class _Events:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def emit(self, kind: str, **fields) -> None:
        self.lines.append((kind, fields))


def test_the_edit_stage_logs_the_memory_estimate(tmp_path):
    spec = make_spec(tmp_path)
    spec.edit.method, spec.edit.render_resolution, spec.model.memory = "piva", 256, "low"
    ctx = type("Ctx", (), {"spec": spec, "events": _Events()})()
    edit_stage._log_estimate(ctx)
    (kind, fields), = ctx.events.lines
    assert kind == "log" and fields["stage"] == "edit"
    assert "piva at 256 px, memory mode low: ≈ " in fields["message"] and "GiB GPU (computed)" in fields["message"]


def test_auto_precision_on_mps_is_fp32_and_fp16_on_cuda():
    assert edit_stage.model_dtype("auto", torch.device("mps")) == torch.float32
    assert edit_stage.model_dtype("auto", torch.device("cuda")) == torch.float16
    assert edit_stage.model_dtype("fp16", torch.device("mps")) == torch.float16


def test_check_reports_the_usable_devices():
    devices = usable_devices()
    assert devices[0] == "cpu" and set(devices) <= set(contract.DEVICES) - {"auto"}
    assert ("cuda" in devices) == torch.cuda.is_available()
    report = probe()
    assert report["devices"] == devices and "cuda" in report and "cuda_devices" in report


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps_is_a_teaching_error():
    with pytest.raises(StageError) as info:
        resolve_device("mps")
    assert "mps" in str(info.value) and "'cpu' or 'auto'" in info.value.hint


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    with pytest.raises(StageError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_edit2d_cli_takes_negative_memory_and_refuses_a_missing_device(tmp_path, capsys):
    from PIL import Image

    from backend.diffusion.tiny import save_tiny_model
    from backend.edit2d import main_edit2d

    folder = save_tiny_model(tmp_path / "model")
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(src)
    argv = [str(src), str(out), "--source", "a cat", "--target", "a dog", "--method", "dds", "--model", str(folder),
            "--steps", "1", "--size", "64", "--negative", "blurry", "--memory", "low"]
    assert main_edit2d(argv) == 0 and Image.open(out).size == (64, 64)
    if not torch.backends.mps.is_available():
        out.unlink()
        assert main_edit2d(argv + ["--device", "mps"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: --device mps:") and "'cpu' or 'auto'" in err and not out.exists()
