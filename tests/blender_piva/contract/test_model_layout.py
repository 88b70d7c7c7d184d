"""A local model folder is judged by its layout alone, without torch: components, safetensors only."""

from __future__ import annotations

import json
from pathlib import Path

from blender_piva.contract.model_layout import check_model_folder, check_single_model_folder

ROOT = Path(__file__).resolve().parents[3]


def make_folder(root: Path, components=("unet", "vae", "text_encoder", "tokenizer", "scheduler"), weights=".safetensors"):
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    for name in components:
        sub = root / name
        sub.mkdir()
        (sub / "config.json").write_text("{}")
        if name in ("unet", "vae", "text_encoder"):
            (sub / f"diffusion_pytorch_model{weights}").write_bytes(b"weights")
    return root


def test_a_complete_folder_passes(tmp_path):
    report = check_model_folder(make_folder(tmp_path / "sd"))
    assert report.ok, report.message
    assert report.present == ["unet", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"]
    assert report.missing == report.pickle_only == report.no_weights == []
    assert report.lines()[-1].startswith("OK: ") and "a latent model" in report.message


def test_a_folder_without_vae_and_tokenizer_names_what_is_missing(tmp_path):
    report = check_model_folder(make_folder(tmp_path / "sd", components=("unet", "text_encoder", "scheduler")))
    assert not report.ok
    assert report.missing == ["tokenizer"]  # vae/ is optional: without it the model works in pixel space
    assert "lacks tokenizer/ (and no vae/" in report.message and "safe_serialization=True" in report.message
    assert report.absent == ["vae", "tokenizer", "controlnet"]
    lines = report.lines()
    assert "vae/: absent (optional)" in lines and "tokenizer/: MISSING" in lines


def test_a_folder_missing_vae_and_tokenizer_names_both_when_vae_is_required(tmp_path):
    folder = make_folder(tmp_path / "sd", components=("unet", "text_encoder", "scheduler"))
    report = check_model_folder(folder, required=("unet", "vae", "text_encoder", "tokenizer", "scheduler"))
    assert report.missing == ["vae", "tokenizer"]
    assert "lacks vae/, tokenizer/" in report.message


def test_a_pickle_only_unet_is_refused_naming_it_and_the_fix(tmp_path):
    folder = make_folder(tmp_path / "sd")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"a pickle, never loaded")
    report = check_model_folder(folder)
    assert not report.ok and report.pickle_only == ["unet"]
    assert str(folder / "unet") in report.message and "safetensors only" in report.message
    assert "save_pretrained(folder, safe_serialization=True)" in report.message
    assert "unet/: PICKLE ONLY (.bin/.pt/.ckpt): refused" in report.lines()


def test_a_folder_with_only_a_pickle_unet_names_unet_and_what_is_missing(tmp_path):
    folder = tmp_path / "bare"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"a pickle")
    report = check_model_folder(folder)
    assert report.pickle_only == ["unet"] and report.missing == ["text_encoder", "tokenizer", "scheduler"]
    assert "lacks text_encoder/, tokenizer/, scheduler/" in report.message  # the first problem to fix


def test_a_component_without_weights_is_named(tmp_path):
    folder = make_folder(tmp_path / "sd")
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    report = check_model_folder(folder)
    assert report.no_weights == ["vae"] and "has no weights" in report.message


def test_a_missing_folder_says_so(tmp_path):
    report = check_model_folder(tmp_path / "nowhere")
    assert not report.exists and not report.ok and "does not exist" in report.message


def test_the_shipped_toy_model_passes():
    report = check_model_folder(ROOT / "backend" / "models" / "toy")
    assert report.ok, report.message
    assert "controlnet" in report.present and "vae" in report.present


def test_a_controlnet_folder_needs_config_and_safetensors(tmp_path):
    good = check_single_model_folder(ROOT / "backend" / "models" / "toy" / "controlnet")
    assert good.ok, good.message
    empty = tmp_path / "cn"
    empty.mkdir()
    assert "has no config.json" in check_single_model_folder(empty).message
    (empty / "config.json").write_text("{}")
    (empty / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    report = check_single_model_folder(empty)
    assert report.pickle_only == ["."] and "safetensors only" in report.message
