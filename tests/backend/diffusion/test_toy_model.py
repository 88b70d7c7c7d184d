"""The shipped toy model (backend/models/toy, what ``model: "toy"`` resolves to) loads through the
Stable Diffusion path with its VAE and depth ControlNet, safetensors only; images go to 16x16x4
latents and back; DDS and PIVA edit with the VAE in the loop. Mechanics only: the folder may hold
an untrained smoke model of the same architecture, so nothing here judges sample quality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.diffusion.model import DiffusionModel
from backend.edit2d import edit_image
from backend.editing.base import MethodInputs
from backend.editing.registry import build_method
from backend.stages.edit import TOY_MODEL_DIR, resolve_controlnet, resolve_model
from blender_piva.contract import EditSettings

CPU = torch.device("cpu")
COMPONENTS = ("text_encoder", "vae", "unet", "controlnet")
EDITORS = ("dds", "piva")


@pytest.fixture(scope="module")
def toy() -> DiffusionModel:
    path = resolve_model("toy")
    return DiffusionModel.load(path, controlnet=resolve_controlnet(path, ""), device=CPU, dtype=torch.float32)


def red_square() -> np.ndarray:  # [64, 64, 3] in [0, 1]: a red square on white, as the toy world renders
    image = np.ones((64, 64, 3), dtype=np.float32)
    image[16:48, 16:48] = (0.85, 0.10, 0.10)
    return image


def test_toy_is_the_shipped_folder_with_its_own_controlnet_in_safetensors():
    path = Path(resolve_model("toy"))
    assert path == TOY_MODEL_DIR
    assert Path(resolve_controlnet(str(path), "")) == TOY_MODEL_DIR / "controlnet"
    for component in COMPONENTS:
        assert list((path / component).glob("*.safetensors")), component
    assert not [p for p in path.rglob("*") if p.suffix in (".bin", ".pt", ".ckpt", ".pth")]  # no pickles
    index = json.loads((path / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"]


def test_it_is_a_latent_model_with_the_sd_noise_schedule(toy):
    assert toy.vae is not None and toy.controlnet is not None
    vae_config = json.loads((TOY_MODEL_DIR / "vae" / "config.json").read_text())
    assert toy.scaling_factor == pytest.approx(vae_config["scaling_factor"])
    assert toy.scaling_factor > 0 and toy.scaling_factor != 1.0  # phase 0 measured it
    assert toy.prediction_type == "epsilon" and toy.num_train_timesteps == 1000
    scheduler = json.loads((TOY_MODEL_DIR / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["beta_schedule"] == "scaled_linear"


def test_images_encode_to_16x16x4_latents_and_decode_back(toy):
    rgb = torch.rand(1, 3, 64, 64, requires_grad=True)
    latents = toy.encode_images(rgb)
    assert latents.shape == (1, 4, 16, 16) and torch.isfinite(latents).all()
    latents.sum().backward()  # differentiable: the 3D edit backpropagates through the encoder
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    image = toy.decode_latents(latents.detach())
    assert image.shape == (1, 3, 64, 64) and 0.0 <= image.min() and image.max() <= 1.0


def test_noise_prediction_takes_the_depth_control_at_image_size(toy):
    latents, t, emb = torch.randn(1, 4, 16, 16), torch.tensor([500]), toy.encode_prompt("a red cube")
    with torch.no_grad():
        plain = toy.predict_noise(latents, t, emb)
        controlled = toy.predict_noise(latents, t, emb, control=torch.rand(1, 3, 64, 64))
    assert plain.shape == controlled.shape == latents.shape and torch.isfinite(controlled).all()
    assert not torch.allclose(plain, controlled)


@pytest.mark.parametrize("method", EDITORS)
def test_the_gradient_of_an_edit_reaches_the_image_through_the_vae(toy, method):
    rgb = torch.tensor(red_square()).permute(2, 0, 1)[None].requires_grad_(True)
    x = toy.encode_images(rgb)
    editor = build_method(method, toy, EditSettings(method=method, guidance_scale=7.5))
    try:
        result = editor.step(MethodInputs(
            x=x, source=x.detach(), cond_src=toy.encode_prompt("a red cube"), cond_tgt=toy.encode_prompt("a blue cube"),
            cond_null=toy.null_condition(), step=0, total_steps=2, control=torch.rand(1, 3, 64, 64),
            generator=torch.Generator().manual_seed(0),
        ))
        result.loss.backward()
    finally:
        editor.close()
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


@pytest.mark.parametrize("method", EDITORS)
def test_a_2d_edit_changes_the_image(toy, method):
    image = red_square()
    unchanged = edit_image(image, "a red cube", "a blue cube", method, EditSettings(method=method), toy, steps=0)
    settings = EditSettings(method=method, steps=2, field_learning_rate=0.5, guidance_scale=7.5)
    edited = edit_image(image, "a red cube", "a blue cube", method, settings, toy, seed=1)
    assert edited.shape == image.shape and np.isfinite(edited).all()
    assert np.abs(edited - unchanged).max() > 1e-3


def test_freeu_changes_predictions_only_inside_its_block(toy):
    """SSD's FreeU (the reference's constants) acts on the UNet, and the plain UNet is back afterwards."""
    latents, t, emb = torch.randn(1, 4, 16, 16), torch.tensor([500]), toy.encode_prompt("a red cube")
    with torch.no_grad():
        plain = toy.predict_noise(latents, t, emb)
        with toy.freeu(b1=1.1, b2=1.1, s1=0.9, s2=0.2):
            under = toy.predict_noise(latents, t, emb)
        after = toy.predict_noise(latents, t, emb)
    assert (under - plain).abs().max() > 1e-3
    torch.testing.assert_close(after, plain)


def test_ssd_runs_under_freeu_unless_turned_off(toy):
    x = toy.encode_images(torch.tensor(red_square()).permute(2, 0, 1)[None])
    grads = {}
    for freeu in (True, False):
        editor = build_method("ssd", toy, params={"freeu": freeu})
        grads[freeu] = editor.step(MethodInputs(
            x=x.clone().requires_grad_(True), source=x * 0.9, cond_src=toy.encode_prompt("a red cube"),
            cond_tgt=toy.encode_prompt("a blue cube"), cond_null=toy.null_condition(), step=0, total_steps=2,
            generator=torch.Generator().manual_seed(0),
        )).grad
    assert (grads[True] - grads[False]).abs().max() > 1e-4
