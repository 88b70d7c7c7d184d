"""Components of the embedded toy model, in the diffusers layout of Stable Diffusion.

The toy model is a text-to-image diffusion model of the toy world (toy_world/):
32x32 RGB renders of primitives in flat colours, prompts "a COLOR SHAPE". It works in **pixel
space**: there is no ``vae/`` folder, the UNet denoises the image itself in [-1, 1] (what
``DiffusionModel.encode_images`` does without a VAE). Everything else is what SD 2.1 has:
a CLIP tokenizer and text encoder, a cross-attention UNet, a DDPM scheduler config, and a depth
ControlNet, saved with safetensors and loaded by ``DiffusionModel.load`` like the real model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion.layout import write_clip_tokenizer, write_model_index

LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS = ("a", "red", "green", "blue", "yellow", "white", "purple", "cube", "sphere", "cylinder", "cone", "torus")
"""Words that get a token of their own; any other lowercase word is spelled in letters."""


@dataclass(frozen=True)
class ToyModelConfig:
    """Sizes of the toy model (defaults: the shipped model)."""

    image_size: int = 32
    """Side of the square images the UNet denoises."""
    text_width: int = 64
    """Width of the text encoder and the UNet's cross-attention."""
    max_tokens: int = 16
    """Tokens per prompt, start and end included."""
    text_layers: int = 2
    """Transformer layers of the text encoder."""
    unet_channels: tuple[int, ...] = (32, 64, 64)
    """Channels of the UNet's resolution levels (32, 16, 8 pixels)."""
    layers_per_block: int = 1
    """ResNet layers per UNet block (1 keeps a training step under a CPU-second: 1.7M parameters)."""
    num_train_timesteps: int = 1000
    """Diffusion steps of the noise schedule."""
    beta_schedule: str = "squaredcos_cap_v2"
    """Noise schedule: the cosine schedule suits small pixel-space images better than SD's latent one."""


def vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """A CLIP-style BPE vocabulary: every letter (alone and word-final) and one token per word."""
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for c in LETTERS + "0123456789.,!?'-":
        tokens += [c, c + "</w>"]
    merges: list[str] = []
    # Longer words first: BPE applies the lowest-ranked pair first, so "red"'s (r, e) must rank
    # after every merge of "green" for both to become single tokens.
    for word in sorted(WORDS, key=lambda w: (-len(w), w)):
        if len(word) == 1:
            continue
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merged = current + piece
            merges.append(f"{current} {piece}")
            if merged not in tokens:
                tokens.append(merged)
            current = merged
    return {tok: i for i, tok in enumerate(tokens)}, merges


def save_tokenizer(folder: Path, config: ToyModelConfig) -> None:
    vocab, merges = vocab_and_merges()
    write_clip_tokenizer(folder, vocab, merges, config.max_tokens)


def build_text_encoder(config: ToyModelConfig):
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = vocab_and_merges()
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=config.text_width,
            intermediate_size=2 * config.text_width,
            num_hidden_layers=config.text_layers,
            num_attention_heads=4,
            max_position_embeddings=config.max_tokens,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )


def build_unet(config: ToyModelConfig):
    from diffusers import UNet2DConditionModel

    levels = len(config.unet_channels)
    return UNet2DConditionModel(
        sample_size=config.image_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=config.layers_per_block,
        block_out_channels=config.unet_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        cross_attention_dim=config.text_width,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def build_controlnet(unet):
    """A depth ControlNet initialised from the UNet's encoder (the ControlNet paper's recipe).

    The conditioning image has the sample's size (pixel space), so its embedding does not
    downsample: one conditioning block.
    """
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16,))


def build_scheduler(config: ToyModelConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type="epsilon",
        clip_sample=True,
    )


def save_model(folder: Path, config: ToyModelConfig, text_encoder, unet, controlnet=None) -> Path:
    """Write the diffusers layout (safetensors only); ControlNet in ``folder/controlnet``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_tokenizer(folder / "tokenizer", config)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    build_scheduler(config).save_pretrained(folder / "scheduler")
    if controlnet is not None:
        controlnet.save_pretrained(folder / "controlnet", safe_serialization=True)
    write_model_index(folder, vae=False)
    return folder


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
