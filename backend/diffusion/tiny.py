"""A tiny but complete Stable-Diffusion-style model folder, built offline from configs.

Every component of SD 2.x is present (UNet, depth ControlNet, VAE, CLIP text encoder and tokenizer,
scheduler) at a few thousand parameters each, with random weights drawn under
``torch.manual_seed(seed)``. The folder follows the diffusers layout (``model_index.json``,
one subfolder per component, safetensors weights), so :meth:`DiffusionModel.load` reads it with the
same code as a real checkpoint. Tests and benchmarks use it; nothing is downloaded.

Geometry: the VAE downsamples by 2 (two encoder blocks), latents have 4 channels, the text
encoder emits 16 tokens of width 32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .layout import write_clip_tokenizer, write_model_index

TEXT_WIDTH = 32
"""Width of the tiny text encoder's token embeddings (the UNet's cross_attention_dim)."""
MAX_TOKENS = 16
"""Tokens per prompt (77 in real CLIP; 16 keeps the tiny model fast)."""
LATENT_CHANNELS = 4

_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]
_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
_MERGES = [("a", "t</w>"), ("e", "d</w>"), ("r", "e"), ("o", "n</w>"), ("t", "h"), ("th", "e</w>")]


def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """A handmade CLIP-style BPE vocabulary: every character alone and word-final, plus a few merges."""
    tokens = list(_SPECIALS)
    for c in _CHARS:
        tokens += [c, c + "</w>"]
    merges = []
    for a, b in _MERGES:
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_tiny_components(seed: int = 0) -> dict[str, object]:
    """Instantiate the tiny components in float32 on the CPU (random weights, fixed by ``seed``)."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = _vocab_and_merges()
    blocks = (8, 16)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=blocks,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    torch.manual_seed(seed + 1)
    controlnet = ControlNetModel(
        in_channels=LATENT_CHANNELS,
        block_out_channels=blocks,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,
        norm_num_groups=4,
        # one stride-2 conv: the conditioning image (image size) lands on the latent grid (VAE x2)
        conditioning_embedding_out_channels=(8, 16),
    )
    # a fresh ControlNet's output convs are zero (it starts as a no-op); a trained one is not
    with torch.no_grad():
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.weight.normal_(0.0, 0.1)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=blocks,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=32,
    )
    torch.manual_seed(seed + 3)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=TEXT_WIDTH,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
    )
    return {
        "unet": unet.eval(),
        "controlnet": controlnet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "scheduler": scheduler,
    }


def save_tiny_model(folder: str | Path, *, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Write the tiny model in the diffusers layout under ``folder`` and return it.

    ``folder/controlnet`` holds the depth ControlNet (pass it as ``controlnet=`` to
    :meth:`DiffusionModel.load`); the rest is a Stable Diffusion pipeline folder.
    ``prediction_type`` = ``v_prediction`` writes an SD-2.1-768-style scheduler config.
    """
    from diffusers import DDPMScheduler

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = build_tiny_components(seed)
    for name in ("unet", "controlnet", "vae", "text_encoder"):
        parts[name].save_pretrained(folder / name, safe_serialization=True)
    scheduler = DDPMScheduler.from_config({**parts["scheduler"].config, "prediction_type": prediction_type})
    scheduler.save_pretrained(folder / "scheduler")

    vocab, merges = _vocab_and_merges()
    write_clip_tokenizer(folder / "tokenizer", vocab, merges, MAX_TOKENS)
    write_model_index(folder, vae=True)
    return folder
