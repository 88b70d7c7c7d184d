"""Quality of every editing method on the toy world, with the embedded toy model.

    .venv/bin/python bench/toy_edit.py [--steps 200] [--methods sds,dds,pds,ssd,piva] [--threads 2]

Eight edits of two kinds, each run by every method with the same seeds, steps and resolution:

* appearance (colour changes, shape stays): success = the edited object's foreground colour on the
  held-out views is nearest to the target colour; drift = 1 - silhouette IoU with the source;
* shape (shape changes, colour stays): success = the silhouette is closer (IoU) to the target
  shape's than to the source's; drift = colour distance (sRGB) of the foreground to the source's.

Every source is captured with Cycles and fitted once; the edited fields are rendered at the
held-out cameras of the capture. Prints a table and `toy_success_METHOD: X`, `toy_drift_METHOD: Y`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EDITS = [
    ("appearance", ("red", "cube"), ("blue", "cube")),
    ("appearance", ("green", "sphere"), ("yellow", "sphere")),
    ("appearance", ("blue", "cylinder"), ("red", "cylinder")),
    ("appearance", ("yellow", "torus"), ("purple", "torus")),
    ("shape", ("red", "cube"), ("red", "sphere")),
    ("shape", ("green", "sphere"), ("green", "cube")),
    ("shape", ("blue", "cylinder"), ("blue", "cone")),
    ("shape", ("purple", "cone"), ("purple", "cylinder")),
]
"""(kind, source (colour, shape), target (colour, shape))."""


def capture(color: str, shape: str, settings, out: Path) -> Path:
    import bpy

    import toy_world
    from blender_piva.scene.capture import capture_object

    if (out / "transforms.json").is_file():
        return out
    bpy.ops.wm.read_factory_settings(use_empty=True)
    obj = toy_world.add_object(color, shape)
    capture_object(obj, settings, out)
    return out


def eval_views(capture_dir: Path) -> list[dict]:
    """Held-out frames with their alpha masks and colours."""
    from PIL import Image

    meta = json.loads((capture_dir / "transforms.json").read_text())
    views = []
    for frame in meta["frames"]:
        if frame.get("split") != "eval":
            continue
        rgba = np.asarray(Image.open(capture_dir / frame["file_path"]).convert("RGBA"), dtype=np.float32) / 255.0
        views.append({"frame": frame, "alpha": rgba[..., 3], "rgb": rgba[..., :3]})
    return views


def foreground_color(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:  # [H, W, 3], [H, W] -> [3]
    return rgb[mask].mean(axis=0) if mask.any() else np.ones(3)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def render_field(field, views: list[dict]) -> list[dict]:
    import torch

    from backend.render.rays import Intrinsics
    from backend.render.volume import render_image

    out = []
    for view in views:
        f = view["frame"]
        intr = Intrinsics(w=f["w"], h=f["h"], fl_x=f["fl_x"], fl_y=f["fl_y"], cx=f["cx"], cy=f["cy"])
        c2w = torch.tensor(f["transform_matrix"], dtype=torch.float32)
        image = render_image(field, c2w, intr)
        out.append({"rgb": image["rgb"].numpy(), "mask": image["opacity"].numpy() > 0.5})
    return out


def parse_overrides(items: list[str]) -> dict[str, dict[str, object]]:
    """``["piva.lambda_identity=1.0"]`` -> ``{"piva": {"lambda_identity": 1.0}}`` (core/overrides.py)."""
    from blender_piva.core.overrides import OverrideError
    from blender_piva.core.overrides import parse_overrides as parse

    try:
        return parse(items, flag="--param", form="METHOD.KEY=VALUE", example="piva.lambda_identity=1.0")
    except OverrideError as exc:
        raise SystemExit(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="edit steps per run")
    parser.add_argument("--fit-steps", type=int, default=400)
    parser.add_argument("--views", type=int, default=30, help="training views per capture")
    parser.add_argument("--resolution", type=int, default=64, help="capture resolution")
    parser.add_argument("--methods", default="sds,dds,pds,ssd,piva")
    parser.add_argument("--edits", type=int, default=len(EDITS), help="use the first N edits")
    parser.add_argument("--only", default="", help="comma-separated indices into the edit list, e.g. 0,4 (instead of --edits)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "toy_edit")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="override a method's hyperparameter (an ablation), e.g. piva.lambda_identity=1.0; "
                             "VALUE is read as JSON, else as a string; repeatable")
    parser.add_argument("--tag", default="", help="label of this ablation in the table and the figure names")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.param)
    if overrides and not args.tag:
        parser.error("--param needs a --tag so the ablation's figures and work folders are told apart")

    import torch

    from backend.data.capture_dataset import load_capture
    from backend.diffusion.model import DiffusionModel
    from backend.edit3d import edit_field
    from backend.editing.registry import build_method
    from backend.field.ngp_field import load_field
    from backend.progress import StageReporter
    from backend.reconstruct.trainer import fit_field
    from backend.stages.edit import resolve_controlnet, resolve_model
    import toy_world
    from blender_piva import contract

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    methods = [m for m in args.methods.split(",") if m]
    chosen = [int(i) for i in args.only.split(",") if i] or list(range(min(args.edits, len(EDITS))))
    edits = [(i, *EDITS[i]) for i in chosen]
    settings = contract.CaptureSettings(num_views=args.views, num_eval_views=8, resolution=args.resolution, samples=8)
    fit_settings = contract.ReconstructSettings(steps=args.fit_steps, rays_per_batch=2048, preview_every=10**6)
    started = time.perf_counter()

    # 1. Captures: sources and shape targets; reference colours from one sphere per colour.
    needed = {src for _, _, src, _ in edits} | {tgt for _, kind, _, tgt in edits if kind == "shape"}
    captures = {key: capture(*key, settings, args.work / "captures" / f"{key[0]}_{key[1]}") for key in sorted(needed)}
    reference = {}
    for color in toy_world.COLORS:
        ref = capture(color, "sphere", settings, args.work / "captures" / f"{color}_sphere")
        views = eval_views(ref)
        reference[color] = np.mean([foreground_color(v["rgb"], v["alpha"] > 0.5) for v in views], axis=0)
    print(f"captures ready in {time.perf_counter() - started:.0f} s", flush=True)

    # 2. One fit per source.
    fields = {}
    for key in sorted({src for _, _, src, _ in edits}):
        out = args.work / "fits" / f"{key[0]}_{key[1]}_f{args.fit_steps}"  # settings in the name: reruns resume
        if not (out / "field").is_dir():
            metrics = fit_field(load_capture(captures[key]), fit_settings, out, device=device, seed=args.seed,
                                reporter=StageReporter.silent("reconstruct"))
            print(f"fit {key}: held-out PSNR {metrics['heldout_psnr_db']:.1f} dB", flush=True)
        fields[key] = load_field(out / "field")

    # 3. Every method on every edit.
    model_name = resolve_model(args.model)
    model = DiffusionModel.load(model_name, controlnet=resolve_controlnet(model_name, ""), device=device,
                                dtype=torch.float32)
    rows = []
    suffix = f"_{args.tag}" if args.tag else ""
    for method_name in methods:
        for index, kind, src, tgt in edits:
            out = args.work / "edits" / f"{method_name}_{index}_s{args.steps}_f{args.fit_steps}{suffix}"
            spec = contract.JobSpec(
                job_id=f"{method_name}_{index}", object_name="toy", output_dir=str(out.resolve()), seed=args.seed,
                source_prompt=toy_world.prompt(*src), target_prompt=toy_world.prompt(*tgt),
            )
            spec.capture = settings
            spec.edit.method, spec.edit.steps, spec.edit.render_resolution = method_name, args.steps, 32
            spec.edit.preview_every, spec.edit.checkpoint_every = 10**6, 10**6
            spec.edit.method_params = dict(overrides.get(method_name, {}))
            if not (out / "field").is_dir():
                method = build_method(method_name, model, spec.edit)
                try:
                    edit_field(fields[src], model, method, spec, out, device=device,
                               reporter=StageReporter.silent("edit"))
                finally:
                    method.close()
            edited = render_field(load_field(out / "field"), eval_views(captures[src]))
            source_views = eval_views(captures[src])
            masks = [e["mask"] for e in edited]
            color = np.mean([foreground_color(e["rgb"], e["mask"]) for e in edited], axis=0)
            iou_source = float(np.mean([iou(m, v["alpha"] > 0.5) for m, v in zip(masks, source_views)]))
            if kind == "appearance":
                predicted = min(reference, key=lambda c: np.linalg.norm(color - reference[c]))
                success = float(predicted == tgt[0])
                drift = 1.0 - iou_source
                detail = f"colour -> {predicted}"
            else:
                target_views = eval_views(captures[tgt])
                iou_target = float(np.mean([iou(m, v["alpha"] > 0.5) for m, v in zip(masks, target_views)]))
                success = float(iou_target > iou_source)
                drift = float(np.linalg.norm(color - reference[src[0]]))
                detail = f"IoU target {iou_target:.2f} / source {iou_source:.2f}"
            rows.append((f"{method_name}{suffix}", kind, toy_world.prompt(*src), toy_world.prompt(*tgt), success, drift, detail))
            print(f"{method_name + suffix:5s} {kind:10s} {toy_world.prompt(*src):18s} -> {toy_world.prompt(*tgt):18s} "
                  f"success {success:.0f} drift {drift:.3f} ({detail})", flush=True)

    print("\n| method | kind | edit | success | drift | detail |\n|---|---|---|---|---|---|")
    for method_name, kind, s, t, success, drift, detail in rows:
        print(f"| {method_name} | {kind} | {s} -> {t} | {success:.0f} | {drift:.3f} | {detail} |")
    print(f"toy_edit_seconds: {time.perf_counter() - started:.1f}")
    for method_name in methods:
        mine = [r for r in rows if r[0] == method_name + suffix]
        print(f"toy_success_{method_name}{suffix}: {np.mean([r[4] for r in mine]):.3f}")
        print(f"toy_drift_{method_name}{suffix}: {np.mean([r[5] for r in mine]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
