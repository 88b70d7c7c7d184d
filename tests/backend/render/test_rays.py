import math

import torch

from backend.render.rays import Intrinsics, camera_directions, generate_rays, ray_aabb_intersect


def test_pixel_directions_follow_the_capture_convention():
    intr = Intrinsics(w=4, h=2, fl_x=2.0, fl_y=4.0, cx=2.0, cy=1.0)
    dirs = camera_directions(intr)
    assert dirs.shape == (2, 4, 3)
    # Pixel (column 0, row 0): centre (0.5, 0.5) -> ((0.5 - 2) / 2, -(0.5 - 1) / 4, -1).
    torch.testing.assert_close(dirs[0, 0], torch.tensor([-0.75, 0.125, -1.0]))
    # Pixel (column 3, row 1): centre (3.5, 1.5).
    torch.testing.assert_close(dirs[1, 3], torch.tensor([0.75, -0.125, -1.0]))


def test_rays_are_rotated_to_world_and_t_is_planar_depth():
    # Camera at (0, -3, 0) looking along +Y (OpenGL: local -Z maps to world +Y, local +Y to +Z).
    c2w = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -3], [0, 1, 0, 0], [0, 0, 0, 1]])
    intr = Intrinsics(w=2, h=2, fl_x=1.0, fl_y=1.0, cx=1.0, cy=1.0)
    o, d = generate_rays(c2w, intr)
    torch.testing.assert_close(o[0, 0], torch.tensor([0.0, -3.0, 0.0]))
    # Top-left pixel: camera (-0.5, 0.5, -1) -> world (-0.5, 1, 0.5) (up-left, forward).
    torch.testing.assert_close(d[0, 0], torch.tensor([-0.5, 1.0, 0.5]))
    # The component along the viewing axis is 1 for every pixel: t is planar depth.
    forward = -c2w[:3, 2]
    torch.testing.assert_close(d.reshape(-1, 3) @ forward, torch.ones(4))


def test_ray_aabb_intersection():
    aabb = torch.tensor([[-1.0, -1, -1], [1, 1, 1]])
    o = torch.tensor([[0.0, 0, 5], [3.0, 3, 5], [0.0, 0, 0]])
    r = 1 / math.sqrt(2)
    d = torch.tensor([[0.0, 0, -1], [0.0, 0, -1], [r, r, 0.0]])
    t0, t1, hit = ray_aabb_intersect(o, d, aabb)
    assert hit.tolist() == [True, False, True]
    torch.testing.assert_close(t0[[0, 2]], torch.tensor([4.0, 0.0]))
    torch.testing.assert_close(t1[[0, 2]], torch.tensor([6.0, math.sqrt(2)]))
