"""Rendering weights of packed ray samples from their densities (Max 1995; NeRF eq. 3).

    alpha_i = 1 - exp(-sigma_i delta_i),   T_i = exp(-sum_{j<i} sigma_j delta_j),   w_i = T_i alpha_i

nerfacc's packed scans (``render_weight_from_density`` with ``ray_indices``) are CUDA kernels: on the
CPU nerfacc raises NotImplementedError in ``pack_info``. So :func:`render_weights` asks nerfacc on
CUDA and :func:`render_weight_from_density_torch`, its pure-PyTorch twin, elsewhere. The samplers
use the twin's transmittance and alphas to prune samples; the volume renderer composites with the
weights.
"""

from __future__ import annotations

import nerfacc
import torch
from torch import Tensor

from backend.render.rays import RaySamples


def render_weight_from_density_torch(
    t_starts: Tensor,  # [M]
    t_ends: Tensor,  # [M]
    sigmas: Tensor,  # [M]
    ray_indices: Tensor,  # [M] long, non-decreasing
    n_rays: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pure-PyTorch twin of ``nerfacc.render_weight_from_density`` on packed samples.

    Returns (weights [M], transmittance [M], alphas [M]). The per-ray exclusive sum is one global
    cumulative sum minus its value at each ray's first sample, taken in float64 so that the
    subtraction does not cancel the digits of short rays that follow long ones.
    """
    sdt = sigmas * (t_ends - t_starts)  # [M]
    alphas = 1.0 - torch.exp(-sdt)
    if sdt.numel() == 0:
        return sdt, sdt, alphas
    inclusive = torch.cumsum(sdt.double(), dim=0)
    exclusive = inclusive - sdt.double()
    counts = torch.bincount(ray_indices, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts  # [n_rays] index of each ray's first sample
    per_ray = exclusive[first.clamp(max=sdt.numel() - 1)]  # [n_rays]
    trans = torch.exp(-(exclusive - per_ray[ray_indices])).to(sdt.dtype)
    return trans * alphas, trans, alphas


def render_weights(samples: RaySamples, sigmas: Tensor) -> Tensor:  # sigmas [M] -> weights [M]
    """Rendering weights of packed samples: nerfacc on CUDA, the torch twin elsewhere."""
    if sigmas.is_cuda:
        weights, _, _ = nerfacc.render_weight_from_density(
            samples.t_starts, samples.t_ends, sigmas, ray_indices=samples.ray_indices, n_rays=samples.n_rays
        )
        return weights
    weights, _, _ = render_weight_from_density_torch(
        samples.t_starts, samples.t_ends, sigmas, samples.ray_indices, samples.n_rays
    )
    return weights
