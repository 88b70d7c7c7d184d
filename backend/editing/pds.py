"""Posterior Distillation Sampling (Koo et al., CVPR 2024), eq. 9-13:

    z_t(x0, y) = (x_{t-1} - mu(x_t, x0_hat(x_t, y))) / sigma_t                          (eq. 9)
    grad      = w(t) * (z_t(x, c_tgt) - z_t(x_hat, c_src))                               (eq. 13)

x_t and x_{t-1} come from the forward process of each x0 with noises eps, eps' SHARED by the two
branches; mu(x_t, x0) = gamma_t x0 + delta_t x_t is the DDPM posterior mean (eq. 6) and
x0_hat(x_t, y) = (x_t - sqrt(1 - a_t) CFG_s(x_t, y)) / sqrt(a_t) (eq. 7). As in the reference code,
t lives on a DDIM grid of ``grid_steps`` points and t-1 is the previous grid point.

Coefficients as the reference (KAIST-Visual-AI-Group/PDS, ``pds/pds.py``): the scheduler's
SINGLE-STEP beta_t = 1 - a_t / a_{t-1} and alpha_t = 1 - beta_t, with the GRID's a_prev:

    gamma_t = sqrt(a_prev) beta_t / (1 - a_t)      delta_t = sqrt(alpha_t) (1 - a_prev) / (1 - a_t)
    sigma_t = sqrt((1 - a_prev) / (1 - a_t) * beta_t)

so the coefficient psi(t) = sqrt(a_prev) - gamma_t - delta_t sqrt(a_t) of (x_tgt - x_src) in
eq. 14 is not zero: the pull towards the source that makes PDS preserve identity. (The
self-consistent effective beta 1 - a_t / a_prev between the grid points makes psi(t) exactly zero
and PDS a re-weighted DDS; docs/methods.md, section PDS.) One UNet call of 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from backend.editing.base import EditMethod, MethodInputs, add_noise, guided_pair, per_sample, randn_like, weight
from backend.editing.schedule import ScheduleConfig, sample_timesteps


@dataclass
class PDSConfig(ScheduleConfig):
    """PDS hyperparameters (the reference code's)."""

    guidance_scale: float = 100.0
    """Classifier-free guidance scale of both branches (reference: 100, diffusers convention)."""
    grid_steps: int = 500
    """DDIM grid size: t is a multiple of T / grid_steps and t-1 the previous grid point."""
    weighting: str = "one"
    """w(t): ``one`` (reference) or ``sigma2`` = 1 - alpha_bar_t."""


def single_step_beta(alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """[B] the scheduler's beta_t = 1 - a_t / a_{t-1} (beta_0 = 1 - a_0), from the [T] alpha_bar table."""
    a_t = alphas_cumprod[t]
    a_below = torch.where(t > 0, alphas_cumprod[(t - 1).clamp(min=0)], torch.ones_like(a_t))
    return 1.0 - a_t / a_below


def posterior_coefficients(alphas_cumprod: Tensor, t: Tensor, t_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[B] (gamma_t, delta_t, sigma_t) of mu = gamma_t x0_hat + delta_t x_t and z's scale (reference)."""
    a_t, a_prev = alphas_cumprod[t], alphas_cumprod[t_prev]
    beta = single_step_beta(alphas_cumprod, t)
    gamma = a_prev.sqrt() * beta / (1.0 - a_t)
    delta = (1.0 - beta).sqrt() * (1.0 - a_prev) / (1.0 - a_t)
    sigma = ((1.0 - a_prev) / (1.0 - a_t) * beta).sqrt()
    return gamma, delta, sigma


def stochastic_latent(x_prev: Tensor, x_t: Tensor, e: Tensor, a_t: Tensor, gamma: Tensor, delta: Tensor, sigma: Tensor) -> Tensor:
    """Eq. 9 with eq. 6-7: (x_{t-1} - mu(x_t, x0_hat)) / sigma_t. The [B, 1, ...] factors broadcast against x."""
    x0_hat = (x_t - (1.0 - a_t).sqrt() * e) / a_t.sqrt()
    return (x_prev - gamma * x0_hat - delta * x_t) / sigma


class PDS(EditMethod):
    name = "pds"
    config_class = PDSConfig

    def compute_gradient(self, inputs: MethodInputs) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        x = inputs.x.detach().float()
        x_hat = self._need_source(inputs)
        B = x.shape[0]
        ac = self.model.alphas_cumprod
        T = ac.shape[0]
        ratio = max(T // c.grid_steps, 1)
        # 1. t on the grid (at least one grid step above 0), t_prev one grid point below
        t = sample_timesteps(c, inputs.step, inputs.total_steps, T, B, generator=inputs.generator, device=x.device)
        t = torch.clamp((t // ratio) * ratio, min=ratio)
        t_prev = t - ratio
        # 2. shared noises: eps for x_t, eps' for x_{t-1} (same in both branches)
        eps = randn_like(x, inputs.generator)
        eps_prev = randn_like(x, inputs.generator)
        x_t, xs_t = add_noise(x, eps, t, ac), add_noise(x_hat, eps, t, ac)
        x_prev, xs_prev = add_noise(x, eps_prev, t_prev, ac), add_noise(x_hat, eps_prev, t_prev, ac)
        # 3. guided predictions of both branches in one UNet call of 4
        e_tgt, e_src = guided_pair(self.model, x_t, xs_t, t, inputs, c.guidance_scale)
        # 4. eq. 13: difference of the stochastic latents
        a_t = per_sample(ac[t], x)
        gamma, delta, sigma = (per_sample(v, x) for v in posterior_coefficients(ac, t, t_prev))
        z_tgt = stochastic_latent(x_prev, x_t, e_tgt, a_t, gamma, delta, sigma)
        z_src = stochastic_latent(xs_prev, xs_t, e_src, a_t, gamma, delta, sigma)
        grad = per_sample(weight(c.weighting, ac, t), x) * (z_tgt - z_src)
        return grad, {"t": float(t.float().mean())}
