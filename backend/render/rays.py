"""Camera rays in the capture's convention (docs/capture_format.md).

``transform_matrix`` is camera-to-world in Blender's OpenGL convention (camera looks down its -Z,
+Y up, +X right). Pixel (i, j) (column i, row j, counted from the top-left) has its centre at
u = i + 0.5, v = j + 0.5 and the camera-space direction ((u - cx) / fl_x, -(v - cy) / fl_y, -1).

Directions are **not** normalised: their camera-space z component is -1, so a ray parameter t is
exactly the planar depth (distance along the camera axis). The renderer relies on this: its depth
output is planar, like the capture's depth maps.

Samples along rays (what the samplers produce and the volume renderer consumes) are
:class:`RaySamples`: intervals of the ray parameter t, packed and sorted by ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Intrinsics:
    """Pinhole intrinsics of one view, in pixels."""

    w: int
    """Image width."""
    h: int
    """Image height."""
    fl_x: float
    """Focal length along x."""
    fl_y: float
    """Focal length along y."""
    cx: float
    """Principal point x (w / 2 for a centred camera)."""
    cy: float
    """Principal point y."""


def camera_directions(intr: Intrinsics, device: torch.device | str = "cpu") -> Tensor:  # -> [H, W, 3]
    """Camera-space ray directions of every pixel centre (z = -1)."""
    u = torch.arange(intr.w, device=device, dtype=torch.float32) + 0.5
    v = torch.arange(intr.h, device=device, dtype=torch.float32) + 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")  # [H, W]
    return torch.stack(
        [(uu - intr.cx) / intr.fl_x, -(vv - intr.cy) / intr.fl_y, -torch.ones_like(uu)], dim=-1
    )


def generate_rays(c2w: Tensor, intr: Intrinsics) -> tuple[Tensor, Tensor]:
    """Rays of every pixel of one view: (origins [H, W, 3], directions [H, W, 3], t = planar depth).

    ``c2w``: [4, 4] (or [3, 4]) camera-to-world; the rays live on its device and dtype.
    """
    dirs_cam = camera_directions(intr, c2w.device).to(c2w.dtype)  # [H, W, 3]
    rot = c2w[:3, :3]
    dirs = dirs_cam @ rot.T  # [H, W, 3]
    origins = c2w[:3, 3].expand_as(dirs)
    return origins, dirs


def ray_aabb_intersect(rays_o: Tensor, rays_d: Tensor, aabb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test: (t_near [N], t_far [N], hit [N] bool) of rays [N, 3] with the box aabb [2, 3].

    t_near is clamped at 0 (cameras inside the box start at their origin).
    """
    inv = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t0 = (aabb[0] - rays_o) * inv
    t1 = (aabb[1] - rays_o) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    hit = t_far > t_near
    return t_near, t_far, hit


@dataclass
class RaySamples:
    """Packed samples: interval [t_starts, t_ends] of ray ray_indices, sorted by ray."""

    t_starts: Tensor
    """[M] interval starts."""
    t_ends: Tensor
    """[M] interval ends."""
    ray_indices: Tensor
    """[M] long, non-decreasing: which ray each sample belongs to."""
    n_rays: int
    """Number of rays N (rays without samples have no entry)."""
