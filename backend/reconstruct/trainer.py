"""Fit an Instant-NGP field to a capture (Mueller et al. 2022; losses as in nerfacc's examples).

Loss per step, on a random batch of training rays (half on the object, half anywhere):

    L = mean |C - C_gt|^2                                  photometric, white background
      + depth_weight * mean_fg |D - D_gt| / box size       planar depth where the capture has one
      + mask_weight  * mean |O - alpha|^2                  opacity vs the capture's alpha

Resumable: every ``checkpoint_every`` steps (and on cancel) the model, optimizer, scheduler,
occupancy grid, RNG state and step go to ``out_dir/checkpoints/reconstruct.pt`` (atomically); a
later call with the same inputs resumes from it and ends bit-for-bit where an uninterrupted run
ends: every random draw comes from one ``torch.Generator`` whose state is checkpointed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backend.data.capture_dataset import CaptureDataset, CaptureViews
from backend.field.ngp_field import NGPField, NGPFieldConfig, save_field
from backend.progress import JobCancelled, StageReporter
from backend.render.samplers import Sampler, make_sampler
from backend.render.volume import render_image, render_rays
from blender_piva import contract

CHECKPOINT_NAME = "reconstruct.pt"
FIELD_DIR = "field"


@dataclass
class TrainerConfig:
    """Knobs of the fit that the job contract does not expose (contract.ReconstructSettings does)."""

    field: NGPFieldConfig | None = None
    """Field hyper-parameters; None = ``NGPFieldConfig.cpu_preset()`` on the CPU, the paper's on CUDA."""
    occupancy_resolution: int = 64
    """Cells per axis of the occupancy grid that skips empty space (0 = no skipping)."""
    foreground_fraction: float = 0.5
    """Share of each batch drawn from pixels the object covers (the rest: any pixel)."""
    final_lr_fraction: float = 0.03
    """Learning rate at the last step, as a fraction of the initial one (exponential decay)."""
    warmup_steps: int = 50
    """Steps of linear learning-rate warm-up (Adam's first steps on a hash grid are noisy)."""
    mixed_precision: bool = True
    """Use fp16 autocast on CUDA (ignored on the CPU, which always runs float32)."""
    eval_views: int = 8
    """Held-out views rendered for the final metrics (the first ones of the eval split)."""
    preview_size: int = 64
    """Longest side of preview renders, pixels (smaller previews cost less on the CPU)."""


