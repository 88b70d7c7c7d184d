"""Fit an Instant-NGP field to a capture (Mueller et al. 2022; losses as in nerfacc's examples).

Loss per step, on a random batch of training rays (half on the object, half anywhere):

    L = mean |C - C_gt|^2                                  photometric, white background
      + depth_weight * mean_fg |D - D_gt| / box size       planar depth where the capture has one
      + mask_weight  * mean |O - alpha|^2                  opacity vs the capture's alpha

Resumable: every ``checkpoint_every`` steps (and on cancel) the model, optimizer, scheduler,
occupancy grid, RNG state and step go to ``out_dir/checkpoints/reconstruct.safetensors`` +
``reconstruct.json`` (backend/checkpoint.py: no pickle, JSON last); a later call with the same
inputs resumes from it and ends bit-for-bit where an uninterrupted run ends: every random draw
comes from one ``torch.Generator`` whose state is checkpointed. A ``reconstruct.pt`` of an earlier
version (a pickle) is never loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from backend.checkpoint import (
    STATE_SUFFIX,
    CheckpointError,
    check_optimizer_state,
    checkpoint_exists,
    checkpoint_paths,
    legacy_checkpoint,
    load_state,
    restoring,
    save_state,
)
from backend.data.capture_dataset import CaptureDataset, CaptureViews
from backend.field.ngp_field import NGPField, NGPFieldConfig, save_field
from backend.progress import JobCancelled, StageReporter
from backend.render.samplers import Sampler, make_sampler
from backend.render.volume import render_image, render_rays
from blender_piva import contract

CHECKPOINT_STEM = "reconstruct"
"""``checkpoints/reconstruct.safetensors`` + ``checkpoints/reconstruct.json``."""
CHECKPOINT_NAME = CHECKPOINT_STEM + STATE_SUFFIX
"""The checkpoint's JSON, written last: present = a complete checkpoint."""
FIELD_DIR = "field"


@dataclass
class TrainerConfig:
    """Knobs of the fit that the job contract does not expose (contract.ReconstructSettings does)."""

    field: NGPFieldConfig | None = None
    """Field hyper-parameters; None = ``NGPFieldConfig.cpu_preset()`` on the CPU, the paper's on CUDA."""
    occupancy_resolution: int = 64
    """Cells per axis of the occupancy grid that skips empty space (0 = no skipping)."""
    occupancy_warmup_steps: int = 256
    """Steps during which every grid update evaluates every cell (nerfacc's warm-up; afterwards a
    quarter of the cells and a quarter of the occupied ones)."""
    occupancy_update_every: int = 16
    """Steps between updates of the occupancy grid (nerfacc's 16). On the CPU the updates are about a
    third of the fit, but every 32 steps lost 2 dB of held-out PSNR on Suzanne (bench/reconstruct.py
    ``--variants after grid32``; docs/RESULTS.md)."""
    skip_settled_occupancy: bool = True
    """Skip the grid updates that cannot change what is sampled before the fit ends
    (``Sampler.settled_within``): a fit of a few hundred steps never forgets the untrained field's
    density, so on an object that fills its box every update is wasted work. The grid draws from
    its own generator, so skipping leaves the fit exactly as it is (tested)."""
    foreground_fraction: float = 0.5
    """Share of each batch drawn from pixels the object covers (the rest: any pixel)."""
    final_lr_fraction: float = 0.03
    """Learning rate at the last step, as a fraction of the initial one (exponential decay)."""
    warmup_steps: int = 10
    """Steps of linear learning-rate warm-up (Adam's first steps on a hash grid are noisy). While
    the untrained field is transparent every ray's pruning marches all its samples (about 10x a
    fitted step's cost), so a long warm-up is slow: 10 instead of 50 fitted the demo's cube 14%
    faster at the same held-out PSNR and Suzanne at +0.4 dB (bench/reconstruct.py ``--variants
    warmup50 warmup10``; docs/RESULTS.md)."""
    start_steps: int = 60
    """Steps at the start of the fit that draw ``start_rays_per_batch`` rays instead of
    ``reconstruct.rays_per_batch``, at most a tenth of the fit's steps (0 = the full batch from the
    first step). The untrained field is a fog that keeps about 47 samples on every ray (1.7 once
    fitted, after some 40 steps), so those steps cost about 10x a fitted one while they only need to
    find the surface. The demo's cube: 24.3 -> 18.5 s at 32.15 -> 32.17 dB; Suzanne: 85.4 -> 79.7 s
    at 40.70 -> 41.42 dB (bench/reconstruct.py ``--variants full_start after``; docs/RESULTS.md).
    The cap: 60 small steps of a 100-step fit left the tests' cube without a surface."""
    start_rays_per_batch: int = 256
    """Rays per batch of the first ``start_steps`` steps (never more than ``reconstruct.rays_per_batch``)."""
    mixed_precision: bool = True
    """Use fp16 autocast on CUDA (ignored on the CPU, which always runs float32)."""
    eval_views: int = 8
    """Held-out views rendered for the final metrics (the first ones of the eval split)."""
    preview_size: int = 64
    """Longest side of preview renders, pixels (smaller previews cost less on the CPU)."""
    fast_paths: bool = True
    """Run the fast twins of the CPU fit (HashEncoding.corner_rows with a complex64 gather,
    front-to-back pruning in StratifiedSampler). False runs their reference paths, which give the
    same numbers up to float rounding at the pre-issue-18 cost: bench/reconstruct.py fits both.
    Not part of the checkpoint's fingerprint, since either resumes the other's fit."""


