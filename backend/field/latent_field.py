"""A latent field (ED-NeRF, Park et al. 2023, arXiv 2310.02712, Sec. 3.1): the Instant-NGP field of
``ngp_field.py`` whose output is the diffusion model's C-channel VAE latent instead of RGB.

    x -> hash grid -> density MLP -> (sigma, geo features) -> latent MLP -> z in R^C (no squashing)

The volume rendering is the same as for colours (``render_latent_rays``: ``sum_i w_i z_i`` plus the
transmittance times the latent of the white background), so a latent pixel is rendered by one ray
through the centre of the ``downsample x downsample`` image block the VAE maps to it.

The wrapped :class:`~backend.field.ngp_field.NGPField` keeps its RGB colour head. A latent field
never trains it from the capture: it is distilled from VAE-decoded renders of many views
(``latent_texture.py``) once the fit or the edit is done, so the saved ``field/`` is also a plain RGB
field (``load_field``) for the exporter, the report and the folder checks, with the latent field's
own density. The latent head, the background latent and the refiner sit beside it
(``latent_config.json`` + ``latent.safetensors``; safetensors and JSON only, nothing that runs code).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import nerfacc
import torch
from torch import Tensor, nn

from backend.field.latent_refiner import LatentRefiner, LatentRefinerConfig
from backend.field.ngp_field import NGPField, NGPFieldConfig, load_field, save_field
from backend.render.rays import Intrinsics, RaySamples, generate_rays
from backend.render.samplers import Sampler
from backend.render.weights import render_weights

LATENT_CONFIG_FILE = "latent_config.json"
LATENT_WEIGHTS_FILE = "latent.safetensors"


@dataclass
class LatentFieldConfig:
    """Hyper-parameters of :class:`LatentField` beyond its NGP part (saved next to its weights)."""

    channels: int = 4
    """Latent channels C of the diffusion model's VAE (4 for SD 2.1 and the toy model)."""
    downsample: int = 8
    """Image pixels per latent pixel along each axis (8 for SD's VAE, 4 for the toy model's)."""
    hidden_dim: int = 64
    """Width of the latent head's MLP."""
    refiner: LatentRefinerConfig | None = field(default_factory=LatentRefinerConfig)
    """The refinement network after the rendering; None = render latents as they are (the ablation)."""


