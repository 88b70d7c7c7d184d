from __future__ import annotations

import pytest
import torch

from backend.editing.schedule import ScheduleConfig, sample_timesteps, timestep_range


def test_uniform_stays_in_range():
    cfg = ScheduleConfig(t_min=0.02, t_max=0.98)
    t = sample_timesteps(cfg, 0, 100, 1000, 4096, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 20 and t.max() <= 980 and t.dtype == torch.long
    assert t.min() < 60 and t.max() > 940  # the whole range is used


def test_annealed_max_drops_at_the_given_fraction_of_the_real_run():
    cfg = ScheduleConfig(schedule="annealed", t_max=0.98, anneal_to=0.5, anneal_start=0.2, anneal_end=0.2)
    for total in (50, 15000):  # tied to the number of steps, not a hard-coded count
        assert timestep_range(cfg, 0, total)[1] == 0.98
        assert timestep_range(cfg, int(0.19 * total), total)[1] == 0.98
        assert timestep_range(cfg, int(0.21 * total) + 1, total)[1] == 0.5
    t = sample_timesteps(cfg, 900, 1000, 1000, 2048, generator=torch.Generator().manual_seed(0))
    assert t.max() <= 500


def test_annealed_ramp_is_linear():
    cfg = ScheduleConfig(schedule="annealed", t_max=0.9, anneal_to=0.5, anneal_start=0.0, anneal_end=1.0)
    assert timestep_range(cfg, 50, 101)[1] == pytest.approx(0.7)


def test_linear_goes_from_t_max_to_t_min():
    cfg = ScheduleConfig(schedule="linear")
    assert sample_timesteps(cfg, 0, 7, 1000, 2).tolist() == [980, 980]
    assert sample_timesteps(cfg, 6, 7, 1000, 1).tolist() == [20]


def test_bad_schedule_is_rejected_with_the_allowed_names():
    with pytest.raises(ValueError, match="uniform, annealed, linear"):
        ScheduleConfig(schedule="cosine").check_schedule()
    with pytest.raises(ValueError, match="t_min"):
        ScheduleConfig(t_min=0.9, t_max=0.1).check_schedule()