def psnr_db(mse: float) -> float:
    """Peak signal-to-noise ratio of colours in [0, 1]; a perfect match counts as 100 dB, not infinity."""
    return -10.0 * math.log10(max(mse, 1e-10))


def lr_factor(step: int, total: int, warmup: int, final_fraction: float) -> float:
    """Linear warm-up, then exponential decay to ``final_fraction`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return final_fraction**progress


@dataclass
class TrainingRays:
    """Every training pixel as a ray with its targets, flattened, on the fit's device."""

    origins: Tensor
    """[P, 3] ray origins."""
    directions: Tensor
    """[P, 3] ray directions (camera-space z = -1, so t is planar depth)."""
    rgb: Tensor
    """[P, 3] captured colour on the white background."""
    alpha: Tensor
    """[P] captured opacity."""
    depth: Tensor
    """[P] captured planar depth (0 = none)."""
    foreground: Tensor
    """[F] long: indices of the pixels the object covers (alpha > 0.5)."""
    box_size: float
    """Longest side of the aabb: depth errors are measured relative to it."""

    @classmethod
    def from_capture(cls, dataset: CaptureDataset, device: torch.device) -> "TrainingRays":
        views = dataset.train
        rays_o, rays_d = views.all_rays()
        alpha = views.alpha.reshape(-1).to(device)
        return cls(
            origins=rays_o.reshape(-1, 3).to(device),
            directions=rays_d.reshape(-1, 3).to(device),
            rgb=views.rgb.reshape(-1, 3).to(device),
            alpha=alpha,
            depth=views.depth.reshape(-1).to(device),
            foreground=torch.nonzero(alpha > 0.5).squeeze(1),
            box_size=float((dataset.aabb[1] - dataset.aabb[0]).max()),
        )


GRID_SEED_OFFSET = 7919
"""The occupancy grid's generator is seeded with the fit's seed plus this (a stream of its own)."""


