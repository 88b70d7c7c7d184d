"""Training of the embedded toy model on captures of the toy world (torch only, no bpy).

Three phases, each resumable from its checkpoint in a work folder, as SD was built:

0. the ``AutoencoderKL`` alone: L1 + L2 reconstruction and a small KL term (LDM section 3,
   without the perceptual and adversarial terms), then the latent scale ``1 / std`` (SD: 0.18215);
1. the text encoder and the UNet together on the (cached) latents of the images and of their
   mirror images, with the plain epsilon-prediction loss (DDPM eq. 14), classifier-free dropout of
   the prompt and an EMA of the weights;
2. a depth ControlNet initialised from the (EMA) UNet's encoder, trained with the UNet and text
   encoder frozen, on the same latents and their depth condition (backend/diffusion/control.py).

Checkpoints: ``WORK/vae``, ``WORK/base`` and ``WORK/controlnet`` (``.safetensors`` + ``.json``,
backend/checkpoint.py: no pickle). The ``*.pt`` pickles of earlier versions are never loaded.
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
from .components import ToyModelConfig, build_controlnet, build_scheduler, build_text_encoder, build_unet, build_vae


@dataclass
class TrainConfig:
    """Optimisation settings of both phases."""

    vae_steps: int = 1800
    """Steps of phase 0 (the autoencoder)."""
    vae_batch_size: int = 16
    """Images per autoencoder step."""
    vae_learning_rate: float = 1e-3
    """Peak AdamW learning rate of phase 0."""
    kl_weight: float = 1e-6
    """Weight of the KL term of phase 0 (LDM's choice for its KL-f8 autoencoders)."""
    steps: int = 2500
    """Steps of phase 1 (text encoder + UNet)."""
    controlnet_steps: int = 600
    """Steps of phase 2 (ControlNet)."""
    batch_size: int = 32
    """Latents per step of phases 1 and 2."""
    learning_rate: float = 5e-4
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


@dataclass
class LatentDataset:
    """The training set as phases 1 and 2 see it: VAE latents of every image and of its mirror."""

    latents: Tensor
    """[N, C, h, w] scaled posterior means of the images."""
    mirrored: Tensor
    """[N, C, h, w] the same for the horizontally mirrored images (a flipped latent is not the
    latent of the flipped image)."""
    controls: Tensor
    """[N, 3, S, S] depth condition in [0, 1] (of the unmirrored image)."""
    prompts: list[str]
    """[N] prompt of each image."""


def load_toy_dataset(capture_root: Path, split: str = "train") -> ToyDataset:
    """Read the captures under ``capture_root`` (one folder per object, with ``prompt.json``)."""
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
            if frame.get("split", "train") != split:
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


def _batch(dataset: LatentDataset, ids: Tensor, empty_ids: Tensor, config: TrainConfig, g: torch.Generator):
    n = dataset.latents.shape[0]
    index = torch.randint(0, n, (config.batch_size,), generator=g)
    flip = torch.rand(config.batch_size, generator=g) < 0.5
    z0 = torch.where(flip[:, None, None, None], dataset.mirrored[index], dataset.latents[index])
    control = dataset.controls[index]
    control = torch.where(flip[:, None, None, None], control.flip(-1), control)
    tokens = ids[index].clone()
    drop = torch.rand(config.batch_size, generator=g) < config.cfg_dropout
    tokens[drop] = empty_ids
    return z0, control, tokens


def _noisy(x0: Tensor, alphas_cumprod: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    t = torch.randint(0, alphas_cumprod.shape[0], (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps, t, eps


VAE_CHECKPOINT = "vae"
"""Phase 0's checkpoint: ``WORK/vae.safetensors`` + ``WORK/vae.json``."""
BASE_CHECKPOINT = "base"
"""Phase 1's checkpoint: ``WORK/base.safetensors`` + ``WORK/base.json``."""
CONTROLNET_CHECKPOINT = "controlnet"
"""Phase 2's checkpoint: ``WORK/controlnet.safetensors`` + ``WORK/controlnet.json``."""


def _resume(stem: Path, stage: str, log: Callable[[str], None], inputs: str = "") -> dict | None:
    """The state saved at ``stem``, or None to start from scratch; an old pickle there is only reported.

    ``inputs`` is the digest of what the phase trains on (the latents for phase 1, the frozen UNet
    and text encoder for phase 2): a checkpoint made on other inputs is not resumed, or a re-trained
    autoencoder or a longer phase 1 would silently keep a phase trained on the old one.
    """
    old = legacy_checkpoint(stem)
    if old is not None:
        log(f"{stage}: ignoring {old}: pickle checkpoints of earlier versions are never loaded (they can run code)")
    if not checkpoint_exists(stem):
        return None
    state = load_state(stem, stage=stage)
    if inputs and state.get("inputs", inputs) != inputs:
        log(f"{stage}: starting over: its checkpoint {stem} was trained on other inputs (an earlier phase changed)")
        return None
    return state


def digest(*tensors: Tensor) -> str:
    """SHA-256 of the tensors' bytes: identifies a phase's inputs in its checkpoint."""
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def train_vae(
    dataset: ToyDataset,
    model_config: ToyModelConfig,
    config: TrainConfig,
    work_dir: Path,
    log: Callable[[str], None] = print,
):
    """Phase 0. Returns the autoencoder with ``config.scaling_factor`` set to 1 / std of its latents."""
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt = work_dir / VAE_CHECKPOINT
    torch.manual_seed(config.seed)
    vae = build_vae(model_config)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate, weight_decay=1e-4)
    g = torch.Generator().manual_seed(config.seed + 2)
    start = 0
    state = _resume(ckpt, "toy phase-0 training", log)
    if state is not None:
        with restoring(ckpt, stage="toy phase-0 training"):
            vae.load_state_dict(state["vae"])
            optimizer.load_state_dict(state["optimizer"])
            check_optimizer_state(optimizer)
            g.set_state(state["generator"])
            start = int(state["step"])
        log(f"phase 0: resuming at step {start}")
    vae.train()
    schedule = TrainConfig(learning_rate=config.vae_learning_rate, warmup_steps=config.warmup_steps)
    clock = time.perf_counter()
    n = dataset.images.shape[0]
    for step in range(start, config.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config.vae_steps, schedule)
        index = torch.randint(0, n, (config.vae_batch_size,), generator=g)
        flip = torch.rand(config.vae_batch_size, generator=g) < 0.5
        x = dataset.images[index]
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)
        recon = vae.decode(z).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + config.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        done = step + 1
        if done % 50 == 0 or done == config.vae_steps:
            rate = (time.perf_counter() - clock) / (done - start)
            psnr = -10.0 * math.log10(max(F.mse_loss(recon, x).item() / 4.0, 1e-12))
            log(f"phase 0: step {done}/{config.vae_steps} loss {loss.item():.4f} psnr {psnr:.1f} dB ({rate:.2f} s/step)")
        if done % config.checkpoint_every == 0 or done == config.vae_steps:
            save_state(ckpt, {"step": done, "vae": vae.state_dict(), "optimizer": optimizer.state_dict(),
                              "generator": g.get_state()})
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        means = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in dataset.images.split(256)])
    vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    return vae