class LatentField(nn.Module):
    """Density + view-independent C-channel latent in the box ``ngp.config.aabb``."""

    def __init__(self, ngp_config: NGPFieldConfig | None = None, config: LatentFieldConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or LatentFieldConfig()
        if config.channels < 1 or config.downsample < 1:
            raise ValueError(f"LatentFieldConfig needs channels >= 1 and downsample >= 1, got {config}")
        self.ngp = NGPField(ngp_config)
        self.latent_mlp = nn.Sequential(
            nn.Linear(self.ngp.config.geo_feat_dim, config.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_dim, config.channels),
        )
        self.register_buffer("background", torch.zeros(config.channels))  # [C] latent of a white image

    @property
    def aabb(self) -> Tensor:  # [2, 3]
        return self.ngp.aabb

    @property
    def encoding(self):
        return self.ngp.encoding

    def parameter_groups(self, grid_lr: float, mlp_lr: float) -> list[dict]:
        """Optimiser groups: the hash grid at ``grid_lr``; the density MLP and the latent head at ``mlp_lr``
        (the RGB head is not trained here: ``latent_texture.distill_rgb_head`` fits it)."""
        mlps = list(self.ngp.density_mlp.parameters()) + list(self.latent_mlp.parameters())
        return [
            {"params": list(self.ngp.encoding.parameters()), "lr": grid_lr, "name": "grid"},
            {"params": mlps, "lr": mlp_lr, "name": "mlp"},
        ]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for g in self.parameter_groups(1.0, 1.0) for p in g["params"]]

    def density(self, x: Tensor) -> Tensor:  # x: [N, 3] -> [N]
        return self.ngp.density(x)

    def color(self, x: Tensor) -> Tensor:  # x: [N, 3] -> [N, 3] in [0, 1] (the distilled RGB head)
        return self.ngp.color(x)

    def density_and_color(self, x: Tensor) -> tuple[Tensor, Tensor]:  # x: [N, 3] -> ([N], [N, 3])
        """Density and the distilled RGB from one hash-grid lookup."""
        return self.ngp.density_and_color(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # x: [N, 3] -> (density [N], latent [N, C])
        sigma, geo = self.ngp._density_and_features(x)
        return sigma, self.latent_mlp(geo)


def latent_intrinsics(intr: Intrinsics, downsample: int) -> Intrinsics:
    """The intrinsics of the latent image of a ``intr``-sized image: one ray per ``downsample``-pixel
    block, through the block's centre (the pixel the VAE maps the block to)."""
    if intr.w % downsample or intr.h % downsample:
        raise ValueError(
            f"a {intr.w}x{intr.h} image has no whole latent image at 1/{downsample} of its side: "
            f"use a resolution that is a multiple of {downsample} (capture.resolution, edit.render_resolution)"
        )
    s = 1.0 / downsample
    return Intrinsics(w=intr.w // downsample, h=intr.h // downsample, fl_x=intr.fl_x * s, fl_y=intr.fl_y * s, cx=intr.cx * s, cy=intr.cy * s)


def render_latent_rays(
    field_: LatentField,
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    samples: RaySamples,
) -> dict[str, Tensor]:
    """Composite latents along packed samples: latent [N, C] (on the field's background latent),
    opacity [N], planar depth [N] (0 where nothing was hit), as ``render.volume.render_rays``."""
    n = rays_o.shape[0]
    t_mid = 0.5 * (samples.t_starts + samples.t_ends)  # [M]
    ri = samples.ray_indices
    points = rays_o[ri] + rays_d[ri] * t_mid[:, None]
    if points.shape[0] > 0:
        sigmas, latents = field_(points)
    else:  # nothing hit: keep the graph valid with empty tensors
        sigmas, latents = points.new_zeros(0), points.new_zeros(0, field_.config.channels)
    weights = render_weights(samples, sigmas)
    opacity = nerfacc.accumulate_along_rays(weights, None, ri, n)[:, 0]
    latent = nerfacc.accumulate_along_rays(weights, latents, ri, n) + (1.0 - opacity[:, None]) * field_.background
    depth_sum = nerfacc.accumulate_along_rays(weights, t_mid[:, None], ri, n)[:, 0]
    depth = depth_sum / opacity.clamp(min=1e-6) * (opacity > 1e-6)
    return {"latent": latent, "opacity": opacity, "depth": depth}


def render_latent_view(
    field_: LatentField,
    refiner: LatentRefiner | None,
    c2w: Tensor,  # [4, 4]
    intr: Intrinsics,  # of the LATENT image (latent_intrinsics)
    sampler: Sampler,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """One latent view: ``latent`` [1, C, h, w] (refined when ``refiner``), ``raw`` [1, C, h, w] (as
    rendered), ``depth`` and ``opacity`` [h, w]. Differentiable; stratified when ``generator``."""
    rays_o, rays_d = generate_rays(c2w, intr)
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    samples = sampler.sample(rays_o, rays_d, sigma_fn=field_.density, stratified=generator is not None, generator=generator)
    out = render_latent_rays(field_, rays_o, rays_d, samples)
    raw = out["latent"].reshape(intr.h, intr.w, -1).permute(2, 0, 1)[None]
    return {
        "raw": raw,
        "latent": refiner(raw) if refiner is not None else raw,
        "depth": out["depth"].reshape(intr.h, intr.w),
        "opacity": out["opacity"].reshape(intr.h, intr.w),
    }


def save_latent_field(path_dir: str | Path, field_: LatentField, refiner: LatentRefiner | None) -> Path:
    """``field/``: the NGP part as ``save_field`` writes it (an RGB field for the exporter), plus the
    latent head, background and refiner (``latent.safetensors``) and their config (JSON, written last)."""
    from safetensors.torch import save

    from blender_piva import contract

    path_dir = Path(path_dir)
    save_field(path_dir, field_.ngp)
    state = {f"head.{k}": v for k, v in field_.latent_mlp.state_dict().items()}
    state["background"] = field_.background
    if refiner is not None:
        state.update({f"refiner.{k}": v for k, v in refiner.state_dict().items()})
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    contract.write_bytes_atomic(path_dir / LATENT_WEIGHTS_FILE, save(state))
    config = dataclasses.asdict(field_.config)
    config["refiner"] = dataclasses.asdict(refiner.config) if refiner is not None else None
    contract.write_json_atomic(path_dir / LATENT_CONFIG_FILE, config)
    return path_dir


def is_latent_field(path_dir: str | Path) -> bool:
    return (Path(path_dir) / LATENT_CONFIG_FILE).is_file()


def load_latent_field(path_dir: str | Path, device: torch.device | str = "cpu") -> tuple[LatentField, LatentRefiner | None]:
    """Rebuild (field, refiner or None) saved by :func:`save_latent_field`, on ``device``, eval mode."""
    from safetensors.torch import load_file

    path_dir = Path(path_dir)
    config_path, weights_path = path_dir / LATENT_CONFIG_FILE, path_dir / LATENT_WEIGHTS_FILE
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} is missing: {path_dir} is not a saved latent field (fit it with reconstruct.field = latent)"
            )
    ngp = load_field(path_dir, device="cpu")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        refiner_data = data.pop("refiner")
        refiner_config = LatentRefinerConfig(**refiner_data) if refiner_data is not None else None
        config = LatentFieldConfig(**data, refiner=refiner_config)
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ValueError(f"{config_path} is not a valid latent field config ({exc}); re-run the reconstruct stage") from None
    field_ = LatentField(ngp.config, config)
    field_.ngp.load_state_dict(ngp.state_dict())
    state = load_file(str(weights_path))
    field_.latent_mlp.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
    field_.background.copy_(state["background"])
    refiner = None
    if refiner_config is not None:
        refiner = LatentRefiner(refiner_config)
        refiner.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("refiner.")})
        refiner = refiner.to(device).eval()
    return field_.to(device).eval(), refiner