@dataclass
class FitState:
    """What the optimisation changes step by step: exactly what a checkpoint saves and restores."""

    field: NGPField
    sampler: Sampler
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    """Source of the fit's random draws of batches and stratification."""
    grid_generator: torch.Generator
    """Source of the occupancy grid's draws (cells, jitter): its own, so that skipped updates
    (``TrainerConfig.skip_settled_occupancy``) leave the batches as they are."""
    scaler: torch.amp.GradScaler
    """fp16 loss scaling; disabled unless ``autocast``."""
    autocast: bool
    """fp16 autocast of the forward pass (CUDA with ``TrainerConfig.mixed_precision`` only)."""
    step: int = 0
    """Steps done so far."""


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
    ckpt_path = out_dir / contract.CHECKPOINT_DIR / CHECKPOINT_STEM
    field_config = config.field or (NGPFieldConfig() if device.type == "cuda" else NGPFieldConfig.cpu_preset())
    field_config = dataclasses.replace(field_config, aabb=dataset.aabb.tolist())
    fingerprint = _fingerprint(settings, config, field_config, seed, dataset)

    state = _setup(field_config, settings, config, device, seed)
    rays = TrainingRays.from_capture(dataset, device)
    old = legacy_checkpoint(ckpt_path)
    if old is not None:
        reporter.log(f"ignoring {old}: pickle checkpoints of earlier versions are never loaded (they can run code)")
    if checkpoint_exists(ckpt_path):
        _load_checkpoint(ckpt_path, fingerprint, state)
        reporter.log(f"resuming the fit from step {state.step} ({ckpt_path})")

    reporter.begin(settings.steps, f"fitting the field: {settings.steps} steps of {settings.rays_per_batch} rays")
    t0 = time.perf_counter()
    losses: dict[str, float] = {}
    while state.step < settings.steps:
        if reporter.should_stop():
            _save_checkpoint(ckpt_path, fingerprint, state)
            raise JobCancelled(reporter.stage, state.step)
        losses = _step(state, rays, settings, config)
        done = state.step
        reporter.progress(done, settings.steps, losses)
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            _save_checkpoint(ckpt_path, fingerprint, state)
        if reporter.preview_dir is not None and (done % settings.preview_every == 0 or done == settings.steps):
            reporter.preview(done, _preview(state.field, state.sampler, dataset, config.preview_size))
    fit_seconds = time.perf_counter() - t0

    # Save the field and measure it on the held-out views.
    field = state.field.eval()
    save_field(out_dir / FIELD_DIR, field)
    heldout = dataset.eval if dataset.eval is not None else dataset.train
    metrics = evaluate(field, heldout, rays.box_size, state.sampler, config.eval_views)
    metrics["fit_seconds"] = fit_seconds
    metrics["final_loss"] = losses.get("loss", float("nan"))
    reporter.log(f"held-out PSNR {metrics['heldout_psnr_db']:.2f} dB, depth error {metrics['depth_error_rel']:.4f}")
    return metrics


