"""Score Distillation Sampling (Poole et al., DreamFusion, 2022), eq. 3:

    grad = w(t) * (CFG_s(x_t, c_tgt) - eps),   x_t = sqrt(a_t) x + sqrt(1 - a_t) eps,

with w(t) = 1 - a_t (threestudio's default). Only the target prompt is used; the source is ignored.
One batched UNet call of 2 ([uncond, cond]); uncond is the negative prompt when the job has one.

CFG follows the diffusers convention (e_u + s (e_c - e_u)); threestudio's "100" is s = 101 here.
Defaults and their sources: docs/methods.md, section SDS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from backend.editing.base import EditMethod, MethodInputs, add_noise, cfg, expand, per_sample, weight
from backend.editing.schedule import ScheduleConfig


@dataclass
class SDSConfig(ScheduleConfig):
    """SDS hyperparameters (threestudio defaults, CFG in the diffusers convention)."""

    guidance_scale: float = 100.0
    """Classifier-free guidance scale s (SDS needs a large one)."""
    weighting: str = "sigma2"
    """w(t): ``sigma2`` = 1 - alpha_bar_t (threestudio) or ``one``."""


class SDS(EditMethod):
    name = "sds"
    config_class = SDSConfig

    def compute_gradient(self, inputs: MethodInputs) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        x = inputs.x.detach().float()
        B = x.shape[0]
        ac = self.model.alphas_cumprod
        # 1. timestep and noise, x_t by the forward process
        t, eps = self.timestep_and_noise(inputs, x)
        x_t = add_noise(x, eps, t, ac)
        # 2. one UNet call: [uncond, cond]
        with torch.no_grad():
            e = self.model.predict_noise(
                torch.cat([x_t, x_t]),
                torch.cat([t, t]),
                torch.cat([expand(inputs.cond_uncond, B), expand(inputs.cond_tgt, B)]),
            )
        e_u, e_c = e.chunk(2)
        # 3. eq. 3: w(t) (eps_hat - eps)
        grad = per_sample(weight(c.weighting, ac, t), x) * (cfg(e_u, e_c, c.guidance_scale) - eps)
        return grad, {"t": float(t.float().mean())}
