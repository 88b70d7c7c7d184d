"""The latent-field mode (ED-NeRF, arXiv 2310.02712) on the toy world: fit, held-out quality, edit-step speed.

    .venv/bin/python bench/latent_field.py [--capture red_cube] [--fit-steps 150] [--rays 1024]
        [--samples 32] [--method dds] [--reps 5] [--render-resolution 64] [--threads 2] [--warmups 50 10]

One run, on one toy capture (toy_world.renders.BENCHMARK: 30 Cycles views at 64 px, the captures
bench/toy_edit.py renders into build/toy_edit/captures):

1. the latent field fitted to the VAE-encoded capture twice, with and without the refinement
   network (same seed, steps, rays): ``latent_fit_seconds`` / ``latent_fit_seconds_norefiner`` and
   ``latent_heldout_psnr_db`` / ``latent_heldout_psnr_db_norefiner`` (the 4 held-out views rendered
   as latents, decoded by the VAE, against the captured images);
2. one edit step of ``--method`` at ``--render-resolution`` output pixels, on the same field
   architecture: the RGB mode (``edit3d._step``: render R x R rays, VAE-encode, method, backward)
   against the latent mode (``stages/latent_edit.latent_step``: render R/f x R/f latent rays, refine,
   method, backward; f = 4 for the toy VAE, 8 for SD's). The RGB step runs on the latent field's
   own RGB field (its NGP part, whose colour head was distilled), so both render the same grid.
   Prints ``rgb_edit_step_ms``, ``latent_edit_step_ms`` (medians of ``--reps`` steps after one
   warm-up), ``latent_edit_speedup`` (goal >= 4) and ``latent_edit_vae_encoder_calls`` (0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capture", default="red_cube", help="COLOUR_SHAPE of a toy benchmark capture")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "toy_edit", help="where the toy captures live")
    parser.add_argument("--fit-steps", type=int, default=150)
    parser.add_argument("--rays", type=int, default=1024, help="reconstruct.rays_per_batch (whole latent views per step)")
    parser.add_argument("--samples", type=int, default=32, help="reconstruct.samples_per_ray")
    parser.add_argument("--method", default="dds")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--render-resolution", type=int, default=64)
    parser.add_argument("--distill-views", type=int, default=12, help="decoded views the RGB head is distilled from")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmups", type=int, nargs="+", default=[],
                        help="instead of the refiner ablation, fit with the refiner once per learning-rate warm-up "
                             "(LatentTrainerConfig.warmup_steps), alternated: latent_fit_seconds_warmupN, "
                             "latent_heldout_psnr_db_warmupN, ...")
    args = parser.parse_args(argv)

    import torch

    from backend.data.capture_dataset import load_capture
    from backend.diffusion.model import DiffusionModel
    from backend.edit3d import _setup as rgb_setup
    from backend.edit3d import _step as rgb_step
    from backend.editing.registry import build_method
    from backend.field.latent_field import load_latent_field
    from backend.field.latent_texture import DistillConfig
    from backend.field.ngp_field import NGPFieldConfig
    from backend.progress import StageReporter
    from backend.reconstruct.latent_trainer import LatentTrainerConfig, fit_latent_field
    from backend.stages.edit import resolve_controlnet, resolve_model
    from backend.stages.latent_edit import latent_step, setup_latent_edit
    from blender_piva import contract

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    capture = args.work / "captures" / args.capture
    if not (capture / "transforms.json").is_file():
        sys.path.insert(0, str(ROOT / "bench"))
        from _toy import source_views

        capture = source_views(args.work)[tuple(args.capture.split("_"))]
    dataset = load_capture(capture)
    name = resolve_model("toy")
    model = DiffusionModel.load(name, controlnet=resolve_controlnet(name, ""), device=device, dtype=torch.float32)
    settings = contract.ReconstructSettings(
        steps=args.fit_steps, rays_per_batch=args.rays, samples_per_ray=args.samples, preview_every=10**6, field="latent"
    )
    grid = NGPFieldConfig.cpu_preset()
    distill = DistillConfig(views=args.distill_views, steps=200, rays_per_view=2048)
    figures: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="latent_bench_"))
    fits = [("", True, None), ("_norefiner", False, None)]
    if args.warmups:
        fits = [(f"_warmup{w}", True, w) for w in args.warmups]
    for label, refiner, warmup in fits:
        config = LatentTrainerConfig(field=grid, distill=distill, eval_views=4)
        if not refiner:
            config.refiner = None
        if warmup is not None:
            config.warmup_steps = warmup
        started = time.perf_counter()
        metrics = fit_latent_field(dataset, settings, work / f"fit{label}", model, device=device, seed=0,
                                   reporter=StageReporter.silent("reconstruct"), config=config)
        figures[f"latent_fit_seconds{label}"] = metrics["fit_seconds"]
        figures[f"latent_heldout_psnr_db{label}"] = metrics["heldout_psnr_db"]
        figures[f"latent_heldout_latent_mse{label}"] = metrics["heldout_latent_mse"]
        figures[f"latent_depth_error_rel{label}"] = metrics["depth_error_rel"]
        figures[f"latent_distill_psnr_db{label}"] = metrics["distill_psnr_db"]
        print(f"fit{label or ' (refiner)'}: {metrics} ({time.perf_counter() - started:.0f} s with encoding and distillation)", flush=True)

    # 2. One edit step, RGB mode against latent mode, on the same field.
    field_, refiner = load_latent_field(work / f"fit{fits[0][0]}" / "field")
    spec = contract.JobSpec(job_id="bench", object_name="toy", output_dir=str(work / "job"), seed=0,
                            source_prompt="a red cube", target_prompt="a blue cube")
    spec.capture = contract.CaptureSettings(num_views=30, resolution=64)
    spec.edit.method, spec.edit.render_resolution, spec.edit.steps = args.method, args.render_resolution, 100
    encodes = {"n": 0}
    original_encode = model.encode_images

    def counting_encode(rgb):
        encodes["n"] += 1
        return original_encode(rgb)

    model.encode_images = counting_encode

    def time_steps(step_fn) -> float:
        step_fn()  # warm-up
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            step_fn()
            times.append(1000.0 * (time.perf_counter() - t))
        return statistics.median(times)

    method = build_method(args.method, model, spec.edit)
    try:
        state, source = rgb_setup(field_.ngp, model, method, spec, device)
        figures["rgb_edit_step_ms"] = time_steps(lambda: rgb_step(state, source, model, spec, device))
    finally:
        method.close()
    rgb_encodes, encodes["n"] = encodes["n"], 0
    method = build_method(args.method, model, spec.edit)
    try:
        state, source = setup_latent_edit(field_, refiner, model, method, spec, device)
        figures["latent_edit_step_ms"] = time_steps(lambda: latent_step(state, source, refiner, model, spec, device))
    finally:
        method.close()
    figures["latent_edit_speedup"] = figures["rgb_edit_step_ms"] / figures["latent_edit_step_ms"]
    figures["latent_edit_vae_encoder_calls"] = float(encodes["n"])
    figures["rgb_edit_vae_encoder_calls"] = float(rgb_encodes)
    print(f"setup: capture {args.capture}, fit {args.fit_steps} steps x {args.rays} rays x {args.samples} samples, "
          f"{args.method} steps at {args.render_resolution} px, {args.threads} threads")
    for key, value in figures.items():
        print(f"{key}: {value:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
