"""A deterministic stand-in noise predictor whose outputs are known in closed form.

eps(x_t, t, c) = a_c * x_t + b_c * t / T + lin(x_t), where c = [a_c, b_c] per sample and ``lin`` is a
bias-free Linear over the last axis, zero at construction (so tests can compute every expected
gradient by hand) and the target of PIVA's LoRA adapters.
"""

from __future__ import annotations

import torch
from torch import Tensor

T = 1000


def sd_alphas_cumprod(steps: int = T) -> Tensor:
    """alpha_bar of SD's scaled_linear schedule (beta 0.00085 -> 0.012)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


class LinearPredictor(torch.nn.Module):
    lora_target_modules = ("lin",)

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.alphas_cumprod = sd_alphas_cumprod()
        self.lin = torch.nn.Linear(width, width, bias=False)
        torch.nn.init.zeros_(self.lin.weight)
        self.calls: list[int] = []  # batch size of every call, to check batching

    @property
    def lora_target(self) -> torch.nn.Module:
        return self

    def predict_noise(
        self, x_t: Tensor, t: Tensor, cond: Tensor, *, control: Tensor | None = None, controlled: Tensor | None = None
    ) -> Tensor:
        self.calls.append(x_t.shape[0])
        if controlled is not None:  # the control does not enter the closed form; check the call is coherent
            assert controlled.shape == (x_t.shape[0],) and control is not None and control.shape[0] == int(controlled.sum())
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        a = cond[:, 0].view(shape)
        b = cond[:, 1].view(shape)
        return a * x_t + b * t.float().view(shape) / T + self.lin(x_t)


def known(x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
    """The closed form of the stand-in with lin = 0, for expected values in tests."""
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    return cond[:, 0].view(shape) * x_t + cond[:, 1].view(shape) * t.float().view(shape) / T


SRC = torch.tensor([[0.5, 0.1]])
TGT = torch.tensor([[0.8, -0.2]])
NULL = torch.tensor([[0.1, 0.0]])
