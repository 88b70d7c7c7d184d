"""Writers for the parts of a diffusers model folder that have no ``save_pretrained``.

Used by the models the project builds itself (the tiny test model, the embedded toy model), so
their folders have exactly the layout ``DiffusionModel.load`` reads for Stable Diffusion.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}
"""CLIP's special tokens; padding with the end token as SD 1.x does."""


def write_clip_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str], max_tokens: int) -> Path:
    """A CLIPTokenizer folder (vocab.json, merges.txt, configs) for a handmade BPE vocabulary."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_tokens, "do_lower_case": True, **SPECIAL_TOKENS}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS), encoding="utf-8")
    return folder


def write_model_index(folder: Path, *, vae: bool) -> Path:
    """``model_index.json`` of a Stable-Diffusion-style folder; ``vae=False`` for pixel space."""
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"] if vae else [None, None],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    path = Path(folder) / "model_index.json"
    path.write_text(json.dumps(index, indent=2), encoding="utf-8")
    return path
