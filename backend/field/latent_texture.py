"""Colours for a latent field: its RGB head distilled from VAE-decoded renders of many views.

A latent field has no colour, and the exporter bakes ``field.color(x)`` into the texture
(``export/uv_bake.py``). So once a latent fit or edit is done, its latent renders at many cameras are
decoded by the VAE into images, and the wrapped NGP field's colour head (geo features -> RGB) is
fitted to them with the density frozen:

    L = mean |sum_i w_i c(g_i) + (1 - sum_i w_i) - D(R(z))|^2      (D: VAE decoder, R: refiner)

The weights w_i and geo features g_i of every sample are computed once (the density does not
change), so each step is only the colour MLP on cached features: seconds on a CPU. The saved
``field/`` is then an ordinary RGB field for the export, the report and the folder checks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import nerfacc
import torch
from torch import Tensor

from backend.field.latent_field import LatentField, latent_intrinsics, render_latent_view
from backend.field.latent_refiner import LatentRefiner
from backend.render.rays import Intrinsics, generate_rays
from backend.render.samplers import Sampler
from backend.render.weights import render_weights


@dataclass
class DistillConfig:
    """How the RGB head of a latent field is fitted to its decoded renders."""

    views: int = 24
    """Cameras rendered and decoded (the training cameras of a fit, sampled cameras after an edit)."""
    steps: int = 200
    """Adam steps on the colour head (one view's rays per step)."""
    learning_rate: float = 1e-2
    """Adam learning rate of the colour head."""
    rays_per_view: int = 2048
    """Image pixels kept per view (a random subset when the image has more)."""


@dataclass
class _ViewSamples:
    geo: Tensor
    """[M, G] geo features of the view's samples (frozen density MLP)."""
    weights: Tensor
    """[M] rendering weights."""
    ray_indices: Tensor
    """[M] long."""
    target: Tensor
    """[N, 3] decoded colour of each kept pixel."""


def distill_rgb_head(
    field_: LatentField,
    refiner: LatentRefiner | None,
    decode: Callable[[Tensor], Tensor],  # [1, C, h, w] latents -> [1, 3, H, W] in [0, 1]
    cameras: list[tuple[Tensor, Intrinsics]],  # (c2w [4, 4], image intrinsics)
    sampler: Sampler,
    config: DistillConfig | None = None,
    *,
    generator: torch.Generator,
) -> dict[str, float]:
    """Fit ``field_.ngp.color_mlp`` to ``decode`` of the refined latent renders at ``cameras``.

    Returns ``distill_psnr_db`` (of the last pass over the views) and ``distill_seconds``.
    """
    config = config or DistillConfig()
    if not cameras:
        raise ValueError("distill_rgb_head needs at least one camera")
    started = time.perf_counter()
    device = field_.aabb.device
    ngp = field_.ngp
    was_training = field_.training
    field_.eval()
    views: list[_ViewSamples] = []
    with torch.no_grad():
        for c2w, intr in cameras[: config.views]:
            latent = render_latent_view(field_, refiner, c2w, latent_intrinsics(intr, field_.config.downsample), sampler)["latent"]
            image = decode(latent)[0].float()  # [3, H, W]
            if image.shape[1:] != (intr.h, intr.w):
                raise ValueError(f"the VAE decoded a {tuple(image.shape[1:])} image for a {intr.h}x{intr.w} camera")
            rays_o, rays_d = generate_rays(c2w, intr)
            rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
            target = image.permute(1, 2, 0).reshape(-1, 3)
            if rays_o.shape[0] > config.rays_per_view:
                keep = torch.randperm(rays_o.shape[0], generator=generator, device=generator.device)[: config.rays_per_view].to(device)
                rays_o, rays_d, target = rays_o[keep], rays_d[keep], target[keep]
            samples = sampler.sample(rays_o, rays_d, sigma_fn=field_.density, stratified=False)
            t_mid = 0.5 * (samples.t_starts + samples.t_ends)
            points = rays_o[samples.ray_indices] + rays_d[samples.ray_indices] * t_mid[:, None]
            sigma, geo = ngp._density_and_features(points) if points.shape[0] else (points.new_zeros(0), points.new_zeros(0, ngp.config.geo_feat_dim))
            weights = render_weights(samples, sigma)
            keep = weights > 1e-4  # samples that add nothing to any pixel are dropped once, not every step
            views.append(_ViewSamples(geo[keep], weights[keep], samples.ray_indices[keep], target))
    params = list(ngp.color_mlp.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    errors: list[float] = [0.0] * len(views)
    with torch.enable_grad():
        for step in range(config.steps):
            i = step % len(views)
            v = views[i]
            n = v.target.shape[0]
            rgb_samples = torch.sigmoid(ngp.color_mlp(v.geo))
            opacity = nerfacc.accumulate_along_rays(v.weights, None, v.ray_indices, n)
            rgb = nerfacc.accumulate_along_rays(v.weights, rgb_samples, v.ray_indices, n) + (1.0 - opacity)
            loss = torch.mean((rgb - v.target) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            errors[i] = loss.detach().item()
    field_.train(was_training)
    mse = sum(errors) / len(errors)
    return {"distill_psnr_db": -10.0 * torch.log10(torch.tensor(max(mse, 1e-10))).item(), "distill_seconds": time.perf_counter() - started}
