"""The preferences' known models match the backend's hub ids, and Check model reads the choice without torch."""

from __future__ import annotations

from pathlib import Path

from backend.diffusion import hub
from blender_piva.core.known_models import KNOWN_MODELS, known_model_of
from blender_piva.core.model_check import HUB_LINE, check_model_choice

ROOT = Path(__file__).resolve().parents[3]


def test_the_extensions_table_agrees_with_the_backends_hub_ids():
    sd = KNOWN_MODELS["sd21_base"]
    assert sd.model == hub.SD21_BASE and sd.controlnet == hub.SD21_DEPTH_CONTROLNET
    assert hub.DEFAULT_CONTROLNETS[sd.model] == sd.controlnet
    assert KNOWN_MODELS["toy"].model == "toy" and KNOWN_MODELS["toy"].controlnet == ""
    assert known_model_of(hub.SD21_BASE, hub.SD21_DEPTH_CONTROLNET) == "sd21_base"
    assert known_model_of("someone/else", "") == ""


def test_check_model_passes_the_shipped_toy():
    ok, lines = check_model_choice("toy", "", backend_root=str(ROOT))
    assert ok, lines
    assert any(line.startswith("OK: ") for line in lines) and "unet/: ok" in lines


def test_check_model_on_a_hub_id_waits_for_the_backend_and_needs_online_access():
    ok, lines = check_model_choice(hub.SD21_BASE, hub.SD21_DEPTH_CONTROLNET, online_access=True)
    assert ok and f"model {hub.SD21_BASE!r}: {HUB_LINE}" in lines
    ok, lines = check_model_choice(hub.SD21_BASE, "", online_access=False)
    assert not ok and "Blender's online access is off" in lines[-1]


def test_check_model_refuses_a_pickle_only_folder_naming_unet(tmp_path):
    (tmp_path / "m" / "unet").mkdir(parents=True)
    (tmp_path / "m" / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    ok, lines = check_model_choice(str(tmp_path / "m"), "", online_access=False)  # local: no network needed
    assert not ok
    assert "unet/: PICKLE ONLY (.bin/.pt/.ckpt): refused" in lines
    assert "lacks text_encoder/, tokenizer/, scheduler/" in lines[-2]


def test_check_model_names_a_missing_folder(tmp_path):
    ok, lines = check_model_choice(str(tmp_path / "gone"), "")
    assert not ok and "does not exist" in lines[0]
