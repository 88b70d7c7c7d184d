"""The settings blocks of a job spec. Each field's docstring is the user-facing explanation and
its default the one source of that default (method hyperparameters live in the method configs:
a shared field left at None keeps the method's own default)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ._schema import ContractError, check_bool, check_float, check_int, check_range, check_str
from .layout import FIELDS, MEMORY_MODES, METHODS, PRECISIONS


@dataclass
class CaptureSettings:
    """How Blender renders the object for the backend (PIVA appendix A defaults)."""

    num_views: int = 100
    """Training views on the upper hemisphere."""
    num_eval_views: int = 8
    """Held-out views for evaluation, evenly spaced in azimuth at ``eval_elevation_deg``."""
    resolution: int = 256
    """Square render size in pixels."""
    samples: int = 16
    """Cycles samples per pixel (denoised when ``denoise``)."""
    denoise: bool = True
    """Run Cycles' OpenImageDenoise on every view."""
    elevation_deg: tuple[float, float] = (10.0, 60.0)
    """Range of camera elevations above the horizon, degrees."""
    fov_deg: tuple[float, float] = (40.0, 70.0)
    """Range of vertical = horizontal field of view, degrees."""
    distance: tuple[float, float] = (3.0, 4.0)
    """Range of camera distances from the centre of the normalised [-1, 1]^3 box."""
    eval_elevation_deg: float = 15.0
    """Elevation of the held-out views (the paper's evaluation protocol)."""
    eval_fov_deg: float = 50.0
    """Field of view of the held-out views."""
    eval_distance: float = 4.0
    """Distance of the held-out views."""
    seed: int = 0
    """Seed of the camera sampler: same seed, same cameras."""

    def validate(self, prefix: str = "capture") -> None:
        check_int(self.num_views, f"{prefix}.num_views", 1, 10000)
        check_int(self.num_eval_views, f"{prefix}.num_eval_views", 0, 1000)
        check_int(self.resolution, f"{prefix}.resolution", 8, 4096)
        check_int(self.samples, f"{prefix}.samples", 1, 4096)
        check_bool(self.denoise, f"{prefix}.denoise")
        check_range(self.elevation_deg, f"{prefix}.elevation_deg", -90.0, 90.0)
        check_range(self.fov_deg, f"{prefix}.fov_deg", 1.0, 170.0)
        check_range(self.distance, f"{prefix}.distance", 1.8, 1000.0)
        check_float(self.eval_elevation_deg, f"{prefix}.eval_elevation_deg", -90.0, 90.0)
        check_float(self.eval_fov_deg, f"{prefix}.eval_fov_deg", 1.0, 170.0)
        check_float(self.eval_distance, f"{prefix}.eval_distance", 1.8, 1000.0)
        check_int(self.seed, f"{prefix}.seed", 0, 2**31 - 1)


@dataclass
class ReconstructSettings:
    """How the backend fits a neural field to the capture."""

    steps: int = 2000
    """Adam steps of the fit."""
    rays_per_batch: int = 4096
    """Rays per optimisation step."""
    learning_rate: float = 1e-2
    """Initial learning rate (decayed over the run)."""
    samples_per_ray: int = 64
    """Samples per ray of the pure-PyTorch sampler (the occupancy grid adapts on CUDA)."""
    depth_weight: float = 0.1
    """Weight of the depth supervision term."""
    mask_weight: float = 0.1
    """Weight of the opacity-vs-alpha term."""
    checkpoint_every: int = 500
    """Steps between checkpoints (a killed fit resumes from the last one)."""
    preview_every: int = 250
    """Steps between preview renders."""
    seed: int = 0
    """Seed of the field's initialisation and ray sampling. Kept apart from the job's seed so that
    prompt variants (which differ in the job's seed) share one fitted field."""
    field: str = "rgb"
    """One of FIELDS: ``rgb`` fits colours; ``latent`` fits the diffusion model's VAE latents with a
    refinement network (ED-NeRF), so the edit renders latents directly and never runs the VAE
    encoder (faster steps; needs a model with a VAE)."""

    def validate(self, prefix: str = "reconstruct") -> None:
        if self.field not in FIELDS:
            raise ContractError(f"{prefix}.field", f"unknown field {self.field!r}", ", ".join(FIELDS))
        check_int(self.steps, f"{prefix}.steps", 0, 10_000_000)
        check_int(self.rays_per_batch, f"{prefix}.rays_per_batch", 1, 1 << 24)
        check_float(self.learning_rate, f"{prefix}.learning_rate", 0.0, 10.0, low_open=True)
        check_int(self.samples_per_ray, f"{prefix}.samples_per_ray", 2, 4096)
        check_float(self.depth_weight, f"{prefix}.depth_weight", 0.0, 1e6)
        check_float(self.mask_weight, f"{prefix}.mask_weight", 0.0, 1e6)
        check_int(self.checkpoint_every, f"{prefix}.checkpoint_every", 1, 10_000_000)
        check_int(self.preview_every, f"{prefix}.preview_every", 1, 10_000_000)
        check_int(self.seed, f"{prefix}.seed", 0, 2**31 - 1)


