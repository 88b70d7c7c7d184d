"""The toy model's components: its tokenizer, and its folder (VAE included) loads through the real loading code."""

from __future__ import annotations

import pytest
import torch

from backend.toy.components import (
    WORDS,
    ToyModelConfig,
    build_controlnet,
    build_text_encoder,
    build_unet,
    build_vae,
    save_model,
    save_tokenizer,
)

# Channels are multiples of 16: the components' GroupNorms have 16 groups.
TINY = ToyModelConfig(image_size=16, vae_channels=(16, 16), text_width=32, unet_channels=(16, 32), layers_per_block=1)


def test_every_toy_word_is_one_token(tmp_path):
    from transformers import CLIPTokenizer

    save_tokenizer(tmp_path, ToyModelConfig())
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    for word in WORDS:
        tokens = tokenizer.tokenize(word)
        assert tokens == [word + "</w>"], (word, tokens)
    # An unknown word is spelled, not dropped: prompts outside the toy world still tokenize.
    assert tokenizer.tokenize("car") == ["c", "a", "r</w>"]


def test_every_word_of_a_toy_prompt_has_its_own_token():
    pytest.importorskip("bpy")  # toy_world builds its objects with bpy
    import toy_world

    words = {word for color, shape in toy_world.all_prompts() for word in toy_world.prompt(color, shape).split()}
    assert "cyan" in words and "white" not in set(toy_world.COLORS)
    assert words <= set(WORDS), words - set(WORDS)


def test_latent_size_is_the_image_size_over_the_vae_factor():
    assert ToyModelConfig().latent_size == 16  # 64 / 4, a 16x16x4 latent
    assert TINY.latent_size == 8  # 16 / 2
    vae = build_vae(TINY)
    with torch.no_grad():
        z = vae.encode(torch.rand(1, 3, TINY.image_size, TINY.image_size)).latent_dist.mean
    assert z.shape == (1, TINY.latent_channels, TINY.latent_size, TINY.latent_size)


def test_toy_folder_loads_through_the_stable_diffusion_path(tmp_path):
    from backend.diffusion.model import DiffusionModel

    torch.manual_seed(0)
    vae, unet = build_vae(TINY), build_unet(TINY)
    vae.register_to_config(scaling_factor=2.5)  # what phase 0 sets: 1 / std of the latents
    save_model(tmp_path / "toy", TINY, build_text_encoder(TINY), vae, unet, build_controlnet(unet, TINY))
    model = DiffusionModel.load(
        str(tmp_path / "toy"), controlnet=str(tmp_path / "toy" / "controlnet"), device=torch.device("cpu"), dtype=torch.float32
    )
    assert model.vae is not None and model.controlnet is not None  # latent space, with a depth ControlNet
    assert model.scaling_factor == 2.5
    emb = model.encode_prompt("a red cube")
    assert emb.shape == (1, TINY.max_tokens, TINY.text_width)
    assert not torch.equal(emb, model.encode_prompt("a blue cube"))
    z = model.encode_images(torch.rand(1, 3, 16, 16))
    assert z.shape == (1, TINY.latent_channels, TINY.latent_size, TINY.latent_size)
    eps = model.predict_noise(z, torch.tensor([500]), emb, control=torch.rand(1, 3, 16, 16))  # control at image size
    assert eps.shape == z.shape and torch.isfinite(eps).all()
    assert model.decode_latents(z).shape == (1, 3, 16, 16)
    assert not list((tmp_path / "toy").rglob("*.bin"))  # safetensors only
    assert (tmp_path / "toy" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