@torch.no_grad()
def encode_dataset(vae, dataset: ToyDataset) -> LatentDataset:
    """The scaled latents of every image and of its mirror (phase 1's inputs)."""
    scale = float(vae.config.scaling_factor)

    def encode(images: Tensor) -> Tensor:
        return torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images.split(256)]) * scale

    return LatentDataset(encode(dataset.images), encode(dataset.images.flip(-1)), dataset.controls, dataset.prompts)


def train_base(
    dataset: LatentDataset,
    tokenizer,
    model_config: ToyModelConfig,
    config: TrainConfig,
    work_dir: Path,
    log: Callable[[str], None] = print,
    init: tuple[torch.nn.Module, torch.nn.Module] | None = None,
):
    """Phase 1. Returns (text_encoder, unet) with the EMA weights.

    ``init``: a trained (text_encoder, unet) to continue from (fine-tuning a shipped model: its
    EMA weights start both the trained and the EMA copies); None trains from scratch.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt = work_dir / BASE_CHECKPOINT
    torch.manual_seed(config.seed)
    text_encoder, unet = build_text_encoder(model_config), build_unet(model_config)
    inputs = digest(dataset.latents, dataset.mirrored)
    if init is not None:
        text_encoder.load_state_dict(init[0].state_dict())
        unet.load_state_dict(init[1].state_dict())
        # A checkpoint of a from-scratch run (or of another starting model) is not this run's.
        inputs = digest(dataset.latents, dataset.mirrored, *text_encoder.state_dict().values(),
                        *unet.state_dict().values())
    ema_te, ema_unet = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-4)
    g = torch.Generator().manual_seed(config.seed)
    start = 0
    state = _resume(ckpt, "toy phase-1 training", log, inputs)
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
            save_state(ckpt, {"step": done, "inputs": inputs, "te": text_encoder.state_dict(), "unet": unet.state_dict(),
                              "ema_te": ema_te.state_dict(), "ema_unet": ema_unet.state_dict(),
                              "optimizer": optimizer.state_dict(), "generator": g.get_state()})
    return ema_te.eval(), ema_unet.eval()


def train_controlnet(
    dataset: LatentDataset,
    tokenizer,
    text_encoder,
    unet,
    model_config: ToyModelConfig,
    config: TrainConfig,
    work_dir: Path,
    log: Callable[[str], None] = print,
    init: torch.nn.Module | None = None,
):
    """Phase 2: the depth ControlNet on the frozen phase-1 model. Returns the ControlNet.

    ``init``: a trained ControlNet to continue from (fine-tuning); None starts from the UNet's encoder.
    """
    ckpt = work_dir / CONTROLNET_CHECKPOINT
    torch.manual_seed(config.seed + 1)
    controlnet = build_controlnet(unet, model_config)
    if init is not None:
        controlnet.load_state_dict(init.state_dict())
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=config.learning_rate * 0.5, weight_decay=1e-4)
    g = torch.Generator().manual_seed(config.seed + 1)
    start = 0
    inputs = digest(*unet.state_dict().values(), *text_encoder.state_dict().values(),
                    *(controlnet.state_dict().values() if init is not None else ()))
    state = _resume(ckpt, "toy phase-2 training", log, inputs)
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
            save_state(ckpt, {"step": done, "inputs": inputs, "controlnet": controlnet.state_dict(), "optimizer": optimizer.state_dict(),
                              "generator": g.get_state()})
    return controlnet.eval()


@torch.no_grad()
def sample_images(
    vae,
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
    """DDIM samples in latent space with classifier-free guidance (diffusers convention), decoded."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(build_scheduler(model_config).config)
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    n, s = len(prompts), model_config.latent_size
    x = torch.randn((n, model_config.latent_channels, s, s), generator=g)
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
    images = vae.decode(x / float(vae.config.scaling_factor)).sample
    return ((images + 1) / 2).clamp(0, 1)


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
