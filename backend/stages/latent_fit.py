"""The reconstruct stage's fit in the latent mode (``reconstruct.field = latent``; ED-NeRF, arXiv 2310.02712).

``stages/reconstruct.py`` calls :func:`fit` instead of the RGB fit: the diffusion model is loaded
(its VAE encodes the capture, its decoder gives the RGB head its colours) and
``reconstruct/latent_trainer.py`` fits the latent field and its refiner into ``field/``.
"""

from __future__ import annotations

from pathlib import Path

from .context import JobContext, ModelKey, StageError


def load_model(ctx: JobContext, stage: str):
    """The job's diffusion model (the worker's cache when there is one), with its memory mode applied."""
    from ..diffusion.memory import apply_memory_mode
    from ..diffusion.model import DiffusionModel, ModelLoadError
    from .edit import model_dtype, resolve_controlnet, resolve_model

    spec, device = ctx.spec, ctx.device
    model_name = resolve_model(spec.model.model)
    key = ModelKey(
        model=model_name,
        controlnet=resolve_controlnet(model_name, spec.model.controlnet),
        device=str(device),
        dtype=str(model_dtype(spec.model.precision, device)),
        memory=spec.model.memory,
    )

    def load():
        try:
            loaded = DiffusionModel.load(key.model, controlnet=key.controlnet, device=device, dtype=model_dtype(spec.model.precision, device))
        except ModelLoadError as exc:
            raise StageError(str(exc), "check the model id or folder in the preferences") from None
        return loaded, apply_memory_mode(loaded, key.memory)

    model, applied = load() if ctx.models is None else ctx.models.get(key, load, ctx.events)
    ctx.events.emit("log", stage=stage, message=f"memory mode {spec.model.memory}: {'; '.join(applied)}")
    if getattr(model, "vae", None) is None:
        raise StageError(
            f"reconstruct.field = latent needs a latent diffusion model with a VAE; {spec.model.model!r} works on pixels",
            "set reconstruct.field = rgb, or choose a latent model (Stable Diffusion, the toy model)",
        )
    return model


def fit(ctx: JobContext, dataset, out_dir: Path) -> dict[str, float]:
    """The reconstruct stage's fit in the latent mode (``reconstruct/latent_trainer.py``)."""
    from ..checkpoint import CheckpointError
    from ..reconstruct.latent_trainer import fit_latent_field

    spec = ctx.spec
    model = load_model(ctx, "reconstruct")
    try:
        return fit_latent_field(
            dataset, spec.reconstruct, out_dir, model, device=ctx.device, seed=spec.reconstruct.seed,
            reporter=ctx.reporter("reconstruct"),
        )
    except CheckpointError:
        raise  # the reconstruct stage turns it into a StageError naming the files
    except ValueError as exc:
        raise StageError(str(exc), "capture at a resolution the VAE divides (a multiple of 8), or use reconstruct.field = rgb") from None
