from __future__ import annotations

import shutil

import pytest
import torch

from backend.diffusion.model import DiffusionModel, ModelLoadError, v_to_epsilon
from backend.diffusion.tiny import LATENT_CHANNELS, MAX_TOKENS, TEXT_WIDTH, save_tiny_model

CPU = torch.device("cpu")


def test_tiny_folder_loads_through_the_real_loader(tiny_model):
    m = tiny_model
    assert m.prediction_type == "epsilon" and m.controlnet is not None and m.vae is not None
    assert m.alphas_cumprod.shape == (1000,) and m.alphas_cumprod.dtype == torch.float32
    assert not any(p.requires_grad for p in m.unet.parameters())
    emb = m.encode_prompt("a red cube")
    assert emb.shape == (1, MAX_TOKENS, TEXT_WIDTH)
    assert m.encode_prompt("a red cube") is emb  # cached
    assert not torch.equal(emb, m.encode_prompt("a blue cube"))


def test_encode_is_differentiable_and_decode_inverts_shapes(tiny_model):
    rgb = torch.rand(2, 3, 32, 32, requires_grad=True)
    z = tiny_model.encode_images(rgb)
    assert z.shape == (2, LATENT_CHANNELS, 16, 16)
    z.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    out = tiny_model.decode_latents(z.detach())
    assert out.shape == (2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1


def test_predict_noise_batches_and_uses_the_controlnet(tiny_model):
    x = torch.randn(3, LATENT_CHANNELS, 16, 16)
    t = torch.tensor([10, 500, 990])
    cond = torch.cat([tiny_model.encode_prompt(p) for p in ("a", "b", "")])
    with torch.no_grad():
        eps = tiny_model.predict_noise(x, t, cond)
        eps_ctl = tiny_model.predict_noise(x, t, cond, control=torch.rand(3, 3, 32, 32))
        single = tiny_model.predict_noise(x[1:2], t[1:2], cond[1:2])
    assert eps.shape == x.shape and eps.dtype == torch.float32
    torch.testing.assert_close(eps[1:2], single, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(eps, eps_ctl)


def test_v_to_epsilon_recovers_the_noise():
    ac = torch.linspace(0.99, 0.01, 1000)
    x0, eps = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    t = torch.tensor([0, 200, 700, 999])
    a = ac[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    torch.testing.assert_close(v_to_epsilon(v, x_t, t, ac), eps)


def test_v_prediction_model_is_converted(tmp_path, tiny_model):
    folder = save_tiny_model(tmp_path / "v", prediction_type="v_prediction")
    m = DiffusionModel.load(str(folder), device=CPU, dtype=torch.float32)
    assert m.prediction_type == "v_prediction"
    x, t, cond = torch.randn(1, 4, 16, 16), torch.tensor([600]), m.encode_prompt("x")
    with torch.no_grad():
        raw = m.unet(x, t, encoder_hidden_states=cond).sample
        eps = m.predict_noise(x, t, cond)
    a = m.alphas_cumprod[600]
    torch.testing.assert_close(eps, a.sqrt() * raw + (1 - a).sqrt() * x)


def test_pickle_only_weights_are_refused_with_the_fix(tmp_path, tiny_dir):
    folder = tmp_path / "bin"
    shutil.copytree(tiny_dir, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match=r"safetensors only.*safe_serialization=True"):
        DiffusionModel.load(str(folder), device=CPU, dtype=torch.float32)


def test_missing_component_is_named(tmp_path, tiny_dir):
    folder = tmp_path / "partial"
    shutil.copytree(tiny_dir, folder)
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(ModelLoadError, match="lacks tokenizer/"):
        DiffusionModel.load(str(folder), device=CPU, dtype=torch.float32)


def test_missing_folder_is_an_error():
    with pytest.raises(ModelLoadError, match="does not exist"):
        DiffusionModel.load("./no/such/model", device=CPU, dtype=torch.float32)


def test_pixel_space_mode_without_vae(tmp_path, tiny_dir):
    folder = tmp_path / "pixel"
    shutil.copytree(tiny_dir, folder)
    shutil.rmtree(folder / "vae")
    m = DiffusionModel.load(str(folder), device=CPU, dtype=torch.float32)
    rgb = torch.rand(1, 3, 8, 8)
    assert m.vae is None and m.scaling_factor == 1.0
    torch.testing.assert_close(m.decode_latents(m.encode_images(rgb)), rgb)
