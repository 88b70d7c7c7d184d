"""Volume rendering of packed ray samples (Max 1995; NeRF eq. 3 as written in nerfacc).

    w_i = T_i (1 - exp(-sigma_i delta_i)),   T_i = exp(-sum_{j<i} sigma_j delta_j)
    C = sum_i w_i c_i + (1 - sum_i w_i) * background

The weights come from weights.py (nerfacc on CUDA, its pure-PyTorch twin elsewhere); the
accumulation (``nerfacc.accumulate_along_rays``, an ``index_add``) runs on both.

Depth is **planar**: the samplers' ray parameter t is the distance along the camera axis (ray
directions have camera-space z = -1, see rays.py), and the returned depth is the opacity-normalised
expectation ``sum_i w_i t_i / sum_i w_i`` (0 where nothing was hit), the same quantity the capture's
depth maps store.
"""

from __future__ import annotations

from typing import Callable

import nerfacc
import torch
from torch import Tensor

from backend.render.rays import Intrinsics, RaySamples, generate_rays
from backend.render.samplers import Sampler, StratifiedSampler
from backend.render.weights import render_weights


def render_rays(
    field_fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    samples: RaySamples,
    background: float = 1.0,
) -> dict[str, Tensor]:
    """Composite ``field_fn(points [M, 3]) -> (density [M], rgb [M, 3])`` along packed samples.

    Returns rgb [N, 3] on a uniform ``background`` (white in the capture), opacity [N], planar depth
    [N] (opacity-normalised, 0 where opacity is 0) and the sample weights [M].
    """
    n = rays_o.shape[0]
    t_mid = 0.5 * (samples.t_starts + samples.t_ends)  # [M]
    ri = samples.ray_indices
    points = rays_o[ri] + rays_d[ri] * t_mid[:, None]
    if points.shape[0] > 0:
        sigmas, rgbs = field_fn(points)
    else:  # nothing hit: keep the graph valid with empty tensors
        sigmas, rgbs = points.new_zeros(0), points.new_zeros(0, 3)
    weights = render_weights(samples, sigmas)
    opacity = nerfacc.accumulate_along_rays(weights, None, ri, n)[:, 0]
    rgb = nerfacc.accumulate_along_rays(weights, rgbs, ri, n) + (1.0 - opacity[:, None]) * background
    depth_sum = nerfacc.accumulate_along_rays(weights, t_mid[:, None], ri, n)[:, 0]
    depth = depth_sum / opacity.clamp(min=1e-6) * (opacity > 1e-6)
    return {"rgb": rgb, "opacity": opacity, "depth": depth, "weights": weights}


@torch.no_grad()
def render_image(
    field,
    c2w: Tensor,  # [4, 4] camera-to-world, on the field's device
    intrinsics: Intrinsics,
    *,
    sampler: Sampler | None = None,
    chunk: int = 8192,
    background: float = 1.0,
) -> dict[str, Tensor]:
    """Render one view: dict(rgb [H, W, 3], depth [H, W] planar, opacity [H, W]).

    ``sampler`` defaults to a 128-sample :class:`StratifiedSampler` over the field's aabb without
    occupancy skipping (slow but needs no trained grid); pass the fit's sampler to reuse its grid.
    Samples are not jittered, so the image is deterministic.
    """
    if sampler is None:
        sampler = StratifiedSampler(field.aabb, num_samples=128, occupancy_resolution=0).to(c2w.device)
    rays_o, rays_d = generate_rays(c2w, intrinsics)
    h, w = intrinsics.h, intrinsics.w
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    outs: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    for s in range(0, rays_o.shape[0], chunk):
        o, d = rays_o[s : s + chunk], rays_d[s : s + chunk]
        samples = sampler.sample(o, d, sigma_fn=field.density, stratified=False)
        out = render_rays(field, o, d, samples, background=background)
        for k in outs:
            outs[k].append(out[k])
    return {
        "rgb": torch.cat(outs["rgb"]).reshape(h, w, 3),
        "depth": torch.cat(outs["depth"]).reshape(h, w),
        "opacity": torch.cat(outs["opacity"]).reshape(h, w),
    }
