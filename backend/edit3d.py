"""The 3D edit loop (PIVA Algorithm 1, the field as the generator).

Every step:

1. draw a camera from the capture's distribution (elevation, fov, distance ranges; uniform azimuth);
2. render the edited field there (differentiable) and the frozen original field at the same pose
   (methods.md pitfall 7: the source must be pixel-aligned with the render);
3. encode both (VAE latents, or pixels for a pixel-space model), plus the rendered depth as the
   ControlNet condition when the model has one (PIVA appendix D.1);
4. the chosen method's step: its gradient is injected into the render (one convention, see
   backend/editing/base.py), backpropagated into the field; PIVA also trains its adapters;
5. Adam on the field (hash grid lr 0.01 as the paper, MLPs 0.001 as threestudio), progress,
   previews, checkpoints.

A checkpoint (``checkpoints/edit.safetensors`` + ``edit.json``, backend/checkpoint.py: no pickle)
holds the step, the field, its optimiser, the method's state (PIVA's adapters and their optimiser),
the sampler's occupancy grid and the random generator, so a killed edit resumes and ends exactly
where an uninterrupted one ends. An ``edit.pt`` of an earlier version (a pickle) is never loaded.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from blender_piva import contract
from blender_piva.contract import cameras

from .checkpoint import (
    STATE_SUFFIX,
    check_optimizer_state,
    checkpoint_exists,
    legacy_checkpoint,
    load_state,
    restoring,
    save_state,
)
from .diffusion.control import depth_to_control
from .editing.base import EditMethod, MethodInputs
from .field.ngp_field import NGPField, save_field
from .progress import JobCancelled, StageReporter
from .render.rays import Intrinsics, generate_rays
from .render.samplers import Sampler, make_sampler
from .render.volume import render_image, render_rays

CHECKPOINT_STEM = "edit"
"""``checkpoints/edit.safetensors`` + ``checkpoints/edit.json``."""
CHECKPOINT_NAME = CHECKPOINT_STEM + STATE_SUFFIX
"""The checkpoint's JSON, written last: present = a complete checkpoint."""


@dataclass
class EditCamera:
    """One camera of the edit: pose in the normalised frame and pinhole intrinsics."""

    c2w: Tensor
    """[4, 4] camera-to-world (Blender convention), float32 on the edit's device."""
    intrinsics: Intrinsics


def sample_camera(
    capture: contract.CaptureSettings, resolution: int, generator: torch.Generator, device: torch.device
) -> EditCamera:
    """A camera from the paper's distribution (the capture's ranges), drawn from ``generator``."""
    u = torch.rand(4, generator=generator, device=generator.device).tolist()
    lo, hi = (math.sin(math.radians(e)) for e in capture.elevation_deg)
    elevation = math.degrees(math.asin(min(1.0, max(-1.0, lo + (hi - lo) * u[0]))))
    azimuth = 360.0 * u[1]
    fov = capture.fov_deg[0] + (capture.fov_deg[1] - capture.fov_deg[0]) * u[2]
    distance = capture.distance[0] + (capture.distance[1] - capture.distance[0]) * u[3]
    return make_camera(elevation, azimuth, distance, fov, resolution, device)


def make_camera(
    elevation_deg: float, azimuth_deg: float, distance: float, fov_deg: float, resolution: int, device: torch.device
) -> EditCamera:
    c2w = cameras.look_at(cameras.orbit_position(elevation_deg, azimuth_deg, distance), np.zeros(3))
    fl_x, fl_y, cx, cy = cameras.intrinsics(fov_deg, resolution, resolution)
    return EditCamera(
        torch.as_tensor(c2w, dtype=torch.float32, device=device),
        Intrinsics(w=resolution, h=resolution, fl_x=fl_x, fl_y=fl_y, cx=cx, cy=cy),
    )


def render_view(
    field: NGPField, camera: EditCamera, sampler: Sampler, generator: torch.Generator | None
) -> dict[str, Tensor]:
    """Render ``field`` at ``camera``: rgb [1, 3, H, W], depth [H, W], opacity [H, W] (with grad)."""
    rays_o, rays_d = generate_rays(camera.c2w, camera.intrinsics)
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    samples = sampler.sample(rays_o, rays_d, sigma_fn=field.density, stratified=generator is not None, generator=generator)
    out = render_rays(field, rays_o, rays_d, samples, background=1.0)
    h, w = camera.intrinsics.h, camera.intrinsics.w
    rgb = out["rgb"].reshape(h, w, 3).permute(2, 0, 1)[None]
    return {"rgb": rgb, "depth": out["depth"].reshape(h, w), "opacity": out["opacity"].reshape(h, w)}


