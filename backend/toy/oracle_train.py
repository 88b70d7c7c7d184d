"""Training of the toy oracle (backend/toy/oracle.py) on labelled renders; resumable, no pickle.

The augmentations imitate what the oracle will judge besides clean Cycles renders: a fitted
field's renders and a diffusion model's samples are softer (blur), noisier (speckle), slightly
off-centre or off-scale (shift, zoom) and a little off in exposure. Colour hues are never jittered:
the colour label must stay true.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checkpoint import check_optimizer_state, checkpoint_exists, load_state, restoring, save_state
from .oracle import OracleConfig, ToyOracle

ORACLE_CHECKPOINT = "oracle"
"""The checkpoint's stem in the work folder: ``WORK/oracle.safetensors`` + ``WORK/oracle.json``."""


@dataclass(frozen=True)
class OracleTrainConfig:
    """Optimisation settings of the oracle."""

    steps: int = 1200
    """AdamW steps."""
    batch_size: int = 64
    """Images per step."""
    learning_rate: float = 2e-3
    """Peak learning rate (cosine decay to 5%)."""
    checkpoint_every: int = 250
    """Steps between checkpoints."""
    seed: int = 0
    """Seed of initialisation, batches and augmentations."""


@dataclass
class LabelledImages:
    """Renders on white with their labels."""

    images: Tensor
    """[N, 3, S, S] in [0, 1]."""
    colors: Tensor
    """[N] long: index into ``OracleConfig.colors``."""
    shapes: Tensor
    """[N] long: index into ``OracleConfig.shapes``."""


def augment(images: Tensor, g: torch.Generator) -> Tensor:  # [B, 3, S, S] in [0, 1] -> same
    """Random mirror, shift, zoom, blur, exposure and noise (see the module docstring)."""
    b = images.shape[0]
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], images.flip(-1), images)
    zoom = 0.8 + 0.45 * torch.rand(b, generator=g)
    shift = (torch.rand(b, 2, generator=g) - 0.5) * 0.3
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # padding with white: the background of every render
    x = F.grid_sample(x - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
    sigma = 1.2 * torch.rand(b, generator=g)
    radius = 3
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None].clamp(min=0.05) ** 2))
    kernel = kernel / kernel.sum(-1, keepdim=True)  # [B, K]
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    k_h = kernel[:, None, None, :].repeat_interleave(3, dim=0)  # [B*3, 1, 1, K]
    k_v = kernel[:, None, :, None].repeat_interleave(3, dim=0)
    flat = padded.reshape(1, b * 3, *padded.shape[-2:])
    flat = F.conv2d(F.conv2d(flat, k_h, groups=b * 3), k_v, groups=b * 3)
    x = flat.reshape(b, 3, *images.shape[-2:])
    exposure = 0.85 + 0.3 * torch.rand(b, 1, 1, 1, generator=g)
    x = 1.0 - (1.0 - x) * exposure  # darkens or lightens the object, keeps the white background
    noise = 0.06 * torch.rand(b, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    return (x + noise).clamp(0.0, 1.0)


def train_oracle(
    data: LabelledImages,
    oracle_config: OracleConfig,
    config: OracleTrainConfig,
    work_dir: Path,
    log: Callable[[str], None] = print,
) -> ToyOracle:
    """Train (or resume) the oracle; returns it in eval mode."""
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt = work_dir / ORACLE_CHECKPOINT
    torch.manual_seed(config.seed)
    oracle = ToyOracle(oracle_config)
    optimizer = torch.optim.AdamW(oracle.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    g = torch.Generator().manual_seed(config.seed)
    start = 0
    if checkpoint_exists(ckpt):
        state = load_state(ckpt, stage="toy oracle training")
        with restoring(ckpt, stage="toy oracle training"):
            oracle.load_state_dict(state["oracle"])
            optimizer.load_state_dict(state["optimizer"])
            check_optimizer_state(optimizer)
            g.set_state(state["generator"])
            start = int(state["step"])
        log(f"oracle: resuming at step {start}")
    oracle.train()
    n = data.images.shape[0]
    clock = time.perf_counter()
    for step in range(start, config.steps):
        progress = step / max(1, config.steps)
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        index = torch.randint(0, n, (config.batch_size,), generator=g)
        x = augment(data.images[index], g)
        color_logits, shape_logits = oracle(x)
        loss = F.cross_entropy(color_logits, data.colors[index]) + F.cross_entropy(shape_logits, data.shapes[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done = step + 1
        if done % 50 == 0 or done == config.steps:
            rate = (time.perf_counter() - clock) / (done - start)
            log(f"oracle: step {done}/{config.steps} loss {loss.item():.4f} ({rate:.2f} s/step)")
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_state(ckpt, {"step": done, "oracle": oracle.state_dict(), "optimizer": optimizer.state_dict(),
                              "generator": g.get_state()})
    return oracle.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(oracle: ToyOracle, data: LabelledImages) -> tuple[float, float]:
    """(colour accuracy, shape accuracy) on ``data``, unaugmented."""
    colors, shapes = [], []
    for chunk in range(0, data.images.shape[0], 256):
        c, s = oracle(data.images[chunk : chunk + 256])
        colors.append(c.argmax(-1))
        shapes.append(s.argmax(-1))
    color_ok = (torch.cat(colors) == data.colors).float().mean().item()
    shape_ok = (torch.cat(shapes) == data.shapes).float().mean().item()
    return color_ok, shape_ok


def load_labelled(capture_root: Path, oracle_config: OracleConfig) -> LabelledImages:
    """Every view (training and evaluation splits) of the captures under ``capture_root``."""
    import json

    import numpy as np
    from PIL import Image

    images, colors, shapes = [], [], []
    folders = sorted(p for p in Path(capture_root).iterdir() if (p / "prompt.json").is_file())
    if not folders:
        raise FileNotFoundError(f"no labelled captures under {capture_root}; render them with toy_world.renders")
    for folder in folders:
        label = json.loads((folder / "prompt.json").read_text())
        meta = json.loads((folder / "transforms.json").read_text())
        for frame in meta["frames"]:
            rgba = np.asarray(Image.open(folder / frame["file_path"]).convert("RGBA"), dtype=np.float32) / 255.0
            rgb = rgba[..., :3] * rgba[..., 3:4] + (1.0 - rgba[..., 3:4])
            images.append(torch.from_numpy(rgb).permute(2, 0, 1))
            colors.append(oracle_config.colors.index(label["color"]))
            shapes.append(oracle_config.shapes.index(label["shape"]))
    return LabelledImages(torch.stack(images), torch.tensor(colors), torch.tensor(shapes))
