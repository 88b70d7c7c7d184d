"""2D editing (PIVA section 5): the generator g is the identity, the parameter is the image itself.

As in the DDS and PIVA 2D setups the optimised parameter is the image's VAE latent (for a
pixel-space model, the image in [-1, 1]); the source latent is the encoded input, so
``inputs.source`` is exact at every step. Plain SGD with a cosine learning-rate schedule, lr 0.01,
1000 steps (paper: "most of the editing is done in 300-500 steps"). With the shared injection
convention (sum over latent elements) SGD's lr 0.01 moves each latent element by 0.01 * grad,
close to the DDS notebook's lr 0.1 * 2000 / 16384 per element.

CLI: ``python -m backend edit2d IN.png OUT.png --source "..." --target "..." --method piva --model DIR``
(the lead hooks :func:`main_edit2d` into ``backend/__main__.py``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.diffusion.model import DiffusionModel, ModelLoadError
from backend.editing.base import MethodInputs
from backend.editing.registry import build_method
from backend.progress import JobCancelled, StageReporter
from blender_piva.contract import DEVICES, METHODS, EditSettings
from blender_piva.contract.layout import MEMORY_MODES


def edit_image(
    image: np.ndarray,  # [H, W, 3] or [B, H, W, 3] float in [0, 1]
    source_prompt: str,
    target_prompt: str,
    method: str,
    settings: EditSettings | None,
    model: DiffusionModel,
    *,
    steps: int | None = None,
    seed: int = 0,
    learning_rate: float | None = None,
    cosine: bool = True,
    reporter: StageReporter | None = None,
    negative_prompt: str = "",
) -> np.ndarray:  # same shape as ``image``, float32 in [0, 1]
    """Edit ``image`` from ``source_prompt`` towards ``target_prompt`` with ``method``.

    A batch [B, H, W, 3] (views of one object) is edited together by one method instance (one
    adapter pair for PIVA, as in 3D); each image still gets its full gradient (the loss is the
    batch mean, so it is scaled by B), so a batch edits each image as a single edit would.

    ``settings`` supplies the method's hyperparameters (guidance, lambda, LoRA, ``method_params``),
    ``steps`` (default ``settings.steps``) and the learning rate (default
    ``settings.field_learning_rate``, 0.01 as in the paper). H and W must suit the model (multiples
    of 64 are safe for SD). ``negative_prompt`` conditions CFG's unconditional branch (empty = the
    empty prompt). Raises ``JobCancelled`` when the reporter asks to stop.
    """
    settings = settings if settings is not None else EditSettings(method=method)
    steps = settings.steps if steps is None else steps
    lr = settings.field_learning_rate if learning_rate is None else learning_rate
    reporter = reporter or StageReporter.silent("edit")
    single = image.ndim == 3
    batch = image[None] if single else image
    if batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError(f"image must be [H, W, 3] or [B, H, W, 3], got shape {image.shape}")

    rgb = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).permute(0, 3, 1, 2).to(model.device)
    with torch.no_grad():
        source = model.encode_images(rgb)  # [1, C, h, w]
    latent = source.clone().requires_grad_(True)
    conds = {
        "cond_src": model.encode_prompt(source_prompt),
        "cond_tgt": model.encode_prompt(target_prompt),
        "cond_null": model.null_condition(),
        "cond_negative": model.encode_prompt(negative_prompt) if negative_prompt.strip() else None,
    }
    editor = build_method(method, model, settings)
    optimizer = torch.optim.SGD([latent], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1)) if cosine else None
    generator = torch.Generator(device=model.device).manual_seed(seed)
    reporter.begin(steps, f"2D edit with {method}")
    try:
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            result = editor.step(MethodInputs(x=latent, source=source, step=step, total_steps=steps, generator=generator, **conds))
            (result.loss * latent.shape[0]).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            reporter.progress(step + 1, steps, result.losses)
            if settings.preview_every and (step + 1) % settings.preview_every == 0:
                reporter.preview(step + 1, _to_numpy(model, latent)[0])
            if reporter.should_stop():
                raise JobCancelled("edit", step + 1)
    finally:
        editor.close()
    edited = _to_numpy(model, latent)
    return edited[0] if single else edited


def _to_numpy(model: DiffusionModel, latent: torch.Tensor) -> np.ndarray:  # [B, C, h, w] -> [B, H, W, 3]
    with torch.no_grad():
        image = model.decode_latents(latent.detach())
    return image.permute(0, 2, 3, 1).float().cpu().numpy()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    value: Any = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend edit2d", description="Edit one image with a text prompt.")
    p.add_argument("input", type=Path, help="image to edit (PNG/JPEG)")
    p.add_argument("output", type=Path, help="where to write the edited PNG")
    p.add_argument("--source", required=True, help="what the image shows now")
    p.add_argument("--target", required=True, help="what it should show")
    p.add_argument("--negative", default="", metavar="TEXT",
                   help="negative prompt: what the edit should steer away from (default: none, the empty prompt)")
    p.add_argument("--method", default="piva", choices=METHODS)
    p.add_argument("--model", required=True, help="diffusers model folder, hub id (safetensors), or 'toy'")
    p.add_argument("--controlnet", default="", help="optional depth ControlNet (unused in 2D)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (cosine schedule)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance (default: the method's own, docs/methods.md)")
    p.add_argument("--lambda-identity", type=float, default=None, help="PIVA's lambda (default: PIVA's own)")
    p.add_argument("--param", action="append", type=_parse_param, default=[], metavar="KEY=VALUE",
                   help="extra method parameter (repeatable), e.g. --param t_max=0.9")
    p.add_argument("--size", type=int, default=512, help="longer side after resizing (rounded to multiples of 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    p.add_argument("--memory", default="balanced", choices=MEMORY_MODES,
                   help="GPU memory mode: fast, balanced (default) or low (backend/diffusion/memory.py)")
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main_edit2d(argv: list[str]) -> int:
    """Entry point of ``python -m backend edit2d``; returns the process exit code.

    Every argument, the input image and the model are checked before the edit starts; a problem
    is one ``error:`` line naming it and the fix (exit code 2), never a traceback.
    """
    args = build_parser().parse_args(argv)
    from PIL import Image, UnidentifiedImageError

    from backend.resources import is_out_of_memory
    from backend.stages.context import StageError
    from backend.stages.edit import resolve_model
    from blender_piva.contract import ContractError, disk

    for flag, prompt in (("--source", args.source), ("--target", args.target)):
        if not prompt.strip():
            when = "now" if flag == "--source" else "after the edit"
            return _fail(f"{flag} is empty: describe what the image shows {when}")
    if len(args.negative) > 1000:
        return _fail(f"--negative is {len(args.negative)} characters long; at most 1000")
    if args.steps < 0 or args.size < 1:
        return _fail(f"--steps must be >= 0 and --size >= 1 (got {args.steps} and {args.size})")
    if not args.input.is_file():
        return _fail(f"input image {args.input} does not exist")
    if args.output.is_dir():
        return _fail(f"output {args.output} is a folder: give the PNG file to write, e.g. {args.output / 'edited.png'}")
    try:
        with Image.open(args.input) as opened:
            img = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "not an image file" if isinstance(exc, UnidentifiedImageError) else str(exc) or type(exc).__name__
        return _fail(f"cannot read {args.input} as an image ({reason}); pass a PNG or JPEG file")
    from backend.diffusion.memory import apply_memory_mode
    from backend.runner import resolve_device
    from backend.stages.edit import model_dtype

    try:
        device = resolve_device(args.device)
    except StageError as exc:
        return _fail(f"--device {args.device}: {exc}; {exc.hint}")
    dtype = model_dtype(args.precision, device)

    scale = args.size / max(img.size)
    w, h = (max(64, int(math.floor(s * scale / 64)) * 64) for s in img.size)
    img = img.resize((w, h), Image.LANCZOS)
    image = np.asarray(img, dtype=np.float32) / 255.0

    settings = EditSettings(
        method=args.method,
        steps=args.steps,
        guidance_scale=args.guidance,
        field_learning_rate=args.lr,
        lambda_identity=args.lambda_identity,
        method_params=dict(args.param),
    )
    try:
        settings.validate()
        model_name = resolve_model(args.model)
        model = DiffusionModel.load(model_name, controlnet=args.controlnet, device=device, dtype=dtype)
        apply_memory_mode(model, args.memory)
    except ContractError as exc:
        return _fail(f"{exc}; fix the matching option")
    except StageError as exc:
        return _fail(f"{exc}; {exc.hint}")
    except ModelLoadError as exc:
        return _fail(str(exc))
    try:
        edited = edit_image(
            image, args.source, args.target, args.method, settings, model, seed=args.seed, negative_prompt=args.negative
        )
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        detail = str(exc).strip()[:120] or type(exc).__name__
        return _fail(f"out of memory editing a {w}x{h} image ({detail}); lower --size")
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(edited, 0, 1) * 255 + 0.5).astype(np.uint8)).save(args.output)
    except OSError as exc:
        args.output.unlink(missing_ok=True)  # no half-written PNG
        full = " (the disk is full)" if disk.is_disk_full(exc) else ""
        return _fail(f"cannot write {args.output}: {exc.strerror or exc}{full}; choose another output path")
    print(f"wrote {args.output} ({w}x{h}, {args.method}, {args.steps} steps)")
    return 0