@dataclass
class EditState:
    """What the edit changes step by step: exactly what its checkpoint saves and restores."""

    field: NGPField
    """The edited copy of the original field (trained)."""
    optimizer: torch.optim.Optimizer
    """Adam on ``field``."""
    sampler: Sampler
    """Occupancy grid of ``field``, refreshed as the edit moves its surface."""
    method: EditMethod
    """The chosen method; PIVA's adapters and their optimiser are part of its state."""
    generator: torch.Generator
    """Source of every random draw (cameras, stratification, noise, timesteps)."""
    step: int = 0
    """Steps done so far."""
    average: AveragedModel | None = None
    """Exponential moving average of ``field``'s parameters, updated after every step, when
    ``EditSettings.field_average_decay`` > 0: then it, not ``field``, is the edit's result."""
    frozen_levels: torch.utils.hooks.RemovableHandle | None = None
    """The gradient hook that holds the fine levels (``EditSettings.fine_level_limit``) until
    ``release_fine_levels`` removes it; None when every level is free."""

    @property
    def result(self) -> NGPField:
        """The field the edit hands on: the average when there is one, else the edited field."""
        return self.average.module if self.average is not None else self.field


@dataclass
class EditSource:
    """What every step compares the edited field with; fixed for the whole edit."""

    field: NGPField
    """The original field, frozen."""
    sampler: Sampler
    """Its occupancy grid, updated once before the first step and then left as it is."""
    cond_src: Tensor
    """Encoded source prompt."""
    cond_tgt: Tensor
    """Encoded target prompt."""
    cond_null: Tensor
    """Encoded empty prompt (classifier-free guidance without a negative prompt; PIVA's dropout)."""
    use_control: bool
    """Whether the model has a depth ControlNet, so renders' depths condition it."""
    cond_negative: Tensor | None = None
    """Encoded negative prompt (CFG's unconditional branch), None when the job has none."""


def edit_field(
    original: NGPField,
    model,
    method,
    spec: contract.JobSpec,
    out_dir: Path,
    *,
    device: torch.device,
    reporter: StageReporter,
) -> dict[str, float]:
    """Edit a copy of ``original`` towards ``spec.target_prompt``; save it to ``out_dir/field``.

    ``model`` is a loaded :class:`backend.diffusion.model.DiffusionModel`, ``method`` an
    :class:`backend.editing.base.EditMethod` built on it. Returns figures for the manifest.
    """
    settings = spec.edit
    total = settings.steps
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / contract.CHECKPOINT_DIR / CHECKPOINT_STEM

    state, source = _setup(original, model, method, spec, device)
    old = legacy_checkpoint(checkpoint_path)
    if old is not None:
        reporter.log(f"ignoring {old}: pickle checkpoints of earlier versions are never loaded (they can run code)")
    if checkpoint_exists(checkpoint_path):
        _load_checkpoint(checkpoint_path, state)
        reporter.log(f"resuming the edit from step {state.step}")

    preview_camera = make_camera(
        spec.capture.eval_elevation_deg, 30.0, spec.capture.eval_distance, spec.capture.eval_fov_deg,
        settings.render_resolution, device,
    )
    reporter.begin(total, f"{settings.method} edit: {spec.source_prompt!r} -> {spec.target_prompt!r}")
    started = time.perf_counter()
    while state.step < total:
        if reporter.should_stop():
            _save_checkpoint(checkpoint_path, state)
            raise JobCancelled("edit", state.step)
        losses = _step(state, source, model, spec, device)
        done = state.step
        reporter.progress(done, total, losses)
        if done % settings.preview_every == 0 or done == total:
            image = render_image(state.field, preview_camera.c2w, preview_camera.intrinsics, sampler=state.sampler)
            reporter.preview(done, image["rgb"].cpu().numpy())
        if done % settings.checkpoint_every == 0 and done < total:
            _save_checkpoint(checkpoint_path, state)
    save_field(out_dir / "field", state.result)
    _save_checkpoint(checkpoint_path, state)
    return {"edit_seconds": time.perf_counter() - started, "edit_steps": float(total)}


