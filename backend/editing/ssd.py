"""Stable Score Distillation (Zhu et al., 2025), eq. 6-8 and L_final:

    grad = w_p * (e(x_t, c_tgt) - e(x_t, c_src))          cross-prompt       (eq. 6)
         + w_t * (e(x_t, c_src) - e(x_hat_t, null))       cross-trajectory   (eq. 6)
         + w_e * (e(x_t, c_tgt) - e(x_t, null))           prompt enhancement (eq. 7)
         + w_id(t) * (x_t - x_hat_t)                      ID regulariser     (eq. 8)

with x_t, x_hat_t sharing eps and t, w_id(t) = id_scale * exp(t / T), and t decreasing linearly
0.98 -> 0.02 over the run (reference 3DGS code: w_p = 7.5 * 0.5, w_t = 2.0 * 0.5, w_e = 5.5,
id_scale = 0.075). The ID weight grows with t, so it shrinks over the run as t decreases.
With a negative prompt, the null of the prompt-enhancement term (eq. 7, CFG's guidance direction)
is the negative prompt; the cross-trajectory term keeps the empty prompt.
One UNet call of 4 ([src, tgt, null] at x_t, null at x_hat_t), under FreeU as in the reference
guidance (b1 = b2 = 1.1, s1 = 0.9, s2 = 0.2) where the model has a diffusers UNet. Defaults, their
sources and the reading of the paper's "decreasing" w(t): docs/methods.md, section SSD.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from backend.editing.base import EditMethod, MethodInputs, add_noise, expand, per_sample
from backend.editing.schedule import ScheduleConfig


@dataclass
class SSDConfig(ScheduleConfig):
    """SSD hyperparameters (the reference 3DGS code's)."""

    schedule: str = "linear"
    """Timestep schedule; SSD decreases t linearly from t_max to t_min."""
    w_prompt: float = 3.75
    """w_p, weight of the cross-prompt term."""
    w_trajectory: float = 1.0
    """w_t, weight of the cross-trajectory term."""
    w_enhance: float = 5.5
    """w_e, weight of the prompt-enhancement term."""
    id_scale: float = 0.075
    """Scale of the ID regulariser: w_id(t) = id_scale * exp(t / T)."""
    freeu: bool = True
    """Run the UNet under FreeU, as the reference guidance does (it registers FreeU on the UNet
    whatever the settings). Only models with a diffusers UNet (SD, the toy latent model) have the
    skip connections FreeU rebalances; on others (the 2D point-cloud toy, test stand-ins) it does
    nothing."""
    freeu_b1: float = 1.1
    """FreeU backbone scale of the first up-block (reference: 1.1)."""
    freeu_b2: float = 1.1
    """FreeU backbone scale of the second up-block (reference: 1.1)."""
    freeu_s1: float = 0.9
    """FreeU skip low-frequency scale of the first up-block (reference: 0.9)."""
    freeu_s2: float = 0.2
    """FreeU skip low-frequency scale of the second up-block (reference: 0.2)."""


class SSD(EditMethod):
    name = "ssd"
    config_class = SSDConfig

    def compute_gradient(self, inputs: MethodInputs) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        x = inputs.x.detach().float()
        x_hat = self._need_source(inputs)
        B = x.shape[0]
        ac = self.model.alphas_cumprod
        T = ac.shape[0]
        # 1. shared t and eps
        t, eps = self.timestep_and_noise(inputs, x)
        x_t, xs_t = add_noise(x, eps, t, ac), add_noise(x_hat, eps, t, ac)
        # the prompt-enhancement term is CFG's guidance direction: its unconditional branch takes the
        # negative prompt; the cross-trajectory term's e(x_hat_t, null) stays the empty prompt's
        # (the source's own unconditional trajectory, not guidance)
        uncond, null, src, tgt = (
            expand(v, B) for v in (inputs.cond_uncond, inputs.cond_null, inputs.cond_src, inputs.cond_tgt)
        )
        # 2. one UNet call of 4
        freeu = getattr(self.model, "freeu", None) if c.freeu else None
        scope = freeu(b1=c.freeu_b1, b2=c.freeu_b2, s1=c.freeu_s1, s2=c.freeu_s2) if freeu else nullcontext()
        with torch.no_grad(), scope:
            e = self.model.predict_noise(
                torch.cat([x_t, x_t, x_t, xs_t]), torch.cat([t, t, t, t]), torch.cat([src, tgt, uncond, null])
            )
        e_src, e_tgt, e_null, es_null = e.chunk(4)
        # 3. eq. 6-8
        w_id = per_sample(c.id_scale * torch.exp(t.float() / T), x)
        grad = (
            c.w_prompt * (e_tgt - e_src)
            + c.w_trajectory * (e_src - es_null)
            + c.w_enhance * (e_tgt - e_null)
            + w_id * (x_t - xs_t)
        )
        return grad, {"t": float(t.float().mean())}
