"""Timestep schedules, tied to the actual number of edit steps (never a hard-coded 1500 or 3000).

Times are fractions of the model's ``T`` training timesteps; :func:`sample_timesteps` turns them
into integer timesteps in [0, T - 1].

* ``uniform``  t ~ U[t_min, t_max] every step (DreamFusion/threestudio SDS, DDS, PDS).
* ``annealed`` as ``uniform``, but t_max drops from ``t_max`` to ``anneal_to`` between the
  fractions ``anneal_start`` and ``anneal_end`` of the run (ProlificDreamer's
  ``max_step_percent: [5000, 0.98, 0.5, 5001]`` over 25000 steps is a drop at 0.2; PIVA appendix A
  uses "an annealed distilling time schedule similar to [ProlificDreamer]").
* ``linear``   deterministic t decreasing linearly from ``t_max`` to ``t_min`` over the run (SSD).

docs/methods.md, section "Timestep schedules", says which method uses which and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SCHEDULES = ("uniform", "annealed", "linear")


@dataclass
class ScheduleConfig:
    """Timestep schedule fields, inherited by every method config."""

    schedule: str = "uniform"
    """One of ``uniform``, ``annealed``, ``linear`` (see the module docstring)."""
    t_min: float = 0.02
    """Smallest timestep as a fraction of T."""
    t_max: float = 0.98
    """Largest timestep as a fraction of T (the start value for ``annealed``/``linear``)."""
    anneal_to: float = 0.5
    """``annealed``: t_max after the drop."""
    anneal_start: float = 0.2
    """``annealed``: fraction of the run where t_max starts dropping."""
    anneal_end: float = 0.2
    """``annealed``: fraction of the run where t_max reaches ``anneal_to`` (= start: a jump)."""

    def check_schedule(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.t_min <= self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min <= t_max <= 1, got t_min={self.t_min}, t_max={self.t_max}")
        if not 0.0 <= self.anneal_start <= self.anneal_end <= 1.0:
            raise ValueError(f"need 0 <= anneal_start <= anneal_end <= 1, got {self.anneal_start}, {self.anneal_end}")
        if not self.t_min <= self.anneal_to <= self.t_max:
            raise ValueError(f"anneal_to={self.anneal_to} must lie in [t_min, t_max] = [{self.t_min}, {self.t_max}]")


def timestep_range(cfg: ScheduleConfig, step: int, total_steps: int) -> tuple[float, float]:
    """[low, high] fractions of T allowed at ``step`` of ``total_steps``."""
    progress = step / max(total_steps - 1, 1)
    if cfg.schedule == "uniform":
        return cfg.t_min, cfg.t_max
    if cfg.schedule == "annealed":
        if progress < cfg.anneal_start:
            high = cfg.t_max
        elif progress >= cfg.anneal_end:
            high = cfg.anneal_to
        else:
            w = (progress - cfg.anneal_start) / (cfg.anneal_end - cfg.anneal_start)
            high = cfg.t_max + w * (cfg.anneal_to - cfg.t_max)
        return cfg.t_min, high
    if cfg.schedule == "linear":
        value = cfg.t_max + progress * (cfg.t_min - cfg.t_max)
        return value, value
    raise ValueError(f"unknown schedule {cfg.schedule!r}; allowed: {', '.join(SCHEDULES)}")


def sample_timesteps(
    cfg: ScheduleConfig,
    step: int,
    total_steps: int,
    num_train_timesteps: int,
    batch: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:  # [batch] int64 in [0, T - 1]
    """Draw one timestep per sample for ``step`` (all equal for ``linear``)."""
    low, high = timestep_range(cfg, step, total_steps)
    last = num_train_timesteps - 1
    lo = min(max(round(low * num_train_timesteps), 0), last)
    hi = min(max(round(high * num_train_timesteps), lo), last)
    if lo == hi:
        return torch.full((batch,), lo, dtype=torch.long, device=device)
    return torch.randint(lo, hi + 1, (batch,), generator=generator, device=device)
