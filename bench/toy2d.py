"""The PDS paper's Figure 3 experiment, run with the project's own editing code.

A small class-conditional diffusion model (MLP on 2D points, classifier-free dropout 10%) is trained
here on two classes: class 1 ~ N((-1.5, 0), diag(0.3^2, 0.8^2)), class 2 ~ N((+1.5, 0), same).
Samples of class 1 are then edited towards class 2 by every method of ``backend.editing`` through
the NoisePredictor protocol (the 2D points are "x", the class one-hots are the "prompt
embeddings"), with the settings a default job would use (``build_config(name, EditSettings())``,
so each method at its own defaults: CFG 100 for SDS and PDS, 7.5 for DDS and PIVA;
nothing tuned per method), SGD lr 0.01 with a cosine schedule as PIVA's 2D
setup, ``STEPS`` steps. The last run repeats PIVA with the paper's settings (its ``paper``
preset). The denoiser's initialisation and training are seeded: every run trains the same model.

Printed per method:
  toy2d_success_METHOD  fraction of edited points that end in class 2 (posterior p(2|x) > 0.5 under
                        the true mixture AND Mahalanobis distance to class 2 below 3)
  toy2d_moved_METHOD    mean Euclidean distance moved
  toy2d_dy_METHOD       mean |change of y|, the coordinate the edit should leave alone (identity)

Run: .venv/bin/python bench/toy2d.py   (about a minute on one CPU core)
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.editing.base import MethodInputs  # noqa: E402
from backend.editing.registry import METHODS, build_method  # noqa: E402
from blender_piva.contract import EditSettings  # noqa: E402

T = 1000
MEAN = {1: torch.tensor([-1.5, 0.0]), 2: torch.tensor([1.5, 0.0])}
STD = torch.tensor([0.3, 0.8])
TRAIN_STEPS = 3000
STEPS = 1000  # PIVA 2D: 1000 SGD steps
N_EDIT = 256
LR = 0.01
INIT_SEED = 0
"""Seed of the denoiser's initial weights (the training batches come from main's generator)."""


class ToyDenoiser(torch.nn.Module):
    """eps(x_t, t, c) for 2D points; c is a one-hot over (class 1, class 2, null)."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(2 + 16 + 3, width)
        self.fc2 = torch.nn.Linear(width, width)
        self.fc3 = torch.nn.Linear(width, width)
        self.out = torch.nn.Linear(width, 2)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(torch.arange(8, dtype=torch.float32) * (-math.log(1000.0) / 8))
        angles = t.float()[:, None] * freqs[None]
        h = torch.cat([x_t, angles.sin(), angles.cos(), cond], -1)
        h = torch.nn.functional.silu(self.fc1(h))
        h = torch.nn.functional.silu(self.fc2(h))
        h = torch.nn.functional.silu(self.fc3(h))
        return self.out(h)


class ToyPredictor:
    """The NoisePredictor protocol around the MLP (the adapter between the toy and the methods)."""

    lora_target_modules = ("fc1", "fc2", "fc3")

    def __init__(self, net: ToyDenoiser, alphas_cumprod: torch.Tensor) -> None:
        self.net = net
        self.alphas_cumprod = alphas_cumprod

    @property
    def lora_target(self) -> torch.nn.Module:
        return self.net

    def predict_noise(self, x_t, t, cond, *, control=None):
        return self.net(x_t, t, cond)


def one_hot(index: int) -> torch.Tensor:  # [1, 3]
    return torch.nn.functional.one_hot(torch.tensor([index]), 3).float()


def sample_class(label: int, n: int, g: torch.Generator) -> torch.Tensor:
    return MEAN[label] + STD * torch.randn(n, 2, generator=g)


def train(g: torch.Generator) -> ToyPredictor:
    betas = torch.linspace(1e-4, 0.02, T)
    ac = torch.cumprod(1 - betas, 0)
    with torch.random.fork_rng():  # the initialisation is seeded too: every run trains the same model
        torch.manual_seed(INIT_SEED)
        net = ToyDenoiser()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, TRAIN_STEPS)
    batch = 256
    for _ in range(TRAIN_STEPS):
        labels = torch.randint(0, 2, (batch,), generator=g)
        x0 = torch.where(labels[:, None] == 0, sample_class(1, batch, g), sample_class(2, batch, g))
        cls = labels.clone()
        cls[torch.rand(batch, generator=g) < 0.1] = 2  # classifier-free dropout -> null
        cond = torch.nn.functional.one_hot(cls, 3).float()
        t = torch.randint(0, T, (batch,), generator=g)
        eps = torch.randn(batch, 2, generator=g)
        a = ac[t][:, None]
        loss = ((net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, cond) - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.requires_grad_(False)
    return ToyPredictor(net, ac)


def in_class2(x: torch.Tensor) -> torch.Tensor:  # [N, 2] -> [N] bool
    def log_p(label: int) -> torch.Tensor:
        return -0.5 * (((x - MEAN[label]) / STD) ** 2).sum(-1)

    maha2 = (((x - MEAN[2]) / STD) ** 2).sum(-1).sqrt()
    return (log_p(2) > log_p(1)) & (maha2 < 3.0)


def edit(model: ToyPredictor, name: str, start: torch.Tensor, seed: int, **params) -> torch.Tensor:
    method = build_method(name, model, EditSettings(method=name, method_params=params))
    x = start.clone().requires_grad_(True)
    # the injection loss is divided by the batch: scale lr by N so each point moves by lr * grad
    opt = torch.optim.SGD([x], lr=LR * x.shape[0])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    g = torch.Generator().manual_seed(seed)
    try:
        for step in range(STEPS):
            opt.zero_grad()
            result = method.step(
                MethodInputs(x=x, source=start, cond_src=one_hot(0), cond_tgt=one_hot(1), cond_null=one_hot(2),
                             step=step, total_steps=STEPS, generator=g)
            )
            result.loss.backward()
            opt.step()
            sched.step()
    finally:
        method.close()
    return x.detach()


def main() -> None:
    torch.set_num_threads(1)  # tiny MLP: more threads only add contention on a shared machine
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    model = train(g)
    print(f"toy2d_train_s: {time.perf_counter() - t0:.1f}")
    start = sample_class(1, N_EDIT, torch.Generator().manual_seed(1))
    print(f"toy2d_success_none: {in_class2(start).float().mean().item():.3f}")
    runs = [(name, name, {}) for name in METHODS]
    # the paper's settings (PIVA's preset), beside the product's defaults
    runs.append(("piva_paper", "piva", {"preset": "paper"}))
    for label, name, params in runs:
        t0 = time.perf_counter()
        end = edit(model, name, start, seed=2, **params)
        ok = torch.isfinite(end).all(-1)
        success = (in_class2(end) & ok).float().mean().item()
        moved = (end - start).norm(dim=-1)[ok].mean().item()
        dy = (end - start)[ok, 1].abs().mean().item()
        print(f"toy2d_success_{label}: {success:.3f}")
        print(f"toy2d_moved_{label}: {moved:.3f}")
        print(f"toy2d_dy_{label}: {dy:.3f}")
        print(f"toy2d_edit_s_{label}: {time.perf_counter() - t0:.1f}", flush=True)


if __name__ == "__main__":
    main()
