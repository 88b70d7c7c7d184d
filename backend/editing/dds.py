"""Delta Denoising Score (Hertz et al., 2023), eq. 6:

    grad = w(t) * (CFG_s(x_t, c_tgt) - CFG_s(x_hat_t, c_src)),

where x_t and x_hat_t noise the current render x and the source render x_hat with the SAME eps and
t (the shared noise is what cancels the noisy component of SDS). Reference notebook: t ~ U{50..949},
s = 7.5, w = 1, one batched UNet call of 4 ([uncond, cond] x [source, target]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from backend.editing.base import EditMethod, MethodInputs, add_noise, cfg, expand, per_sample, randn_like
from backend.editing.schedule import ScheduleConfig, sample_timesteps
from backend.editing.sds import weight


@dataclass
class DDSConfig(ScheduleConfig):
    """DDS hyperparameters (the reference notebook's)."""

    t_min: float = 0.05
    """Smallest timestep as a fraction of T (notebook: 50 of 1000)."""
    t_max: float = 0.95
    """Largest timestep as a fraction of T (notebook: 949 of 1000)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale s of both branches."""
    weighting: str = "one"
    """w(t): ``one`` (the notebook) or ``sigma2`` = 1 - alpha_bar_t."""


def guided_pair(model, x_t: Tensor, xs_t: Tensor, t: Tensor, inputs: MethodInputs, scale: float) -> tuple[Tensor, Tensor]:
    """CFG_s(x_t, c_tgt) and CFG_s(xs_t, c_src) from ONE UNet call of 4 (shared by DDS and PDS)."""
    B = x_t.shape[0]
    null, src, tgt = (expand(c, B) for c in (inputs.cond_null, inputs.cond_src, inputs.cond_tgt))
    with torch.no_grad():
        e = model.predict_noise(
            torch.cat([xs_t, xs_t, x_t, x_t]),
            torch.cat([t, t, t, t]),
            torch.cat([null, src, null, tgt]),
        )
    es_u, es_c, et_u, et_c = e.chunk(4)
    return cfg(et_u, et_c, scale), cfg(es_u, es_c, scale)


class DDS(EditMethod):
    name = "dds"
    config_class = DDSConfig

    def compute_gradient(self, inputs: MethodInputs) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        x = inputs.x.detach().float()
        x_hat = self._need_source(inputs)
        B = x.shape[0]
        ac = self.model.alphas_cumprod
        # 1. shared t and eps for both branches
        t = sample_timesteps(c, inputs.step, inputs.total_steps, ac.shape[0], B, generator=inputs.generator, device=x.device)
        eps = randn_like(x, inputs.generator)
        x_t, xs_t = add_noise(x, eps, t, ac), add_noise(x_hat, eps, t, ac)
        # 2. eq. 6: the delta of the two guided predictions
        e_tgt, e_src = guided_pair(self.model, x_t, xs_t, t, inputs, c.guidance_scale)
        grad = per_sample(weight(c.weighting, ac, t), x) * (e_tgt - e_src)
        return grad, {"t": float(t.float().mean())}
