"""Analytic fields with known surfaces and colours, for the export tests and benchmark.

Density is a smoothed step of a signed distance: ``sigma(x) = peak * sigmoid(-sdf(x) / width)``, so
the level set ``sigma = s`` lies at ``sdf = width * ln(peak / s - 1)`` (slightly outside the true
surface: 0.009 for the defaults and the exporter's default iso-density of 88.7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SphereField:
    """A sphere with a colour that varies smoothly with position."""

    radius: float = 0.6
    """Sphere radius in normalised units."""
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Sphere centre."""
    peak: float = 1e4
    """Density deep inside."""
    width: float = 0.002
    """Width of the density transition (sigmoid scale) in normalised units."""

    def sdf(self, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        return (x - x.new_tensor(self.center)).norm(dim=-1) - self.radius

    def density(self, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        return self.peak * torch.sigmoid(-self.sdf(x) / self.width)

    def color(self, x: Tensor) -> Tensor:  # [N, 3] -> [N, 3]
        return (0.5 + 0.5 * torch.tanh(1.5 * x)).clamp(0.0, 1.0)


@dataclass
class BoxField:
    """An axis-aligned box whose colour depends on which side of each axis plane a point lies.

    The pattern is piecewise constant (eight octant colours), so a bake that samples the wrong
    surface point, mirrors UVs or lets the background bleed into seams shows up as wrong colours.
    """

    half_size: tuple[float, float, float] = (0.5, 0.35, 0.4)
    """Half extents of the box along x, y, z."""
    peak: float = 1e4
    """Density deep inside."""
    width: float = 0.002
    """Width of the density transition (sigmoid scale) in normalised units."""

    def sdf(self, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        q = x.abs() - x.new_tensor(self.half_size)
        outside = q.clamp(min=0.0).norm(dim=-1)
        inside = q.max(dim=-1).values.clamp(max=0.0)
        return outside + inside

    def density(self, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        return self.peak * torch.sigmoid(-self.sdf(x) / self.width)

    def color(self, x: Tensor) -> Tensor:  # [N, 3] -> [N, 3]
        # Octant colours with a margin: points near an axis plane still get a clean colour.
        return torch.where(x > 0, x.new_tensor([0.9, 0.8, 0.7]), x.new_tensor([0.1, 0.25, 0.4]))


@dataclass
class EmptyField:
    """Density zero everywhere (an edit that erased the object)."""

    def density(self, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def color(self, x: Tensor) -> Tensor:  # [N, 3] -> [N, 3]
        return torch.full_like(x, 0.5)


@dataclass
class TorusField:
    """A torus around the z axis (genus one: UV charts must cut it) with a smooth colour pattern."""

    major_radius: float = 0.55
    """Distance from the centre to the tube's centre line."""
    minor_radius: float = 0.25
    """Tube radius."""
    peak: float = 1e4
    """Density deep inside."""
    width: float = 0.002
    """Width of the density transition (sigmoid scale) in normalised units."""

    def sdf(self, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        ring = x[:, :2].norm(dim=-1) - self.major_radius
        return torch.stack([ring, x[:, 2]], dim=-1).norm(dim=-1) - self.minor_radius

    def project(self, x: Tensor) -> Tensor:  # [N, 3] -> [N, 3] closest points on the surface
        radial = x[:, :2] / x[:, :2].norm(dim=-1, keepdim=True).clamp(min=1e-12)
        centre = torch.cat([radial * self.major_radius, torch.zeros_like(x[:, :1])], dim=-1)
        offset = x - centre
        return centre + offset / offset.norm(dim=-1, keepdim=True).clamp(min=1e-12) * self.minor_radius

    def density(self, x: Tensor) -> Tensor:  # [N, 3] -> [N]
        return self.peak * torch.sigmoid(-self.sdf(x) / self.width)

    def color(self, x: Tensor) -> Tensor:  # [N, 3] -> [N, 3]
        phase = x.new_tensor([0.0, 2.1, 4.2])
        return 0.5 + 0.4 * torch.sin(3.0 * x[:, :1] + 2.0 * x[:, 1:2] + 4.0 * x[:, 2:3] + phase)
