"""Training of the embedded toy model on captures of the toy world (torch only, no bpy).

Two phases, both resumable from checkpoints in a work folder:

1. the text encoder and the UNet together, with the plain epsilon-prediction loss (DDPM eq. 14),
   classifier-free dropout of the prompt, random horizontal flips and an EMA of the weights;
2. a depth ControlNet initialised from the (EMA) UNet's encoder, trained with the UNet and text
   encoder frozen, on the same images and their depth condition (backend/diffusion/control.py).

Checkpoints: ``WORK/base.safetensors`` + ``base.json`` and ``WORK/controlnet.safetensors`` +
``controlnet.json`` (backend/checkpoint.py: no pickle). The ``base.pt`` / ``controlnet.pt``
pickles of earlier versions are never loaded.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..checkpoint import check_optimizer_state, checkpoint_exists, legacy_checkpoint, load_state, restoring, save_state
from ..diffusion.control import depth_to_control
from .components import ToyModelConfig, build_controlnet, build_scheduler, build_text_encoder, build_unet


@dataclass
class TrainConfig:
    """Optimisation settings of both phases."""

    steps: int = 3000
    """Steps of phase 1 (text encoder + UNet)."""
    controlnet_steps: int = 800
    """Steps of phase 2 (ControlNet)."""
    batch_size: int = 32
    """Images per step."""
    learning_rate: float = 4e-4
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    cfg_dropout: float = 0.1
    """Probability of training on the empty prompt (classifier-free guidance)."""
    ema_decay: float = 0.999
    """Decay of the weight EMA used for the shipped phase-1 weights."""
    checkpoint_every: int = 200
    """Steps between checkpoints."""
    seed: int = 0
    """Seed of initialisation, batches and noise."""


@dataclass
class ToyDataset:
    """Every training view of every toy object, in memory."""

    images: Tensor
    """[N, 3, S, S] in [-1, 1], composited on white."""
    controls: Tensor
    """[N, 3, S, S] depth condition in [0, 1]."""
    prompts: list[str]
    """[N] prompt of each image."""


def load_toy_dataset(capture_root: Path) -> ToyDataset:
    """Read the captures written by scripts/train_toy_model.py (one folder per object)."""
    from PIL import Image

    images, controls, prompts = [], [], []
    folders = sorted(p for p in Path(capture_root).iterdir() if (p / "transforms.json").is_file())
    if not folders:
        raise FileNotFoundError(f"no captures under {capture_root}; run scripts/train_toy_model.py to render them")
    for folder in folders:
        meta = json.loads((folder / "transforms.json").read_text())
        prompt = json.loads((folder / "prompt.json").read_text())["prompt"]
        scale = float(meta["depth_unit_scale_factor"])
        for frame in meta["frames"]:
            if frame.get("split", "train") != "train":
                continue
            rgba = np.asarray(Image.open(folder / frame["file_path"]).convert("RGBA"), dtype=np.float32) / 255.0
            alpha = rgba[..., 3:4]
            rgb = rgba[..., :3] * alpha + (1.0 - alpha)
            depth = np.asarray(Image.open(folder / frame["depth_file_path"]), dtype=np.float32) * scale
            images.append(torch.from_numpy(rgb).permute(2, 0, 1) * 2.0 - 1.0)
            controls.append(depth_to_control(torch.from_numpy(depth), torch.from_numpy(alpha[..., 0]))[0])
            prompts.append(prompt)
    return ToyDataset(torch.stack(images), torch.stack(controls), prompts)


def tokenize(tokenizer, prompts: list[str]) -> Tensor:  # -> [B, max_tokens] long
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def _batch(dataset: ToyDataset, ids: Tensor, empty_ids: Tensor, config: TrainConfig, g: torch.Generator):
    n = dataset.images.shape[0]
    index = torch.randint(0, n, (config.batch_size,), generator=g)
    x0 = dataset.images[index]
    control = dataset.controls[index]
    flip = torch.rand(config.batch_size, generator=g) < 0.5
    x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    control = torch.where(flip[:, None, None, None], control.flip(-1), control)
    tokens = ids[index].clone()
    drop = torch.rand(config.batch_size, generator=g) < config.cfg_dropout
    tokens[drop] = empty_ids
    return x0, control, tokens


def _noisy(x0: Tensor, alphas_cumprod: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    t = torch.randint(0, alphas_cumprod.shape[0], (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps, t, eps


BASE_CHECKPOINT = "base"
"""Phase 1's checkpoint: ``WORK/base.safetensors`` + ``WORK/base.json``."""
CONTROLNET_CHECKPOINT = "controlnet"
"""Phase 2's checkpoint: ``WORK/controlnet.safetensors`` + ``WORK/controlnet.json``."""