@dataclass
class EditSettings:
    """How the backend edits the field towards the target prompt."""

    method: str = "piva"
    """Editing loss, one of METHODS."""
    steps: int = 1000
    """Optimisation steps of the edit."""
    render_resolution: int = 128
    """Side of the square render fed to the diffusion model (512 in the paper)."""
    guidance_scale: float | None = None
    """Classifier-free guidance of the base model (diffusers convention); None = the method's own
    default (SDS and PDS 100, DDS and PIVA 7.5: docs/methods.md)."""
    field_learning_rate: float = 1e-2
    """Learning rate of the field's hash grid during the edit (PIVA, threestudio: 1e-2)."""
    field_mlp_learning_rate: float = 1e-3
    """Learning rate of the field's density and colour MLPs during the edit (threestudio: 1e-3, a
    tenth of the grid's: the MLPs are shared by every point, a step there moves the whole object)."""
    fine_level_limit: float = 1.0
    """Hash-grid levels with more than ``fine_level_limit * render_resolution`` cells across the box
    stay as fitted during the edit. They are finer than a render pixel: nothing the diffusion model
    sees constrains them, and left free they fill with the high-frequency noise the baked texture
    shows. 0 = edit every level."""
    fine_level_release: float = 1.0
    """Fraction of the edit's steps after which the levels held by ``fine_level_limit`` are
    released (coarse to fine: the coarse levels settle the edit's colour and shape first, then the
    fine ones may follow a changed surface). 1 = never released."""
    field_average_decay: float = 0.0
    """0 = the result is the edited field after its last step. Otherwise the result is an
    exponential moving average of the edited field's parameters, ``avg = d * avg + (1 - d) * p``
    after every step (Polyak averaging; about the last ``1 / (1 - d)`` steps): each step's update is
    one view's gradient, and the average keeps what the views agree on, not the last views' noise."""
    lora_learning_rate: float | None = None
    """Learning rate of PIVA's LoRA adapters; None = PIVA's own default."""
    lora_rank: int | None = None
    """Rank of PIVA's LoRA adapters; None = PIVA's own default."""
    lambda_identity: float | None = None
    """PIVA's regulariser weight lambda (0.4 objects, 0.2 real scenes in the paper); None = PIVA's
    own default."""
    method_params: dict[str, Any] = field(default_factory=dict)
    """Extra hyperparameters of the chosen method, checked by the backend against its config."""
    checkpoint_every: int = 100
    """Steps between checkpoints (a killed edit resumes from the last one)."""
    preview_every: int = 50
    """Steps between preview renders."""

    def validate(self, prefix: str = "edit") -> None:
        if self.method not in METHODS:
            raise ContractError(f"{prefix}.method", f"unknown method {self.method!r}", ", ".join(METHODS))
        check_int(self.steps, f"{prefix}.steps", 0, 10_000_000)
        check_int(self.render_resolution, f"{prefix}.render_resolution", 8, 4096)
        if self.guidance_scale is not None:
            check_float(self.guidance_scale, f"{prefix}.guidance_scale", 0.0, 1000.0)
        check_float(self.field_learning_rate, f"{prefix}.field_learning_rate", 0.0, 10.0, low_open=True)
        check_float(self.field_mlp_learning_rate, f"{prefix}.field_mlp_learning_rate", 0.0, 10.0)
        check_float(self.fine_level_limit, f"{prefix}.fine_level_limit", 0.0, 1000.0)
        check_float(self.fine_level_release, f"{prefix}.fine_level_release", 0.0, 1.0)
        check_float(self.field_average_decay, f"{prefix}.field_average_decay", 0.0, 0.9999)  # 1 would never leave the source
        if self.lora_learning_rate is not None:
            check_float(self.lora_learning_rate, f"{prefix}.lora_learning_rate", 0.0, 10.0)
        if self.lora_rank is not None:
            check_int(self.lora_rank, f"{prefix}.lora_rank", 1, 1024)
        if self.lambda_identity is not None:
            check_float(self.lambda_identity, f"{prefix}.lambda_identity", 0.0, 100.0)
        if not isinstance(self.method_params, dict) or not all(isinstance(k, str) for k in self.method_params):
            raise ContractError(f"{prefix}.method_params", "must be an object with string keys", "{}")
        for key, value in self.method_params.items():
            if not isinstance(value, (int, float, str, bool)) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                raise ContractError(
                    f"{prefix}.method_params.{key}", f"unsupported value {value!r}", "finite numbers, strings, booleans"
                )
        check_int(self.checkpoint_every, f"{prefix}.checkpoint_every", 1, 10_000_000)
        check_int(self.preview_every, f"{prefix}.preview_every", 1, 10_000_000)


