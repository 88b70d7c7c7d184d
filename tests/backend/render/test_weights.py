import math

import torch

from backend.render.weights import render_weight_from_density_torch


def test_torch_weights_match_closed_form():
    # Ray 0: constant density 2 over 4 intervals of 0.25; ray 1: no samples; ray 2: one sample.
    t_starts = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    t_ends = t_starts + 0.25
    sigmas = torch.tensor([2.0, 2.0, 2.0, 2.0, 4.0])
    ray_indices = torch.tensor([0, 0, 0, 0, 2])
    weights, trans, alphas = render_weight_from_density_torch(t_starts, t_ends, sigmas, ray_indices, 3)
    expected_trans = torch.tensor([1.0, math.exp(-0.5), math.exp(-1.0), math.exp(-1.5), 1.0])
    torch.testing.assert_close(trans, expected_trans)
    torch.testing.assert_close(weights[:4].sum(), torch.tensor(1 - math.exp(-2.0)))
    torch.testing.assert_close(weights[4], torch.tensor(1 - math.exp(-1.0)))