def _setup(
    field_config: NGPFieldConfig, settings: contract.ReconstructSettings, config: TrainerConfig, device: torch.device, seed: int
) -> FitState:
    """Model, sampler, optimiser at step 0; deterministic initialisation without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        field = NGPField(field_config).to(device)
    sampler = make_sampler(
        field.aabb, settings.samples_per_ray, device, occupancy_resolution=config.occupancy_resolution,
        warmup_steps=config.occupancy_warmup_steps, update_every=config.occupancy_update_every,
    )
    if not config.fast_paths:
        field.encoding.reference = True
        if hasattr(sampler, "prune_chunk"):  # the twin; nerfacc's CUDA sampler has no such choice
            sampler.prune_chunk = 0
    # fused: one pass over the hash table a step instead of one per Adam operation (fit step 30 -> 26 ms on the CPU)
    optimizer = torch.optim.Adam(field.parameters(), lr=settings.learning_rate, betas=(0.9, 0.99), eps=1e-15, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, settings.steps, config.warmup_steps, config.final_lr_fraction)
    )
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    grid_generator = torch.Generator(device=device)
    grid_generator.manual_seed(seed + GRID_SEED_OFFSET)
    use_amp = device.type == "cuda" and config.mixed_precision
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    return FitState(field, sampler, optimizer, scheduler, generator, grid_generator, scaler, autocast=use_amp)


def batch_size(step: int, settings: contract.ReconstructSettings, config: TrainerConfig) -> int:
    """Rays drawn at ``step`` (0-based): the smaller start batch during the first
    ``config.start_steps`` steps, or the first tenth of the fit if that is shorter."""
    if step < min(config.start_steps, settings.steps // 10):
        return min(config.start_rays_per_batch, settings.rays_per_batch)
    return settings.rays_per_batch


def _step(
    state: FitState, rays: TrainingRays, settings: contract.ReconstructSettings, config: TrainerConfig
) -> dict[str, float]:
    """One optimisation step on a fresh random batch; advances ``state.step`` and returns the losses."""
    field, sampler, generator = state.field, state.sampler, state.generator
    device = rays.origins.device
    field.train()
    every = config.occupancy_update_every
    if state.step % every == 0:
        updates_left = len(range(state.step, settings.steps, every))  # this one included
        if not (config.skip_settled_occupancy and sampler.settled_within(updates_left)):
            sampler.update(state.step, field.density, state.grid_generator)
    # Random batch: n_fg rays on the object, the rest uniform over all pixels.
    batch = batch_size(state.step, settings, config)
    n_fg = min(int(round(batch * config.foreground_fraction)), rays.foreground.numel())
    pick_fg = rays.foreground[
        torch.randint(0, max(rays.foreground.numel(), 1), (n_fg,), device=device, generator=generator)
    ]
    pick_all = torch.randint(
        0, rays.rgb.shape[0], (batch - n_fg,), device=device, generator=generator
    )
    idx = torch.cat([pick_fg, pick_all])
    o, d = rays.origins[idx], rays.directions[idx]
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=state.autocast):
        samples = sampler.sample(o, d, sigma_fn=field.density, stratified=True, generator=generator)
        out = render_rays(field, o, d, samples, background=1.0)
    # Loss terms (float32).
    rgb_gt, alpha_gt, depth_gt = rays.rgb[idx], rays.alpha[idx], rays.depth[idx]
    rgb_loss = torch.mean((out["rgb"].float() - rgb_gt) ** 2)
    has_depth = (depth_gt > 0) & (alpha_gt > 0.5)
    depth_loss = (
        (out["depth"].float()[has_depth] - depth_gt[has_depth]).abs().mean() / rays.box_size
        if bool(has_depth.any())
        else rgb_loss.new_zeros(())
    )
    mask_loss = torch.mean((out["opacity"].float() - alpha_gt) ** 2)
    loss = rgb_loss + settings.depth_weight * depth_loss + settings.mask_weight * mask_loss
    # Adam through the fp16 loss scaler, then the learning-rate schedule.
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.step += 1
    return {
        "loss": loss.item(),
        "rgb": rgb_loss.item(),
        "psnr": psnr_db(rgb_loss.item()),
        "depth": depth_loss.item(),
        "mask": mask_loss.item(),
        "samples_per_ray": samples.t_starts.numel() / batch,
    }


@torch.no_grad()
def evaluate(field: NGPField, views: CaptureViews, box_size: float, sampler: Sampler | None, max_views: int) -> dict[str, float]:
    """Mean PSNR over views and mean |planar depth error| / box size over foreground pixels."""
    device = field.aabb.device
    psnrs, depth_err_sum, depth_count = [], 0.0, 0
    for i in range(min(len(views), max_views)):
        out = render_image(field, views.c2w[i].to(device), views.intrinsics[i], sampler=sampler)
        mse = float(torch.mean((out["rgb"].cpu() - views.rgb[i]) ** 2))
        psnrs.append(psnr_db(mse))
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
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("field", "eval_views", "preview_size", "fast_paths")},
        "field": dataclasses.asdict(field_config),
        "seed": seed,
        "train_views": dataset.train.names,
        "train_shape": list(dataset.train.rgb.shape),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_checkpoint(stem: Path, fingerprint: str, state: FitState) -> None:
    """Write ``state`` at ``stem`` (backend/checkpoint.py: a killed write never leaves a half checkpoint)."""
    save_state(stem, {
        "step": state.step,
        "fingerprint": fingerprint,
        "field": state.field.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "sampler": state.sampler.state_dict(),
        "generator": state.generator.get_state(),
        "grid_generator": state.grid_generator.get_state(),
        "scaler": state.scaler.state_dict(),
        # nerfacc's CUDA sampler draws from the global CUDA RNG.
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })


def _load_checkpoint(stem: Path, fingerprint: str, state: FitState) -> None:
    """Restore ``state`` (step included) from ``stem``; refuse a checkpoint of another fit or a damaged one."""
    payload = load_state(stem, stage="reconstruct")
    if payload.get("fingerprint") != fingerprint:
        raise CheckpointError(
            stem, f"{checkpoint_paths(stem)[0]} belongs to a fit with other settings, seed or capture", "reconstruct"
        )
    with restoring(stem, stage="reconstruct"):
        state.field.load_state_dict(payload["field"])
        state.optimizer.load_state_dict(payload["optimizer"])
        check_optimizer_state(state.optimizer)
        state.scheduler.load_state_dict(payload["scheduler"])
        state.sampler.load_state_dict(payload["sampler"])
        state.generator.set_state(payload["generator"])  # generator states are CPU byte tensors
        state.grid_generator.set_state(payload["grid_generator"])
        state.scaler.load_state_dict(payload["scaler"])
        if payload["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        state.step = int(payload["step"])
