"""Fit a latent field (ED-NeRF, arXiv 2310.02712, Sec. 3.1-3.2) to the VAE-encoded capture.

Every training image is encoded once by the diffusion model's VAE (posterior mean times the
scaling factor, as the edit's source latents are): ``Z_gt`` [V, C, H/f, W/f]. A latent pixel is
rendered by the ray through the centre of its ``f x f`` block (``latent_field.latent_intrinsics``);
each step renders whole latent images of a few random training views, so the refinement network,
which mixes neighbouring latent pixels, sees whole maps. Loss per step:

    L = mean |R(Z) - Z_gt|^2                          latent reconstruction (ED-NeRF eq. 4)
      + raw_weight   * mean |Z - Z_gt|^2              the field alone (a field that renders latents
                                                      without its refiner keeps the geometry honest)
      + depth_weight * mean_fg |D - D_gt| / box size  planar depth, block-averaged, as the RGB fit
      + mask_weight  * mean |O - alpha|^2             opacity vs block-averaged alpha

(R = refiner, the identity when the fit has none). Resumable like the RGB fit
(``reconstruct/trainer.py``): ``checkpoints/reconstruct_latent.safetensors`` + ``.json`` through
``backend/checkpoint.py`` (no pickle), every random draw from one checkpointed generator. At the end
the RGB head is distilled from decoded renders of the training views (``field/latent_texture.py``)
and ``out_dir/field`` holds both (``field/latent_field.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backend.checkpoint import (
    CheckpointError,
    check_optimizer_state,
    checkpoint_exists,
    checkpoint_paths,
    load_state,
    restoring,
    save_state,
)
from backend.data.capture_dataset import CaptureDataset, CaptureViews
from backend.field.latent_field import (
    LatentField,
    LatentFieldConfig,
    latent_intrinsics,
    render_latent_rays,
    render_latent_view,
    save_latent_field,
)
from backend.field.latent_refiner import LatentRefiner, LatentRefinerConfig
from backend.field.latent_texture import DistillConfig, distill_rgb_head
from backend.field.ngp_field import NGPFieldConfig
from backend.progress import JobCancelled, StageReporter
from backend.reconstruct.trainer import lr_factor, psnr_db
from backend.render.rays import generate_rays
from backend.render.samplers import Sampler, make_sampler
from blender_piva import contract

CHECKPOINT_STEM = "reconstruct_latent"
"""``checkpoints/reconstruct_latent.safetensors`` + ``.json`` (apart from the RGB fit's)."""
FIELD_DIR = "field"


@dataclass
class LatentTrainerConfig:
    """Knobs of the latent fit that the job contract does not expose (contract.ReconstructSettings does)."""

    field: NGPFieldConfig | None = None
    """Hash grid and density MLP; None = ``NGPFieldConfig.cpu_preset()`` on the CPU, the paper's on CUDA."""
    refiner: LatentRefinerConfig | None = dataclasses.field(default_factory=LatentRefinerConfig)
    """The refinement network (ED-NeRF Sec. 3.2); None = no refiner (the ablation)."""
    latent_hidden_dim: int = 64
    """Width of the latent head."""
    raw_weight: float = 0.25
    """Weight of the loss on the latents as rendered, before the refiner (0 = refined output only)."""
    refiner_learning_rate: float = 1e-3
    """Adam learning rate of the refiner (the field uses ``reconstruct.learning_rate``)."""
    occupancy_resolution: int = 64
    """Cells per axis of the occupancy grid that skips empty space (0 = no skipping)."""
    final_lr_fraction: float = 0.03
    """Learning rate at the last step, as a fraction of the initial one (exponential decay)."""
    warmup_steps: int = 50
    """Steps of linear learning-rate warm-up. Unlike the RGB fit's (``TrainerConfig.warmup_steps``,
    10), a shorter one buys nothing here: the latent fit renders whole views, so the untrained fog
    costs no more than a fitted field. 50 against 10 on the toy cube: 20.3 / 20.4 s, 18.12 / 18.09 dB
    at 150 steps; 48.3 / 47.1 s, 16.81 / 16.96 dB at 600 (bench/latent_field.py ``--warmups 50 10``)."""
    encode_batch: int = 8
    """Capture images per VAE encoder call (memory of the one-off encoding)."""
    eval_views: int = 8
    """Held-out views decoded for the final metrics."""
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    """How the RGB head is distilled from decoded renders at the end."""


@dataclass
class LatentTargets:
    """The capture at latent resolution, on the fit's device."""

    latents: Tensor
    """[V, C, h, w] VAE latents of the training images (times the scaling factor)."""
    origins: Tensor
    """[V, h*w, 3] rays through the latent pixels' block centres."""
    directions: Tensor
    """[V, h*w, 3] (camera-space z = -1: t is planar depth)."""
    alpha: Tensor
    """[V, h*w] block-averaged opacity."""
    depth: Tensor
    """[V, h*w] block-averaged planar depth over pixels that have one (0 = none)."""
    has_depth: Tensor
    """[V, h*w] bool: most of the block has depth and is on the object."""
    background: Tensor
    """[C] latent of a white image (what an empty ray renders)."""
    downsample: int
    """Image pixels per latent pixel along each axis."""
    box_size: float
    """Longest side of the aabb."""


def encode_capture(views: CaptureViews, model, box_size: float, batch: int, device: torch.device) -> LatentTargets:
    """Encode ``views`` with the model's VAE and pool alpha and depth onto the latent grid."""
    if getattr(model, "vae", None) is None:
        raise ValueError(
            "reconstruct.field = latent needs a latent diffusion model (one with a VAE); this model works on pixels: "
            "use reconstruct.field = rgb"
        )
    rgb = views.rgb.permute(0, 3, 1, 2)  # [V, 3, H, W]
    with torch.no_grad():
        latents = torch.cat([model.encode_images(rgb[s : s + batch].to(device)) for s in range(0, rgb.shape[0], batch)])
        v, _, h, w = latents.shape
        f = rgb.shape[2] // h
        if f * h != rgb.shape[2] or f * w != rgb.shape[3]:
            raise ValueError(f"the VAE maps {tuple(rgb.shape[2:])} images to {h}x{w} latents: not a whole downsampling factor")
        white = model.encode_images(torch.ones(1, 3, 8 * f, 8 * f, device=device)).mean(dim=(0, 2, 3))  # [C]
    alpha = views.alpha[:, None].to(device)
    valid = ((views.depth > 0) & (views.alpha > 0.5))[:, None].float().to(device)
    valid_frac = F.avg_pool2d(valid, f)
    depth = F.avg_pool2d(views.depth[:, None].to(device) * valid, f) / valid_frac.clamp(min=1e-6)
    origins, directions = [], []
    for i in range(v):
        o, d = generate_rays(views.c2w[i].to(device), latent_intrinsics(views.intrinsics[i], f))
        origins.append(o.reshape(-1, 3))
        directions.append(d.reshape(-1, 3))
    return LatentTargets(
        latents=latents.float(),
        origins=torch.stack(origins),
        directions=torch.stack(directions),
        alpha=F.avg_pool2d(alpha, f).reshape(v, -1),
        depth=(depth * (valid_frac > 0.5)).reshape(v, -1),
        has_depth=(valid_frac > 0.5).reshape(v, -1),
        background=white.float(),
        downsample=f,
        box_size=box_size,
    )


@dataclass
class LatentFitState:
    """What the optimisation changes step by step: exactly what a checkpoint saves and restores."""

    field: LatentField
    refiner: LatentRefiner | None
    sampler: Sampler
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    """Source of every random draw of the fit (views, stratification, grid updates)."""
    step: int = 0
    """Steps done so far."""


def fit_latent_field(
    dataset: CaptureDataset,
    settings: contract.ReconstructSettings,
    out_dir: Path,
    model,
    *,
    device: torch.device,
    seed: int,
    reporter: StageReporter,
    config: LatentTrainerConfig | None = None,
) -> dict[str, float]:
    """Fit a latent field to ``dataset`` encoded by ``model``'s VAE; save it to ``out_dir/field``.

    ``model`` is a loaded :class:`backend.diffusion.model.DiffusionModel` with a VAE. Returns
    ``heldout_psnr_db`` (held-out views decoded by the VAE against the capture), ``heldout_latent_mse``,
    ``depth_error_rel``, ``fit_seconds`` (this call's optimisation), ``distill_psnr_db``,
    ``distill_seconds`` and ``final_loss``. Raises JobCancelled (after checkpointing) on a cancel.
    """
    settings.validate()
    config = config or LatentTrainerConfig()
    device = torch.device(device)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / contract.CHECKPOINT_DIR / CHECKPOINT_STEM
    box_size = float((dataset.aabb[1] - dataset.aabb[0]).max())
    targets = encode_capture(dataset.train, model, box_size, config.encode_batch, device)
    field_config = config.field or (NGPFieldConfig() if device.type == "cuda" else NGPFieldConfig.cpu_preset())
    field_config = dataclasses.replace(field_config, aabb=dataset.aabb.tolist())
    latent_config = LatentFieldConfig(
        channels=targets.latents.shape[1], downsample=targets.downsample, hidden_dim=config.latent_hidden_dim, refiner=config.refiner
    )
    fingerprint = _fingerprint(settings, config, field_config, latent_config, seed, dataset, targets)
    state = _setup(field_config, latent_config, settings, config, device, seed)
    state.field.background.copy_(targets.background)
    if checkpoint_exists(ckpt_path):
        _load_checkpoint(ckpt_path, fingerprint, state)
        reporter.log(f"resuming the latent fit from step {state.step} ({ckpt_path})")

    h, w = targets.latents.shape[2:]
    views_per_batch = max(1, settings.rays_per_batch // (h * w))
    reporter.begin(
        settings.steps,
        f"fitting the latent field: {settings.steps} steps of {views_per_batch} latent views ({h}x{w}, "
        f"refiner {'on' if state.refiner is not None else 'off'})",
    )
    t0 = time.perf_counter()
    losses: dict[str, float] = {}
    while state.step < settings.steps:
        if reporter.should_stop():
            _save_checkpoint(ckpt_path, fingerprint, state)
            raise JobCancelled(reporter.stage, state.step)
        losses = _step(state, targets, views_per_batch, settings, config)
        done = state.step
        reporter.progress(done, settings.steps, losses)
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            _save_checkpoint(ckpt_path, fingerprint, state)
        if reporter.preview_dir is not None and (done % settings.preview_every == 0 or done == settings.steps):
            reporter.preview(done, _preview(state, dataset, targets.downsample, model))
    fit_seconds = time.perf_counter() - t0

    # Colours for the exporter, then save and measure on the held-out views.
    state.field.eval()
    if state.refiner is not None:
        state.refiner.eval()
    views = dataset.train
    cameras = [(views.c2w[i].to(device), views.intrinsics[i]) for i in _spread(len(views), config.distill.views)]
    distill_gen = torch.Generator(device=device)
    distill_gen.manual_seed(seed)
    distilled = distill_rgb_head(
        state.field, state.refiner, model.decode_latents, cameras, state.sampler, config.distill, generator=distill_gen
    )
    save_latent_field(out_dir / FIELD_DIR, state.field, state.refiner)
    heldout = dataset.eval if dataset.eval is not None else dataset.train
    metrics = evaluate_latent(state.field, state.refiner, heldout, model, box_size, state.sampler, config.eval_views)
    metrics.update(distilled)
    metrics["fit_seconds"] = fit_seconds
    metrics["final_loss"] = losses.get("loss", float("nan"))
    reporter.log(
        f"held-out PSNR {metrics['heldout_psnr_db']:.2f} dB (decoded latents), depth error {metrics['depth_error_rel']:.4f}, "
        f"RGB head {metrics['distill_psnr_db']:.2f} dB against the decoded renders"
    )
    return metrics


def _spread(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices spread evenly over ``range(n)``."""
    k = min(n, k)
    return sorted({int(round(i * (n - 1) / max(k - 1, 1))) for i in range(k)}) if n else []


def _setup(
    field_config: NGPFieldConfig, latent_config: LatentFieldConfig, settings: contract.ReconstructSettings,
    config: LatentTrainerConfig, device: torch.device, seed: int,
) -> LatentFitState:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        field_ = LatentField(field_config, latent_config).to(device)
        refiner = LatentRefiner(latent_config.refiner).to(device) if latent_config.refiner is not None else None
    sampler = make_sampler(field_.aabb, settings.samples_per_ray, device, occupancy_resolution=config.occupancy_resolution)
    groups = [{"params": field_.trainable_parameters(), "lr": settings.learning_rate, "name": "field"}]
    if refiner is not None:
        groups.append({"params": list(refiner.parameters()), "lr": config.refiner_learning_rate, "name": "refiner"})
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, fused=True)  # fused: as the RGB fit's
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, settings.steps, config.warmup_steps, config.final_lr_fraction)
    )
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return LatentFitState(field_, refiner, sampler, optimizer, scheduler, generator)


def _step(
    state: LatentFitState, targets: LatentTargets, views_per_batch: int, settings: contract.ReconstructSettings,
    config: LatentTrainerConfig,
) -> dict[str, float]:
    """One optimisation step on whole latent images of random training views; advances ``state.step``."""
    field_, sampler, generator = state.field, state.sampler, state.generator
    field_.train()
    if state.refiner is not None:
        state.refiner.train()
    sampler.update(state.step, field_.density, generator)
    v, c, h, w = targets.latents.shape
    pick = torch.randint(0, v, (views_per_batch,), device=generator.device, generator=generator).to(targets.latents.device)
    o, d = targets.origins[pick].reshape(-1, 3), targets.directions[pick].reshape(-1, 3)
    samples = sampler.sample(o, d, sigma_fn=field_.density, stratified=True, generator=generator)
    out = render_latent_rays(field_, o, d, samples)
    raw = out["latent"].reshape(views_per_batch, h, w, c).permute(0, 3, 1, 2)  # [B, C, h, w]
    gt = targets.latents[pick]
    refined = state.refiner(raw) if state.refiner is not None else raw
    latent_loss = torch.mean((refined - gt) ** 2)
    raw_loss = torch.mean((raw - gt) ** 2) if state.refiner is not None else latent_loss.detach()
    has_depth, alpha = targets.has_depth[pick].reshape(-1), targets.alpha[pick].reshape(-1)
    depth_loss = (
        (out["depth"][has_depth] - targets.depth[pick].reshape(-1)[has_depth]).abs().mean() / targets.box_size
        if bool(has_depth.any()) else latent_loss.new_zeros(())
    )
    mask_loss = torch.mean((out["opacity"] - alpha) ** 2)
    loss = latent_loss + settings.depth_weight * depth_loss + settings.mask_weight * mask_loss
    if state.refiner is not None:
        loss = loss + config.raw_weight * raw_loss
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    state.step += 1
    return {
        "loss": loss.item(),
        "latent": latent_loss.item(),
        "raw": raw_loss.item(),
        "depth": depth_loss.item(),
        "mask": mask_loss.item(),
        "samples_per_ray": samples.t_starts.numel() / o.shape[0],
    }


@torch.no_grad()
def evaluate_latent(
    field_: LatentField, refiner: LatentRefiner | None, views: CaptureViews, model, box_size: float,
    sampler: Sampler | None, max_views: int,
) -> dict[str, float]:
    """Mean PSNR of VAE-decoded latent renders against the captured images, latent MSE against their
    encodings, and mean |planar depth error| / box size (latent resolution, block-averaged truth)."""
    from backend.render.samplers import StratifiedSampler

    device = field_.aabb.device
    f = field_.config.downsample
    if sampler is None:
        sampler = StratifiedSampler(field_.aabb, num_samples=128, occupancy_resolution=0).to(device)
    psnrs, latent_mses, depth_err, depth_count = [], [], 0.0, 0
    for i in range(min(len(views), max_views)):
        out = render_latent_view(field_, refiner, views.c2w[i].to(device), latent_intrinsics(views.intrinsics[i], f), sampler)
        image = model.decode_latents(out["latent"])[0].permute(1, 2, 0).cpu()
        psnrs.append(psnr_db(float(torch.mean((image - views.rgb[i]) ** 2))))
        truth = model.encode_images(views.rgb[i].permute(2, 0, 1)[None].to(device))
        latent_mses.append(float(torch.mean((out["latent"] - truth) ** 2)))
        valid = ((views.depth[i] > 0) & (views.alpha[i] > 0.5)).float()[None, None]
        frac = F.avg_pool2d(valid, f)[0, 0]
        gt = (F.avg_pool2d(views.depth[i][None, None] * valid, f)[0, 0] / frac.clamp(min=1e-6))
        fg = frac > 0.5
        depth_err += float((out["depth"].cpu()[fg] - gt[fg]).abs().sum())
        depth_count += int(fg.sum())
    return {
        "heldout_psnr_db": float(np.mean(psnrs)),
        "heldout_latent_mse": float(np.mean(latent_mses)),
        "depth_error_rel": depth_err / max(depth_count, 1) / box_size,
    }


def _preview(state: LatentFitState, dataset: CaptureDataset, f: int, model) -> np.ndarray:
    """The first held-out view, decoded: [H, W, 3] in [0, 1]."""
    views = dataset.eval if dataset.eval is not None else dataset.train
    state.field.eval()
    if state.refiner is not None:
        state.refiner.eval()
    with torch.no_grad():
        out = render_latent_view(
            state.field, state.refiner, views.c2w[0].to(state.field.aabb.device), latent_intrinsics(views.intrinsics[0], f), state.sampler
        )
        return model.decode_latents(out["latent"])[0].permute(1, 2, 0).cpu().numpy()


def _fingerprint(
    settings, config: LatentTrainerConfig, field_config: NGPFieldConfig, latent_config: LatentFieldConfig, seed: int,
    dataset: CaptureDataset, targets: LatentTargets,
) -> str:
    """Hash of everything that must match for a checkpoint to be resumable (the VAE's latents included)."""
    payload = {
        "settings": dataclasses.asdict(settings),
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("field", "eval_views", "distill", "encode_batch")},
        "field": dataclasses.asdict(field_config),
        "latent": dataclasses.asdict(latent_config),
        "seed": seed,
        "train_views": dataset.train.names,
        "train_shape": list(dataset.train.rgb.shape),
        "latents": [round(float(targets.latents.double().mean()), 5), round(float(targets.latents.double().std()), 5)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_checkpoint(stem: Path, fingerprint: str, state: LatentFitState) -> None:
    save_state(stem, {
        "step": state.step,
        "fingerprint": fingerprint,
        "field": state.field.state_dict(),
        "refiner": state.refiner.state_dict() if state.refiner is not None else {},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "sampler": state.sampler.state_dict(),
        "generator": state.generator.get_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })


def _load_checkpoint(stem: Path, fingerprint: str, state: LatentFitState) -> None:
    payload = load_state(stem, stage="reconstruct")
    if payload.get("fingerprint") != fingerprint:
        raise CheckpointError(
            stem, f"{checkpoint_paths(stem)[0]} belongs to a latent fit with other settings, seed, capture or model", "reconstruct"
        )
    with restoring(stem, stage="reconstruct"):
        state.field.load_state_dict(payload["field"])
        if state.refiner is not None:
            state.refiner.load_state_dict(payload["refiner"])
        state.optimizer.load_state_dict(payload["optimizer"])
        check_optimizer_state(state.optimizer)
        state.scheduler.load_state_dict(payload["scheduler"])
        state.sampler.load_state_dict(payload["sampler"])
        state.generator.set_state(payload["generator"])
        if payload["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        state.step = int(payload["step"])