def lr_factor(step: int, total: int, warmup: int, final_fraction: float) -> float:
    """Linear warm-up, then exponential decay to ``final_fraction`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return final_fraction**progress


def fit_field(
    dataset: CaptureDataset,
    settings: contract.ReconstructSettings,
    out_dir: Path,
    *,
    device: torch.device,
    seed: int,
    reporter: StageReporter,
    config: TrainerConfig | None = None,
) -> dict[str, float]:
    """Fit the field, save it to ``out_dir/field`` and return held-out metrics.

    Returns ``heldout_psnr_db`` (mean over held-out views), ``depth_error_rel`` (mean |planar depth
    error| on held-out foreground pixels divided by the aabb's longest side), ``fit_seconds``
    (this call's optimisation time) and ``final_loss``. Raises JobCancelled (after checkpointing)
    when ``reporter.should_stop()``.
    """
    settings.validate()
    config = config or TrainerConfig()
    device = torch.device(device)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / contract.CHECKPOINT_DIR / CHECKPOINT_NAME
    field_config = config.field or (NGPFieldConfig() if device.type == "cuda" else NGPFieldConfig.cpu_preset())
    field_config = dataclasses.replace(field_config, aabb=dataset.aabb.tolist())
    fingerprint = _fingerprint(settings, config, field_config, seed, dataset)

    # 1. Model, sampler, optimiser; deterministic initialisation without touching the global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        field = NGPField(field_config).to(device)
    sampler = make_sampler(field.aabb, settings.samples_per_ray, device, occupancy_resolution=config.occupancy_resolution)
    optimizer = torch.optim.Adam(field.parameters(), lr=settings.learning_rate, betas=(0.9, 0.99), eps=1e-15)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, settings.steps, config.warmup_steps, config.final_lr_fraction)
    )
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    use_amp = device.type == "cuda" and config.mixed_precision
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # 2. Training rays: all pixels flattened, foreground ones indexed separately.
    views = dataset.train
    rays_o, rays_d = views.all_rays()
    rays_o, rays_d = rays_o.reshape(-1, 3).to(device), rays_d.reshape(-1, 3).to(device)
    rgb_gt = views.rgb.reshape(-1, 3).to(device)
    alpha_gt = views.alpha.reshape(-1).to(device)
    depth_gt = views.depth.reshape(-1).to(device)
    fg_index = torch.nonzero(alpha_gt > 0.5).squeeze(1)
    box_size = float((dataset.aabb[1] - dataset.aabb[0]).max())

    start = 0
    if ckpt_path.is_file():
        start = _load_checkpoint(ckpt_path, fingerprint, field, optimizer, scheduler, sampler, generator, scaler, device)
        reporter.log(f"resuming the fit from step {start} ({ckpt_path})")

    def save(step: int) -> None:
        _save_checkpoint(ckpt_path, step, fingerprint, field, optimizer, scheduler, sampler, generator, scaler)

    reporter.begin(settings.steps, f"fitting the field: {settings.steps} steps of {settings.rays_per_batch} rays")
    t0 = time.perf_counter()
    losses: dict[str, float] = {}
    n_fg = min(int(round(settings.rays_per_batch * config.foreground_fraction)), fg_index.numel())
    for step in range(start, settings.steps):
        if reporter.should_stop():
            save(step)
            raise JobCancelled(reporter.stage, step)
        field.train()
        sampler.update(step, field.density, generator)
        # 3. Random batch: n_fg rays on the object, the rest uniform over all pixels.
        pick_fg = fg_index[torch.randint(0, max(fg_index.numel(), 1), (n_fg,), device=device, generator=generator)]
        pick_all = torch.randint(0, rgb_gt.shape[0], (settings.rays_per_batch - n_fg,), device=device, generator=generator)
        idx = torch.cat([pick_fg, pick_all])
        o, d = rays_o[idx], rays_d[idx]
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            samples = sampler.sample(o, d, sigma_fn=field.density, stratified=True, generator=generator)
            out = render_rays(field, o, d, samples, background=1.0)
        # 4. Loss terms (float32).
        rgb_loss = torch.mean((out["rgb"].float() - rgb_gt[idx]) ** 2)
        has_depth = (depth_gt[idx] > 0) & (alpha_gt[idx] > 0.5)
        depth_loss = (
            (out["depth"].float()[has_depth] - depth_gt[idx][has_depth]).abs().mean() / box_size
            if bool(has_depth.any())
            else rgb_loss.new_zeros(())
        )
        mask_loss = torch.mean((out["opacity"].float() - alpha_gt[idx]) ** 2)
        loss = rgb_loss + settings.depth_weight * depth_loss + settings.mask_weight * mask_loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        done = step + 1
        losses = {
            "loss": loss.item(),
            "rgb": rgb_loss.item(),
            "psnr": -10.0 * math.log10(max(rgb_loss.item(), 1e-10)),
            "depth": depth_loss.item(),
            "mask": mask_loss.item(),
            "samples_per_ray": samples.t_starts.numel() / settings.rays_per_batch,
        }
        reporter.progress(done, settings.steps, losses)
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            save(done)
        if reporter.preview_dir is not None and (done % settings.preview_every == 0 or done == settings.steps):
            reporter.preview(done, _preview(field, sampler, dataset, config.preview_size))
    fit_seconds = time.perf_counter() - t0

    # 5. Save the field and measure it on the held-out views.
    field.eval()
    save_field(out_dir / FIELD_DIR, field)
    metrics = evaluate(field, dataset.eval if dataset.eval is not None else dataset.train, box_size, sampler, config.eval_views)
    metrics["fit_seconds"] = fit_seconds
    metrics["final_loss"] = losses.get("loss", float("nan"))
    reporter.log(f"held-out PSNR {metrics['heldout_psnr_db']:.2f} dB, depth error {metrics['depth_error_rel']:.4f}")
    return metrics


@torch.no_grad()
def evaluate(field: NGPField, views: CaptureViews, box_size: float, sampler: Sampler | None, max_views: int) -> dict[str, float]:
    """Mean PSNR over views and mean |planar depth error| / box size over foreground pixels."""
    device = field.aabb.device
    psnrs, depth_err_sum, depth_count = [], 0.0, 0
    for i in range(min(len(views), max_views)):
        out = render_image(field, views.c2w[i].to(device), views.intrinsics[i], sampler=sampler)
        mse = float(torch.mean((out["rgb"].cpu() - views.rgb[i]) ** 2))
        psnrs.append(-10.0 * math.log10(max(mse, 1e-10)))
        fg = (views.alpha[i] > 0.5) & (views.depth[i] > 0)
        depth_err_sum += float((out["depth"].cpu()[fg] - views.depth[i][fg]).abs().sum())
        depth_count += int(fg.sum())
    return {
        "heldout_psnr_db": float(np.mean(psnrs)),
        "depth_error_rel": depth_err_sum / max(depth_count, 1) / box_size,
    }


def _preview(field: NGPField, sampler: Sampler, dataset: CaptureDataset, size: int) -> np.ndarray:
    views = dataset.eval if dataset.eval is not None else dataset.train
    intr = views.intrinsics[0]
    s = min(1.0, size / max(intr.w, intr.h))
    small = dataclasses.replace(
        intr, w=max(1, round(intr.w * s)), h=max(1, round(intr.h * s)), fl_x=intr.fl_x * s, fl_y=intr.fl_y * s, cx=intr.cx * s, cy=intr.cy * s
    )
    field.eval()
    out = render_image(field, views.c2w[0].to(field.aabb.device), small, sampler=sampler)
    return out["rgb"].cpu().numpy()


def _fingerprint(settings, config: TrainerConfig, field_config: NGPFieldConfig, seed: int, dataset: CaptureDataset) -> str:
    """Hash of everything that must match for a checkpoint to be resumable."""
    payload = {
        "settings": dataclasses.asdict(settings),
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("field", "eval_views", "preview_size")},
        "field": dataclasses.asdict(field_config),
        "seed": seed,
        "train_views": dataset.train.names,
        "train_shape": list(dataset.train.rgb.shape),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_checkpoint(path: Path, step: int, fingerprint: str, field, optimizer, scheduler, sampler, generator, scaler) -> None:
    state = {
        "step": step,
        "fingerprint": fingerprint,
        "field": field.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "sampler": sampler.state_dict(),
        "generator": generator.get_state(),
        "scaler": scaler.state_dict(),
        # nerfacc's CUDA sampler draws from the global CUDA RNG.
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_checkpoint(path: Path, fingerprint: str, field, optimizer, scheduler, sampler, generator, scaler, device) -> int:
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except (RuntimeError, EOFError, OSError) as exc:
        raise RuntimeError(f"{path} is unreadable ({exc}); delete it to restart the fit from scratch") from None
    if state.get("fingerprint") != fingerprint:
        raise RuntimeError(
            f"{path} belongs to a fit with other settings, seed or capture; delete {path.parent} to start over"
        )
    field.load_state_dict(state["field"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
    scaler.load_state_dict(state["scaler"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return int(state["step"])
