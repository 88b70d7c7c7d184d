"""Delta Denoising Score (Hertz et al., 2023), eq. 6:

    grad = w(t) * (CFG_s(x_t, c_tgt) - CFG_s(x_hat_t, c_src)),

where x_t and x_hat_t noise the current render x and the source render x_hat with the SAME eps and
t (the shared noise is what cancels the noisy component of SDS). Reference notebook: t ~ U{50..949},
s = 7.5, w = 1, one batched UNet call of 4 ([uncond, cond] x [source, target]). Defaults and their
sources: docs/methods.md, section DDS.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from backend.editing.base import EditMethod, MethodInputs, add_noise, guided_pair, per_sample, weight
from backend.editing.schedule import ScheduleConfig


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


class DDS(EditMethod):
    name = "dds"
    config_class = DDSConfig

    def compute_gradient(self, inputs: MethodInputs) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        x = inputs.x.detach().float()
        x_hat = self._need_source(inputs)
        ac = self.model.alphas_cumprod
        # 1. shared t and eps for both branches
        t, eps = self.timestep_and_noise(inputs, x)
        x_t, xs_t = add_noise(x, eps, t, ac), add_noise(x_hat, eps, t, ac)
        # 2. eq. 6: the delta of the two guided predictions
        e_tgt, e_src = guided_pair(self.model, x_t, xs_t, t, inputs, c.guidance_scale)
        grad = per_sample(weight(c.weighting, ac, t), x) * (e_tgt - e_src)
        return grad, {"t": float(t.float().mean())}
