import math

import torch

from backend.render.rays import Intrinsics, RaySamples
from backend.render.samplers import StratifiedSampler
from backend.render.volume import render_image, render_rays

RADIUS = 0.5


class SolidSphere(torch.nn.Module):
    """Analytic field: opaque sphere of radius 0.5, grey."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("aabb", torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))

    def density(self, x):
        return (x.norm(dim=-1) < RADIUS).float() * 500.0

    def forward(self, x):
        return self.density(x), torch.full_like(x, 0.25)


def test_sphere_opacity_and_planar_depth():
    field = SolidSphere()
    # Camera at z = 3 looking down -Z; a 9x9 image with a wide field of view.
    c2w = torch.eye(4)
    c2w[2, 3] = 3.0
    intr = Intrinsics(w=9, h=9, fl_x=6.0, fl_y=6.0, cx=4.5, cy=4.5)
    out = render_image(field, c2w, intr, sampler=StratifiedSampler(field.aabb, 256, occupancy_resolution=0))
    assert out["rgb"].shape == (9, 9, 3) and out["depth"].shape == (9, 9)
    assert float(out["opacity"][4, 4]) > 0.999  # through the centre
    assert float(out["opacity"][0, 0]) < 1e-6  # corner ray misses the sphere
    # Planar depth of the centre ray: 3 - 0.5; intervals are 2 / 256 long.
    assert abs(float(out["depth"][4, 4]) - 2.5) < 2 / 256
    # Off-centre pixel (column 5, row 4): planar depth = 3 - z of the hit point.
    x = (5.5 - 4.5) / 6.0
    t = (3 * 1 - math.sqrt(9 - (1 + x * x) * (9 - RADIUS**2))) / (1 + x * x)
    assert abs(float(out["depth"][4, 5]) - t) < 2 / 256
    torch.testing.assert_close(out["rgb"][4, 4], torch.full((3,), 0.25), atol=1e-3, rtol=0)
    torch.testing.assert_close(out["rgb"][0, 0], torch.ones(3))


def test_render_rays_gradients_reach_the_field():
    field = torch.nn.Linear(3, 4)
    fn = lambda x: (torch.nn.functional.softplus(field(x)[:, 0]), torch.sigmoid(field(x)[:, 1:]))
    o = torch.tensor([[0.0, 0.0, 3.0]])
    d = torch.tensor([[0.0, 0.0, -1.0]])
    samples = RaySamples(torch.tensor([2.0, 2.5]), torch.tensor([2.5, 3.0]), torch.tensor([0, 0]), 1)
    out = render_rays(fn, o, d, samples)
    out["rgb"].sum().backward()
    assert field.weight.grad is not None and float(field.weight.grad.abs().sum()) > 0
