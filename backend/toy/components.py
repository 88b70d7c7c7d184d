"""Components of the embedded toy model, in the diffusers layout of Stable Diffusion.

The toy model is a text-to-image latent diffusion model of the toy world (toy_world/): 64x64
Cycles renders of primitives in flat colours, prompts "a COLOR SHAPE". It is a miniature of
SD 2.1-base with every component SD has: a small ``AutoencoderKL`` (64x64x3 <-> 16x16x4), a CLIP
tokenizer and text encoder, a cross-attention UNet on the latents, SD's DDPM scheduler config and
a depth ControlNet, saved with safetensors and loaded by ``DiffusionModel.load`` exactly like the
real model, so every editing method runs with the VAE in the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion.layout import write_clip_tokenizer, write_model_index

LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS = ("a", "red", "green", "blue", "yellow", "cyan", "purple", "cube", "sphere", "cylinder", "cone", "torus")
"""Words that get a token of their own; any other lowercase word is spelled in letters."""


@dataclass(frozen=True)
class ToyModelConfig:
    """Sizes of the toy model (defaults: the shipped model), a miniature of SD 2.1-base."""

    image_size: int = 64
    """Side of the square RGB images the VAE encodes (SD 2.1-base: 512)."""
    vae_channels: tuple[int, ...] = (16, 32, 64)
    """Channels of the VAE's resolution levels; len - 1 halvings (64 -> 16 pixels: factor 4; SD: 8)."""
    latent_channels: int = 4
    """Channels of the latent the UNet denoises (as SD)."""
    text_width: int = 64
    """Width of the text encoder and the UNet's cross-attention."""
    max_tokens: int = 16
    """Tokens per prompt, start and end included."""
    text_layers: int = 2
    """Transformer layers of the text encoder."""
    unet_channels: tuple[int, ...] = (32, 64, 128)
    """Channels of the UNet's resolution levels (16, 8, 4 latent pixels)."""
    layers_per_block: int = 1
    """ResNet layers per UNet block (1 keeps a training step near a CPU-second)."""
    num_train_timesteps: int = 1000
    """Diffusion steps of the noise schedule."""
    beta_schedule: str = "scaled_linear"
    """Noise schedule: SD's latent-space schedule (beta 0.00085 -> 0.012, scaled linear)."""

    @property
    def latent_size(self) -> int:
        """Side of the latent: ``image_size`` over the VAE's downsampling factor."""
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


def _apply_merges(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE as the tokenizer runs it: merge the lowest-ranked adjacent pair until none is known."""
    while len(pieces) > 1:
        rank, i = min((ranks.get(pair, 1 << 30), i) for i, pair in enumerate(zip(pieces, pieces[1:])))
        if rank == 1 << 30:
            break
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2 :]
    return pieces


def vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """A CLIP-style BPE vocabulary: every letter (alone and word-final) and one token per word."""
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for c in LETTERS + "0123456789.,!?'-":
        tokens += [c, c + "</w>"]
    merges: list[str] = []
    ranks: dict[tuple[str, str], int] = {}
    # Each word first goes through the merges made so far (as the tokenizer will run them); what is
    # left is merged left to right by new merges ranked after all earlier ones, so no word's merges
    # can split another word ("orange"'s (o, r) would otherwise split "torus" into t, or, u, s).
    for word in sorted(WORDS, key=lambda w: (-len(w), w)):
        if len(word) == 1:
            continue
        pieces = _apply_merges(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        current = pieces[0]
        for piece in pieces[1:]:
            ranks[(current, piece)] = len(merges)
            merges.append(f"{current} {piece}")
            if current + piece not in tokens:
                tokens.append(current + piece)
            current += piece
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


def build_vae(config: ToyModelConfig):
    """A small ``AutoencoderKL``: SD's architecture (mid-block attention included), fewer channels."""
    from diffusers import AutoencoderKL

    levels = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=16,
        sample_size=config.image_size,
    )


def build_unet(config: ToyModelConfig):
    """SD's UNet layout (cross-attention on every level but the coarsest), on the VAE's latents."""
    from diffusers import UNet2DConditionModel

    levels = len(config.unet_channels)
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        layers_per_block=config.layers_per_block,
        block_out_channels=config.unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        cross_attention_dim=config.text_width,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_controlnet(unet, config: ToyModelConfig):
    """A depth ControlNet initialised from the UNet's encoder (the ControlNet paper's recipe).

    The conditioning image has the RGB image's size, so its embedding downsamples by the VAE's
    factor, as SD's depth ControlNet does (512 -> 64 there).
    """
    from diffusers import ControlNetModel

    halvings = len(config.vae_channels) - 1
    channels = tuple(16 * 2**i for i in range(halvings + 1))
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)


def build_scheduler(config: ToyModelConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="epsilon",
        clip_sample=False,
    )


def save_model(folder: Path, config: ToyModelConfig, text_encoder, vae, unet, controlnet=None) -> Path:
    """Write the diffusers layout (safetensors only); ControlNet in ``folder/controlnet``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_tokenizer(folder / "tokenizer", config)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    build_scheduler(config).save_pretrained(folder / "scheduler")
    if controlnet is not None:
        controlnet.save_pretrained(folder / "controlnet", safe_serialization=True)
    write_model_index(folder, vae=True)
    return folder


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
