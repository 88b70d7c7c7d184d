"""The latent-field mode (``reconstruct.field = latent``; ED-NeRF, arXiv 2310.02712): its fit and its edit.

The edit stage (``stages/edit.py``) loads the fitted latent field and runs this loop when the job's
field is latent (the fit is ``stages/latent_fit.py``); the export stage needs no dispatch, since a latent
field's ``field/`` folder is also an RGB field whose colour head was distilled from VAE-decoded
renders (``field/latent_texture.py``).

The edit loop is ``edit3d.py``'s with the VAE encoder taken out (ED-NeRF Sec. 3.3):

1. draw a camera from the capture's distribution (the same draw as the RGB edit);
2. render the edited latent field there at ``1/f`` of ``edit.render_resolution`` per side (f = the
   VAE's downsampling, 8 for SD: an eighth of the rays in each direction) and refine it: these are
   the latents x [1, C, h, w] every method takes; the frozen fitted field (with the same frozen
   refiner) at the same camera gives the source latents;
3. the rendered depth, upsampled to ``edit.render_resolution``, is the ControlNet condition;
4. the method's step (SDS, DDS, PDS, SSD, PIVA: backend/editing/, unchanged), its gradient
   injected into x and backpropagated into the field;
5. Adam on the field; previews are decoded by the VAE; checkpoints as the RGB edit's.

At the end the RGB head of the edited field is distilled from decoded renders at cameras drawn
from the capture distribution, and ``JOB/edit/field`` is written as for a fit.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from blender_piva import contract

from . import folders
from .context import StageError

DISTILL_SEED_OFFSET = 7919
"""Added to the job's seed for the cameras the RGB head is distilled from (apart from the edit's draws)."""


def load_source(field_dir: Path, device: torch.device):
    """(LatentField, LatentRefiner or None) fitted by the reconstruct stage in the latent mode."""
    from ..field.latent_field import load_latent_field

    try:
        return load_latent_field(field_dir, device=device)
    except ValueError as exc:
        raise StageError(str(exc), "delete the reconstruction folder and fit again") from None


def edit_latent_field(original, refiner, model, method, spec: contract.JobSpec, out_dir: Path, *, device: torch.device, reporter) -> dict[str, float]:
    """Edit a copy of the latent field ``original`` (its ``refiner`` frozen) towards the target prompt;
    save it (with a distilled RGB head) to ``out_dir/field``. Returns figures for the manifest."""
    from ..checkpoint import checkpoint_exists
    from ..edit3d import CHECKPOINT_STEM, _load_checkpoint, _save_checkpoint, make_camera
    from ..field.latent_field import latent_intrinsics, render_latent_view, save_latent_field

    settings = spec.edit
    out_dir = Path(out_dir)
    f = original.config.downsample
    preview = make_camera(
        spec.capture.eval_elevation_deg, 30.0, spec.capture.eval_distance, spec.capture.eval_fov_deg, settings.render_resolution, device
    )
    if getattr(model, "vae", None) is None:
        raise StageError(
            f"reconstruct.field = latent needs a latent diffusion model with a VAE; {spec.model.model!r} works on pixels",
            "set reconstruct.field = rgb, or choose a latent model (Stable Diffusion, the toy model)",
        )
    try:
        latent_intrinsics(preview.intrinsics, f)  # a resolution the VAE does not divide fails here, before any step
    except ValueError as exc:
        raise StageError(str(exc), f"set edit.render_resolution to a multiple of {f}") from None
    if spec.edit.field_average_decay > 0:
        raise StageError(
            "edit.field_average_decay averages the RGB field's edit; the latent field's edit does not have it",
            "set edit.field_average_decay to 0, or fit an RGB field (reconstruct.field = rgb)",
        )
    checkpoint_path = out_dir / contract.CHECKPOINT_DIR / CHECKPOINT_STEM
    state, source = setup_latent_edit(original, refiner, model, method, spec, device)
    if checkpoint_exists(checkpoint_path):
        _load_checkpoint(checkpoint_path, state)
        reporter.log(f"resuming the latent edit from step {state.step}")
    reporter.begin(settings.steps, f"{settings.method} latent edit: {spec.source_prompt!r} -> {spec.target_prompt!r}")
    started = time.perf_counter()
    while state.step < settings.steps:
        if reporter.should_stop():
            _save_checkpoint(checkpoint_path, state)
            from ..progress import JobCancelled

            raise JobCancelled("edit", state.step)
        losses = latent_step(state, source, refiner, model, spec, device)
        done = state.step
        reporter.progress(done, settings.steps, losses)
        if done % settings.preview_every == 0 or done == settings.steps:
            with torch.no_grad():
                z = render_latent_view(state.field, refiner, preview.c2w, latent_intrinsics(preview.intrinsics, f), state.sampler)["latent"]
                reporter.preview(done, model.decode_latents(z)[0].permute(1, 2, 0).cpu().numpy())
        if done % settings.checkpoint_every == 0 and done < settings.steps:
            _save_checkpoint(checkpoint_path, state)
    edit_seconds = time.perf_counter() - started
    distilled = distill_after_edit(state.field, refiner, model, spec, state.sampler, device)
    save_latent_field(out_dir / folders.FIELD_DIR, state.field, refiner)
    _save_checkpoint(checkpoint_path, state)
    return {"edit_seconds": edit_seconds, "edit_steps": float(settings.steps), **distilled}


def setup_latent_edit(original, refiner, model, method, spec: contract.JobSpec, device: torch.device):
    """(EditState, EditSource) of ``edit3d`` for a latent field: the edited copy and its optimiser, the
    frozen original with a filled occupancy grid, the encoded prompts. The refiner is frozen."""
    from ..edit3d import EditSource, EditState, edit_samplers, freeze_fine_levels

    original = original.to(device).eval().requires_grad_(False)
    if refiner is not None:
        refiner.to(device).eval().requires_grad_(False)
    edited = copy.deepcopy(original).train().requires_grad_(True)
    frozen_levels = freeze_fine_levels(edited, spec.edit)
    source_sampler, sampler = edit_samplers(original, device, spec.seed)
    optimizer = torch.optim.Adam(
        edited.parameter_groups(spec.edit.field_learning_rate, spec.edit.field_mlp_learning_rate), betas=(0.9, 0.99), eps=1e-15,
        fused=True,  # as the RGB fit's: one pass over the table a step
    )
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
    return EditState(edited, optimizer, sampler, method, generator, frozen_levels=frozen_levels), source


def latent_step(state, source, refiner, model, spec: contract.JobSpec, device: torch.device) -> dict[str, float]:
    """One latent edit step (module docstring, 1-5) at a fresh random camera; advances ``state.step``."""
    from ..diffusion.control import depth_to_control
    from ..edit3d import release_fine_levels, sample_camera
    from ..editing.base import MethodInputs
    from ..field.latent_field import latent_intrinsics, render_latent_view

    generator = state.generator
    release_fine_levels(state, spec.edit)
    f = state.field.config.downsample
    state.sampler.update(state.step, state.field.density, generator=generator)
    camera = sample_camera(spec.capture, spec.edit.render_resolution, generator, device)
    intr = latent_intrinsics(camera.intrinsics, f)
    view = render_latent_view(state.field, refiner, camera.c2w, intr, state.sampler, generator)
    with torch.no_grad():
        source_view = render_latent_view(source.field, refiner, camera.c2w, intr, source.sampler, None)

    def control(v):  # latent-resolution depth -> the ControlNet image at the edit's resolution
        up = [F.interpolate(v[k][None, None].detach(), scale_factor=f, mode="nearest")[0, 0] for k in ("depth", "opacity")]
        return depth_to_control(*up)

    inputs = MethodInputs(
        x=view["latent"],
        cond_src=source.cond_src,
        cond_tgt=source.cond_tgt,
        cond_null=source.cond_null,
        cond_negative=source.cond_negative,
        step=state.step,
        total_steps=spec.edit.steps,
        source=source_view["latent"].detach(),
        control=control(view) if source.use_control else None,
        source_control=control(source_view) if source.use_control else None,
        generator=generator,
    )
    result = state.method.step(inputs)
    state.optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    state.optimizer.step()
    state.step += 1
    return result.losses


def distill_after_edit(field_, refiner, model, spec: contract.JobSpec, sampler, device: torch.device) -> dict[str, float]:
    """Distil the edited field's RGB head from decoded renders at cameras of the capture distribution."""
    from ..edit3d import sample_camera
    from ..field.latent_texture import DistillConfig, distill_rgb_head

    config = DistillConfig()
    generator = torch.Generator(device=device)
    generator.manual_seed(spec.seed + DISTILL_SEED_OFFSET)
    cameras = []
    for _ in range(config.views):
        camera = sample_camera(spec.capture, spec.edit.render_resolution, generator, device)
        cameras.append((camera.c2w, camera.intrinsics))
    field_.eval()
    return distill_rgb_head(field_, refiner, model.decode_latents, cameras, sampler, config, generator=generator)
