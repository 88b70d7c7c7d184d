"""The toy model's components: its tokenizer and its folder load through the real loading code."""

from __future__ import annotations

import torch

from backend.toy.components import WORDS, ToyModelConfig, build_controlnet, build_text_encoder, build_unet, save_model, save_tokenizer

TINY = ToyModelConfig(image_size=16, text_width=32, unet_channels=(8, 16), layers_per_block=1)


def test_every_toy_word_is_one_token(tmp_path):
    from transformers import CLIPTokenizer

    save_tokenizer(tmp_path, ToyModelConfig())
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    for word in WORDS:
        tokens = tokenizer.tokenize(word)
        assert tokens == [word + "</w>"], (word, tokens)
    # An unknown word is spelled, not dropped: prompts outside the toy world still tokenize.
    assert tokenizer.tokenize("car") == ["c", "a", "r</w>"]


def test_toy_folder_loads_through_the_stable_diffusion_path(tmp_path):
    from backend.diffusion.model import DiffusionModel

    torch.manual_seed(0)
    unet = build_unet(TINY)
    save_model(tmp_path / "toy", TINY, build_text_encoder(TINY), unet, build_controlnet(unet))
    model = DiffusionModel.load(
        str(tmp_path / "toy"), controlnet=str(tmp_path / "toy" / "controlnet"), device=torch.device("cpu"), dtype=torch.float32
    )
    assert model.vae is None and model.controlnet is not None  # pixel space, with a depth ControlNet
    emb = model.encode_prompt("a red cube")
    assert emb.shape == (1, TINY.max_tokens, TINY.text_width)
    assert not torch.equal(emb, model.encode_prompt("a blue cube"))
    x = model.encode_images(torch.rand(1, 3, 16, 16))
    assert x.shape == (1, 3, 16, 16) and float(x.min()) >= -1.0
    eps = model.predict_noise(x, torch.tensor([500]), emb, control=torch.rand(1, 3, 16, 16))
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert not list((tmp_path / "toy").rglob("*.bin"))  # safetensors only
