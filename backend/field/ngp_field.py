"""The Instant-NGP field (Mueller et al. 2022, Sec. 5.4): hash grid -> density MLP -> colour MLP.

Colour is **view-independent**: the field is baked into a mesh texture at the end of the pipeline,
and a texture has one colour per surface point. A view-dependent head would let the fit explain
appearance with view effects the texture can never show, so the held-out PSNR would overstate what
the exported asset looks like. Captures are diffuse-lit renders, so little is lost.

Density activation: ``trunc_exp`` (exp forward, gradient clamped at exp(15)), as in Instant-NGP
and nerfacc. exp spans the range from empty space (~1e-4) to opaque surfaces (~1e4) with a
bounded pre-activation, which sharp surfaces with few samples per ray need; softplus would need
pre-activations of ~1e4. The clamp keeps one huge density from blowing up Adam.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from backend.field.hash_encoding import HashEncoding

CONFIG_FILE = "field_config.json"
WEIGHTS_FILE = "field.safetensors"


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient is exp(min(x, 15)): stable training of densities (torch-ngp)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    return _TruncExp.apply(x)


@dataclass
class NGPFieldConfig:
    """Hyper-parameters of :class:`NGPField` (saved next to its weights)."""

    num_levels: int = 16
    """Hash grid levels L."""
    features_per_level: int = 2
    """Features F per level."""
    log2_table_size: int = 19
    """log2 of the rows T of each hashed level's table."""
    base_resolution: int = 16
    """Coarsest grid resolution N_min."""
    max_resolution: int = 2048
    """Finest grid resolution N_max (sets the per-level growth factor)."""
    hidden_dim: int = 64
    """Width of both MLPs."""
    geo_feat_dim: int = 15
    """Features passed from the density MLP to the colour MLP."""
    aabb: list[list[float]] = field(default_factory=lambda: [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    """Box [[xmin, ymin, zmin], [xmax, ymax, zmax]] where the field lives; density is 0 outside."""
    density_bias: float = 0.0
    """Added to the density pre-activation (exp(0) = 1: a faint fog the occupancy grid keeps)."""
    implementation: Literal["tcnn", "torch"] = "torch"
    """Hash grid implementation; ``tcnn`` falls back to ``torch`` (with a warning) without CUDA."""

    @classmethod
    def cpu_preset(cls) -> "NGPFieldConfig":
        """Smaller grid for a CPU fit of 64-256 px captures: 12 levels up to 512, 2^17 rows."""
        return cls(num_levels=12, log2_table_size=17, max_resolution=512)


class NGPField(nn.Module):
    """Density + view-independent colour in the box ``config.aabb``."""

    def __init__(self, config: NGPFieldConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or NGPFieldConfig()
        self.encoding = HashEncoding(
            num_levels=config.num_levels,
            features_per_level=config.features_per_level,
            log2_table_size=config.log2_table_size,
            base_resolution=config.base_resolution,
            max_resolution=config.max_resolution,
            implementation=config.implementation,
        )
        self.density_mlp = nn.Sequential(
            nn.Linear(self.encoding.out_dim, config.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_dim, 1 + config.geo_feat_dim),
        )
        self.color_mlp = nn.Sequential(
            nn.Linear(config.geo_feat_dim, config.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_dim, 3),
        )
        aabb = torch.tensor(config.aabb, dtype=torch.float32)
        if aabb.shape != (2, 3) or not bool((aabb[1] > aabb[0]).all()):
            raise ValueError(f"NGPFieldConfig.aabb must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with max > min, got {config.aabb}")
        self.register_buffer("aabb", aabb, persistent=False)  # [2, 3]

    def parameter_groups(self, grid_lr: float, mlp_lr: float) -> list[dict]:
        """Optimiser groups: the hash grid at ``grid_lr``, both MLPs at ``mlp_lr`` (threestudio's split)."""
        mlps = list(self.density_mlp.parameters()) + list(self.color_mlp.parameters())
        return [
            {"params": list(self.encoding.parameters()), "lr": grid_lr, "name": "grid"},
            {"params": mlps, "lr": mlp_lr, "name": "mlp"},
        ]

    def _normalize(self, x: Tensor) -> tuple[Tensor, Tensor]:  # x: [N, 3] -> ([N, 3] in [0,1], [N] bool inside)
        u = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((u >= 0.0) & (u <= 1.0)).all(dim=-1)
        return u, inside

    def _density_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:  # -> ([N], [N, geo_feat_dim])
        u, inside = self._normalize(x)
        h = self.density_mlp(self.encoding(u))
        sigma = trunc_exp(h[:, 0] + self.config.density_bias) * inside.to(h.dtype)
        return sigma, h[:, 1:]

    def density(self, x: Tensor) -> Tensor:  # x: [N, 3] -> [N], >= 0, 0 outside the aabb
        return self._density_and_features(x)[0]

    def color(self, x: Tensor) -> Tensor:  # x: [N, 3] -> [N, 3] in [0, 1]
        return self.forward(x)[1]

    def density_and_color(self, x: Tensor) -> tuple[Tensor, Tensor]:  # x: [N, 3] -> ([N], [N, 3])
        """Both queries from one hash-grid lookup (the export's bake needs both at every point)."""
        return self.forward(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # x: [N, 3] -> (density [N], rgb [N, 3])
        sigma, geo = self._density_and_features(x)
        rgb = torch.sigmoid(self.color_mlp(geo))
        return sigma, rgb


def save_field(path_dir: str | Path, field_: NGPField) -> Path:
    """Write ``field_config.json`` and ``field.safetensors`` into ``path_dir`` (each atomically)."""
    from safetensors.torch import save

    from blender_piva import contract

    path_dir = Path(path_dir)
    path_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in field_.state_dict().items()}
    contract.write_bytes_atomic(path_dir / WEIGHTS_FILE, save(state))  # a full disk leaves no partial file
    config = dataclasses.asdict(field_.config)
    config["implementation"] = "torch" if field_.encoding.implementation == "torch" else "tcnn"
    contract.write_json_atomic(path_dir / CONFIG_FILE, config)
    return path_dir


def load_field(path_dir: str | Path, device: torch.device | str = "cpu") -> NGPField:
    """Rebuild a field saved by :func:`save_field` on ``device`` (eval mode)."""
    from safetensors.torch import load_file

    path_dir = Path(path_dir)
    config_path, weights_path = path_dir / CONFIG_FILE, path_dir / WEIGHTS_FILE
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: {path_dir} is not a saved field (run the reconstruct stage first)")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        config = NGPFieldConfig(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{config_path} is not a valid field config ({exc}); re-run the reconstruct stage") from None
    field_ = NGPField(config)
    field_.load_state_dict(load_file(str(weights_path)))
    return field_.to(device).eval()