@dataclass
class ExportSettings:
    """How the edited field becomes a textured mesh."""

    grid_resolution: int = 256
    """Marching-cubes grid resolution per axis."""
    face_budget: int = 20000
    """Faces kept after decimation (xatlas is slow on dense meshes)."""
    texture_size: int = 1024
    """Side of the baked square texture in pixels."""
    min_component_fraction: float = 0.01
    """Connected components with fewer faces than this fraction of the largest are dropped."""
    iso_density: float = 0.0
    """Density of the surface; 0 = automatic (a 1/256-of-the-box segment is half opaque). Lower it
    when a short or low-resolution fit exports nothing; raise it to shave off haze."""

    def validate(self, prefix: str = "export") -> None:
        check_int(self.grid_resolution, f"{prefix}.grid_resolution", 16, 2048)
        check_int(self.face_budget, f"{prefix}.face_budget", 100, 10_000_000)
        check_int(self.texture_size, f"{prefix}.texture_size", 16, 16384)
        check_float(self.min_component_fraction, f"{prefix}.min_component_fraction", 0.0, 1.0)
        check_float(self.iso_density, f"{prefix}.iso_density", 0.0, 1e9)


@dataclass
class ModelSettings:
    """Which diffusion model the backend loads (diffusers layout, safetensors only)."""

    model: str = "toy"
    """Hub id (e.g. ``stabilityai/stable-diffusion-2-1-base``), a local folder, or ``toy`` for the
    embedded default model."""
    controlnet: str = ""
    """Depth ControlNet: hub id or local folder; empty = the model's own default or none."""
    precision: str = "auto"
    """One of PRECISIONS."""
    memory: str = "balanced"
    """One of MEMORY_MODES: ``fast`` (SDPA attention), ``balanced`` (+ VAE slicing) or ``low``
    (+ attention slicing, VAE tiling, CPU offload). Changes speed and peak GPU memory, not the
    edit: left out of the edit folder's fingerprint, so a job resumed in another mode keeps it."""

    def validate(self, prefix: str = "model") -> None:
        check_str(self.model, f"{prefix}.model", allow_empty=False)
        check_str(self.controlnet, f"{prefix}.controlnet", allow_empty=True)
        if self.precision not in PRECISIONS:
            raise ContractError(f"{prefix}.precision", f"unknown precision {self.precision!r}", ", ".join(PRECISIONS))
        if self.memory not in MEMORY_MODES:
            raise ContractError(f"{prefix}.memory", f"unknown memory mode {self.memory!r}", ", ".join(MEMORY_MODES))