def _setup(
    original: NGPField, model, method: EditMethod, spec: contract.JobSpec, device: torch.device
) -> tuple[EditState, EditSource]:
    """The edited copy and its optimiser at step 0; the frozen original with a filled grid; the prompts."""
    original = original.to(device).eval().requires_grad_(False)
    edited = copy.deepcopy(original).train().requires_grad_(True)
    frozen_levels = freeze_fine_levels(edited, spec.edit)
    source_sampler, sampler = edit_samplers(original, device, spec.seed)
    groups = edited.parameter_groups(spec.edit.field_learning_rate, spec.edit.field_mlp_learning_rate)
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, fused=True)  # fused: as the fit's
    generator = torch.Generator(device=device)
    generator.manual_seed(spec.seed)
    source = EditSource(
        field=original,
        sampler=source_sampler,
        cond_src=model.encode_prompt(spec.source_prompt),
        cond_tgt=model.encode_prompt(spec.target_prompt),
        cond_null=model.encode_prompt(""),
        use_control=getattr(model, "controlnet", None) is not None,
        cond_negative=model.encode_prompt(spec.negative_prompt) if spec.negative_prompt.strip() else None,
    )
    decay = spec.edit.field_average_decay
    average = AveragedModel(edited, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay > 0 else None
    return EditState(edited, optimizer, sampler, method, generator, average=average,
                     frozen_levels=frozen_levels), source


def freeze_fine_levels(edited: NGPField, settings: contract.EditSettings) -> torch.utils.hooks.RemovableHandle | None:
    """Hold the levels finer than ``fine_level_limit * render_resolution`` cells (EditSettings)."""
    if settings.fine_level_limit <= 0:
        return None
    return edited.encoding.freeze_levels_above(settings.fine_level_limit * settings.render_resolution)


def release_fine_levels(state: EditState, settings: contract.EditSettings) -> None:
    """Free the held levels once ``fine_level_release`` of the steps are done. Decided from
    ``state.step`` alone, so a resumed edit releases them at the same step as an unbroken one."""
    if state.frozen_levels is not None and state.step >= settings.fine_level_release * settings.steps:
        state.frozen_levels.remove()
        state.frozen_levels = None


def edit_samplers(original: NGPField, device: torch.device, seed: int) -> tuple[Sampler, Sampler]:
    """(the original's sampler, the edited copy's) at step 0, both with the original's whole grid.

    The original's grid is filled from every cell once (a warm-up update) and left as it is; the
    edited copy starts from that same grid (at step 0 it IS the original) and then refreshes it
    every ``update_every`` steps from random cells, EMA-max, as it moves. A grid filled from a
    random quarter of the cells, as before, missed 61% of a fitted cube's occupied cells at step 0
    (6% still at step 144): the renders lost surface pixels at random, ragged silhouettes."""
    source_sampler = make_sampler(original.aabb, 96, device)  # default warm-up: its first update sees every cell
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    source_sampler.update(0, original.density, generator=generator)
    sampler = make_sampler(original.aabb, 96, device, warmup_steps=0)
    sampler.load_state_dict(source_sampler.state_dict())
    return source_sampler, sampler


def _step(
    state: EditState, source: EditSource, model, spec: contract.JobSpec, device: torch.device
) -> dict[str, float]:
    """One edit step (module docstring, 1-5) at a fresh random camera; advances ``state.step``."""
    generator = state.generator
    release_fine_levels(state, spec.edit)
    state.sampler.update(state.step, state.field.density, generator=generator)
    camera = sample_camera(spec.capture, spec.edit.render_resolution, generator, device)
    view = render_view(state.field, camera, state.sampler, generator)
    with torch.no_grad():
        source_view = render_view(source.field, camera, source.sampler, None)
        source_x = model.encode_images(source_view["rgb"])
    x = model.encode_images(view["rgb"])
    inputs = MethodInputs(
        x=x,
        cond_src=source.cond_src,
        cond_tgt=source.cond_tgt,
        cond_null=source.cond_null,
        cond_negative=source.cond_negative,
        step=state.step,
        total_steps=spec.edit.steps,
        source=source_x,
        control=depth_to_control(view["depth"], view["opacity"]) if source.use_control else None,
        source_control=depth_to_control(source_view["depth"], source_view["opacity"]) if source.use_control else None,
        generator=generator,
    )
    result = state.method.step(inputs)
    state.optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    state.optimizer.step()
    if state.average is not None:
        state.average.update_parameters(state.field)
    state.step += 1
    return result.losses


def _save_checkpoint(stem: Path, state: EditState) -> None:
    """Write ``state`` at ``stem`` (backend/checkpoint.py: a killed write never leaves a half checkpoint)."""
    save_state(stem, {
        "step": state.step,
        "field": state.field.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "sampler": state.sampler.state_dict(),
        "method": state.method.state_dict(),
        "generator": state.generator.get_state(),
        **({"average": state.average.state_dict()} if state.average is not None else {}),
    })


def _load_checkpoint(stem: Path, state: EditState) -> None:
    """Restore ``state`` (step included) from ``stem``; a damaged checkpoint is a CheckpointError."""
    payload = load_state(stem, stage="edit")
    with restoring(stem, stage="edit"):
        state.field.load_state_dict(payload["field"])
        state.optimizer.load_state_dict(payload["optimizer"])
        check_optimizer_state(state.optimizer)
        state.sampler.load_state_dict(payload["sampler"])
        state.method.load_state_dict(payload["method"])
        state.generator.set_state(payload["generator"])  # generator states are CPU byte tensors, any device
        if state.average is not None:
            if "average" not in payload:
                raise KeyError("average: the checkpoint was written by an edit without field averaging")
            state.average.load_state_dict(payload["average"])
        state.step = int(payload["step"])
