"""ED-NeRF's refinement layer (Park et al. 2023, arXiv 2310.02712, Sec. 3.2): ResNet blocks and
self-attention after the volume rendering of a latent field.

A latent NeRF renders every latent pixel from its own ray, but the VAE's latents are not
independent per pixel: the encoder's ResNet and self-attention layers mix neighbouring pixels
(and, through attention, the whole image). The refiner restores those interactions on the
rendered latent map:

    z_refined = z_rendered + F(z_rendered),   F = conv_in -> ResBlock x n -> SelfAttention -> conv_out

``conv_out`` starts at zero, so an untrained refiner is the identity (a field fitted without it
renders the same latents through it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class LatentRefinerConfig:
    """Hyper-parameters of :class:`LatentRefiner` (saved next to the latent field's weights)."""

    channels: int = 4
    """Latent channels C in and out (4 for Stable Diffusion and the toy model)."""
    width: int = 32
    """Channels inside the refiner."""
    num_blocks: int = 2
    """ResNet blocks before the self-attention layer."""
    attention: bool = True
    """Add one single-head self-attention layer over all latent pixels (ED-NeRF's global mixing)."""
    groups: int = 8
    """GroupNorm groups (must divide ``width``)."""

    def validate(self) -> None:
        if self.channels < 1 or self.width < 1 or self.num_blocks < 0:
            raise ValueError(f"LatentRefinerConfig needs channels >= 1, width >= 1, num_blocks >= 0; got {self}")
        if self.width % self.groups:
            raise ValueError(f"LatentRefinerConfig.groups ({self.groups}) must divide width ({self.width})")


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus the input (the VAE's ResnetBlock2D without time)."""

    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
            nn.GroupNorm(groups, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:  # [B, W, h, w] -> [B, W, h, w]
        return x + self.body(x)


class SelfAttention(nn.Module):
    """Single-head self-attention over the h*w latent pixels (the VAE mid-block's attention)."""

    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, width)
        self.qkv = nn.Conv2d(width, 3 * width, 1)
        self.out = nn.Conv2d(width, width, 1)

    def forward(self, x: Tensor) -> Tensor:  # [B, W, h, w] -> [B, W, h, w]
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)  # each [B, W, hw]
        attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # [B, hw, hw]
        y = (v @ attn.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.out(y)


class LatentRefiner(nn.Module):
    """``[B, C, h, w]`` rendered latents -> ``[B, C, h, w]`` refined latents (identity at init)."""

    def __init__(self, config: LatentRefinerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or LatentRefinerConfig()
        config.validate()
        self.conv_in = nn.Conv2d(config.channels, config.width, 3, padding=1)
        layers: list[nn.Module] = [ResBlock(config.width, config.groups) for _ in range(config.num_blocks)]
        if config.attention:
            layers.append(SelfAttention(config.width, config.groups))
        self.blocks = nn.Sequential(*layers)
        self.conv_out = nn.Sequential(nn.GroupNorm(config.groups, config.width), nn.SiLU(), nn.Conv2d(config.width, config.channels, 3, padding=1))
        nn.init.zeros_(self.conv_out[-1].weight)
        nn.init.zeros_(self.conv_out[-1].bias)

    def forward(self, z: Tensor) -> Tensor:  # [B, C, h, w] -> [B, C, h, w]
        if z.ndim != 4 or z.shape[1] != self.config.channels:
            raise ValueError(f"LatentRefiner expects [B, {self.config.channels}, h, w] latents, got {tuple(z.shape)}")
        return z + self.conv_out(self.blocks(self.conv_in(z)))

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.config)
