"""The edit stage: load the fitted field and the diffusion model, run the chosen method.

``JOB/edit`` is used only when its owner marker says it was made from this reconstruction with
these prompts, seed and settings (``folders.py``); a folder holding anything else stops the job.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from blender_piva import contract

from ..diffusion.hub import DEFAULT_CONTROLNETS
from . import folders
from .context import JobContext, ModelKey, StageError

if TYPE_CHECKING:
    import torch

TOY_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "toy"
"""The embedded default model shipped with the project (``model: "toy"``)."""


def resolve_controlnet(model: str, controlnet: str) -> str:
    """The job's ControlNet; else the model folder's own ``controlnet/``; else the hub default."""
    if controlnet:
        return controlnet
    own = Path(model) / "controlnet"
    if own.is_dir():
        return str(own)
    return DEFAULT_CONTROLNETS.get(model, "")


def resolve_model(name: str) -> str:
    """``toy`` -> the shipped folder; anything else (hub id or folder) unchanged."""
    if name != "toy":
        return name
    if not (TOY_MODEL_DIR / "model_index.json").is_file():
        raise StageError(
            f"the embedded toy model is missing from {TOY_MODEL_DIR}",
            "choose a model folder or hub id in the preferences (or --model), or train it with scripts/train_toy_model.py",
        )
    return str(TOY_MODEL_DIR)


def model_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The model's dtype for ``precision`` on ``device``. ``auto``: fp16 on CUDA; fp32 on the CPU
    (no fast fp16 kernels there) and on MPS (torch's MPS backend runs fp16, but some of the ops SD
    needs fall back or lose precision on older macOS and torch releases: fp32 is the safe default;
    choose fp16 explicitly to halve the memory on a recent Mac)."""
    import torch  # local: the runner imports every stage, and a job that fails validation needs no torch

    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _log_estimate(ctx: JobContext) -> None:
    """Log the table's estimate of the edit's peak GPU memory before the model loads (the table
    is for SD 2.1-base + depth ControlNet in fp16: on the CPU, or for another model, a guide)."""
    from blender_piva.contract.memory_estimate import MemoryEstimateError, describe

    spec = ctx.spec
    try:
        line = describe(spec.edit.method, spec.edit.render_resolution, spec.model.memory)
    except (MemoryEstimateError, KeyError, TypeError, ValueError) as exc:  # a broken table must not stop the edit
        line = f"no estimate ({exc})"
    ctx.events.emit(
        "log", stage="edit",
        message=(
            f"memory estimate for {spec.edit.method} at {spec.edit.render_resolution} px, memory mode "
            f"{spec.model.memory}: {line} (SD 2.1-base + depth ControlNet, fp16)"
        ),
    )


def run(ctx: JobContext) -> dict:
    from ..checkpoint import CheckpointError
    from ..diffusion.memory import apply_memory_mode
    from ..diffusion.model import DiffusionModel, ModelLoadError
    from ..edit3d import edit_field
    from ..editing.registry import MethodConfigError, build_config, method_class
    from ..field.ngp_field import load_field

    spec = ctx.spec
    out_dir = spec.job_dir / "edit"
    reconstruction = folders.finished_owner(
        spec.reconstruction_path, "reconstruction", folders.reconstruction_inputs(spec), needed_by="edit"
    )
    owner = folders.claim(out_dir, "edit", folders.edit_inputs(spec, reconstruction.fingerprint))
    reused = folders.finished_field(out_dir, owner)
    if reused is not None:
        ctx.events.emit("log", stage="edit", message="edit already done; reusing it")
        return {"metrics": reused}
    if owner.done:  # marked done, but its field or metrics do not load: edit again
        owner = contract.set_state(out_dir, owner, "working")
    field_dir = spec.reconstruction_path / folders.FIELD_DIR
    latent = spec.reconstruct.field == "latent"  # ED-NeRF's latent field: stages/latent_edit.py
    try:
        if latent:
            from .latent_edit import load_source

            original, refiner = load_source(field_dir, ctx.device)
        else:
            original = load_field(field_dir, device=ctx.device)
    except FileNotFoundError as exc:
        raise StageError(str(exc), "run the reconstruct stage first (include it in the job's stages)") from None
    device = ctx.device
    try:
        config = build_config(spec.edit.method, spec.edit)
    except (MethodConfigError, ValueError) as exc:
        raise StageError(str(exc), "fix edit.method_params in the job") from None
    _log_estimate(ctx)
    model_name = resolve_model(spec.model.model)
    key = ModelKey(
        model=model_name,
        controlnet=resolve_controlnet(model_name, spec.model.controlnet),
        device=str(device),
        dtype=str(model_dtype(spec.model.precision, device)),
        memory=spec.model.memory,
    )

    def load() -> tuple[DiffusionModel, list[str]]:
        try:
            loaded = DiffusionModel.load(
                key.model, controlnet=key.controlnet, device=device, dtype=model_dtype(spec.model.precision, device)
            )
        except ModelLoadError as exc:
            raise StageError(str(exc), "check the model id or folder in the preferences") from None
        return loaded, apply_memory_mode(loaded, key.memory)

    model, applied = load() if ctx.models is None else ctx.models.get(key, load, ctx.events)
    ctx.events.emit("log", stage="edit", message=f"memory mode {spec.model.memory}: {'; '.join(applied)}")
    method = method_class(spec.edit.method)(config, model)
    try:
        if latent:
            from .latent_edit import edit_latent_field

            metrics = edit_latent_field(original, refiner, model, method, spec, out_dir, device=device, reporter=ctx.reporter("edit"))
        else:
            metrics = edit_field(original, model, method, spec, out_dir, device=device, reporter=ctx.reporter("edit"))
    except CheckpointError as exc:
        raise StageError(exc.what, exc.hint) from None
    finally:
        method.close()
    contract.write_json_atomic(out_dir / folders.METRICS_FILE, metrics)
    contract.set_state(out_dir, owner, "done")
    return {"metrics": metrics}
