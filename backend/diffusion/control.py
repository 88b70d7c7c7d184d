"""The depth condition of the ControlNet path: one mapping for training and for editing."""

from __future__ import annotations

import torch
from torch import Tensor


def depth_to_control(depth: Tensor, opacity: Tensor) -> Tensor:  # [H, W], [H, W] -> [1, 3, H, W] in [0, 1]
    """Planar depth as a ControlNet image, MiDaS-style: near = bright, far = dark, background 0.

    Depth is normalised per image over the object's pixels (opacity > 0.5) to [0.1, 1], so the
    condition does not depend on the camera distance, only on the shape as seen from the camera.
    """
    mask = opacity > 0.5
    if not bool(mask.any()):
        return torch.zeros(1, 3, *depth.shape, device=depth.device, dtype=torch.float32)
    d = depth.detach().float()
    near, far = d[mask].min(), d[mask].max()
    inv = 1.0 - (d - near) / (far - near).clamp(min=1e-6)
    image = torch.where(mask, 0.1 + 0.9 * inv, torch.zeros_like(d))
    return image[None, None].expand(1, 3, *d.shape).contiguous()