def _resume(stem: Path, stage: str, log: Callable[[str], None]) -> dict | None:
    """The state saved at ``stem``, or None to start from scratch; an old pickle there is only reported."""
    old = legacy_checkpoint(stem)
    if old is not None:
        log(f"{stage}: ignoring {old}: pickle checkpoints of earlier versions are never loaded (they can run code)")
    return load_state(stem, stage=stage) if checkpoint_exists(stem) else None


def train_base(
    dataset: ToyDataset,
    tokenizer,
    model_config: ToyModelConfig,
    config: TrainConfig,
    work_dir: Path,
    log: Callable[[str], None] = print,
):
    """Phase 1. Returns (text_encoder, unet) with the EMA weights."""
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt = work_dir / BASE_CHECKPOINT
    torch.manual_seed(config.seed)
    text_encoder, unet = build_text_encoder(model_config), build_unet(model_config)
    ema_te, ema_unet = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-4)
    g = torch.Generator().manual_seed(config.seed)
    start = 0
    state = _resume(ckpt, "toy phase-1 training", log)
    if state is not None:
        with restoring(ckpt, stage="toy phase-1 training"):
            for module, key in ((text_encoder, "te"), (unet, "unet"), (ema_te, "ema_te"), (ema_unet, "ema_unet")):
                module.load_state_dict(state[key])
            optimizer.load_state_dict(state["optimizer"])
            check_optimizer_state(optimizer)
            g.set_state(state["generator"])
            start = int(state["step"])
        log(f"phase 1: resuming at step {start}")
    alphas = build_scheduler(model_config).alphas_cumprod.float()
    ids = tokenize(tokenizer, dataset.prompts)
    empty = tokenize(tokenizer, [""])[0]
    text_encoder.train(), unet.train()
    ema_pairs = list(zip(list(ema_te.parameters()) + list(ema_unet.parameters()), params))
    clock = time.perf_counter()
    for step in range(start, config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config.steps, config)
        x0, _, tokens = _batch(dataset, ids, empty, config, g)
        x_t, t, eps = _noisy(x0, alphas, g)
        pred = unet(x_t, t, encoder_hidden_states=text_encoder(tokens)[0]).sample
        loss = F.mse_loss(pred, eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for ema_p, p in ema_pairs:
                ema_p.lerp_(p, 1.0 - decay)
        done = step + 1
        if done % 50 == 0 or done == config.steps:
            rate = (time.perf_counter() - clock) / (done - start)
            log(f"phase 1: step {done}/{config.steps} loss {loss.item():.4f} ({rate:.2f} s/step)")
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_state(ckpt, {"step": done, "te": text_encoder.state_dict(), "unet": unet.state_dict(),
                              "ema_te": ema_te.state_dict(), "ema_unet": ema_unet.state_dict(),
                              "optimizer": optimizer.state_dict(), "generator": g.get_state()})
    return ema_te.eval(), ema_unet.eval()


def train_controlnet(
    dataset: ToyDataset,
    tokenizer,
    text_encoder,
    unet,
    model_config: ToyModelConfig,
    config: TrainConfig,
    work_dir: Path,
    log: Callable[[str], None] = print,
):
    """Phase 2: the depth ControlNet on the frozen phase-1 model. Returns the ControlNet."""
    ckpt = work_dir / CONTROLNET_CHECKPOINT
    torch.manual_seed(config.seed + 1)
    controlnet = build_controlnet(unet)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=config.learning_rate * 0.5, weight_decay=1e-4)
    g = torch.Generator().manual_seed(config.seed + 1)
    start = 0
    state = _resume(ckpt, "toy phase-2 training", log)
    if state is not None:
        with restoring(ckpt, stage="toy phase-2 training"):
            controlnet.load_state_dict(state["controlnet"])
            optimizer.load_state_dict(state["optimizer"])
            check_optimizer_state(optimizer)
            g.set_state(state["generator"])
            start = int(state["step"])
        log(f"phase 2: resuming at step {start}")
    text_encoder.requires_grad_(False).eval()
    unet.requires_grad_(False).eval()
    alphas = build_scheduler(model_config).alphas_cumprod.float()
    ids = tokenize(tokenizer, dataset.prompts)
    empty = tokenize(tokenizer, [""])[0]
    controlnet.train()
    clock = time.perf_counter()
    for step in range(start, config.controlnet_steps):
        for group in optimizer.param_groups:
            group["lr"] = 0.5 * lr_at(step, config.controlnet_steps, config)
        x0, control, tokens = _batch(dataset, ids, empty, config, g)
        x_t, t, eps = _noisy(x0, alphas, g)
        with torch.no_grad():
            emb = text_encoder(tokens)[0]
        down, mid = controlnet(x_t, t, encoder_hidden_states=emb, controlnet_cond=control, return_dict=False)
        pred = unet(x_t, t, encoder_hidden_states=emb, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
        loss = F.mse_loss(pred, eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        done = step + 1
        if done % 50 == 0 or done == config.controlnet_steps:
            rate = (time.perf_counter() - clock) / (done - start)
            log(f"phase 2: step {done}/{config.controlnet_steps} loss {loss.item():.4f} ({rate:.2f} s/step)")
        if done % config.checkpoint_every == 0 or done == config.controlnet_steps:
            save_state(ckpt, {"step": done, "controlnet": controlnet.state_dict(), "optimizer": optimizer.state_dict(),
                              "generator": g.get_state()})
    return controlnet.eval()


@torch.no_grad()
def sample_images(
    unet,
    text_encoder,
    tokenizer,
    prompts: list[str],
    model_config: ToyModelConfig,
    *,
    steps: int = 50,
    guidance_scale: float = 5.0,
    seed: int = 0,
    controlnet=None,
    control: Tensor | None = None,
) -> Tensor:  # -> [B, 3, S, S] in [0, 1]
    """DDIM samples with classifier-free guidance (diffusers convention)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(build_scheduler(model_config).config)
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    n, s = len(prompts), model_config.image_size
    x = torch.randn((n, 3, s, s), generator=g)
    cond = text_encoder(tokenize(tokenizer, prompts))[0]
    uncond = text_encoder(tokenize(tokenizer, [""] * n))[0]
    for t in scheduler.timesteps:
        x_in = torch.cat([x, x])
        emb = torch.cat([uncond, cond])
        extra = {}
        if controlnet is not None and control is not None:
            down, mid = controlnet(x_in, t, encoder_hidden_states=emb, controlnet_cond=torch.cat([control, control]),
                                   return_dict=False)
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        e_u, e_c = unet(x_in, t, encoder_hidden_states=emb, **extra).sample.chunk(2)
        x = scheduler.step(e_u + guidance_scale * (e_c - e_u), t, x).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


def image_grid(images: Tensor, columns: int) -> np.ndarray:  # [B, 3, S, S] in [0, 1] -> [H, W, 3] uint8
    b, _, s, _ = images.shape
    rows = math.ceil(b / columns)
    grid = np.ones((rows * (s + 2), columns * (s + 2), 3), dtype=np.float32)
    for i in range(b):
        r, c = divmod(i, columns)
        grid[r * (s + 2) + 1 : r * (s + 2) + 1 + s, c * (s + 2) + 1 : c * (s + 2) + 1 + s] = (
            images[i].permute(1, 2, 0).numpy()
        )
    return (grid * 255 + 0.5).astype(np.uint8)
