"""Every editing method on the toy benchmark in 3D: capture, fit, edit, held-out renders, the oracle's verdict.

    .venv/bin/python bench/toy_edit.py [--methods sds,dds,pds,ssd,piva] [--seeds 0,1,2] [--steps 60]
        [--fit-steps 300] [--render-resolution 64] [--param METHOD.KEY=VALUE ...] [--edits FILE.json] [--tag NAME]
        [--variants FILE.json]

Each source object (toy_world.renders.BENCHMARK: Cycles captures by the project's capture code, 30
views at 64 px, capture seeds no model saw) is fitted once; then every method edits a copy of the
field for every edit and seed, through the job's own edit stage (backend/edit3d.py: VAE in the
loop, the method's own defaults, the depth ControlNet where the method uses it). The edited and the
source fields are rendered at the capture's four held-out cameras at 64 px and judged by the
oracle (backend/toy/judge.py: success, drift, speckle; means with 95% bootstrap intervals).

``--variants FILE.json`` adds columns to the same run, one per entry ``{"tag", "method", "params"}``
(e.g. ``--methods dds --variants bench/piva_variants_3d.json``: DDS beside PIVA's variants, one
table). Results are kept per run under ``--work`` (edits per model weights): a rerun with the same settings and
model only scores them, so an interrupted run resumes. Prints a table, ``toy_edit_seconds`` and per method ``toy_success_M``,
``toy_drift_M``, ``toy_speckle_M`` with ``_ci95``; writes a gallery (rows: edits at the first
seed, view 0; columns: source, then each method) to ``--gallery``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _toy import (apply_edit_settings, benchmark_arguments, benchmark_arms, finish, load_eval_views, model_tag,  # noqa: E402
                  parse_benchmark, print_run, source_views)


def render_views(field, frames: list[dict]):
    """([V, 3, H, W] RGB on white, [V, H, W] opacity > 0.5) of ``field`` at the capture's ``frames``."""
    import torch

    from backend.render.rays import Intrinsics
    from backend.render.volume import render_image

    rgbs, masks = [], []
    with torch.no_grad():
        for f in frames:
            intr = Intrinsics(w=f["w"], h=f["h"], fl_x=f["fl_x"], fl_y=f["fl_y"], cx=f["cx"], cy=f["cy"])
            image = render_image(field, torch.tensor(f["transform_matrix"], dtype=torch.float32), intr)
            rgbs.append(image["rgb"].permute(2, 0, 1).clamp(0, 1))
            masks.append(image["opacity"] > 0.5)
    return torch.stack(rgbs), torch.stack(masks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    benchmark_arguments(parser, steps=60)
    parser.add_argument("--fit-steps", type=int, default=300, help="fit steps per source object")
    parser.add_argument("--render-resolution", type=int, default=64, help="edit renders (64 = the toy model's images)")
    parser.add_argument("--field", default="rgb", choices=("rgb", "latent"),
                        help="rgb: the product's RGB field; latent: ED-NeRF's latent field (no VAE in the edit loop)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "toy_edit")
    parser.add_argument("--gallery", type=Path, default=ROOT / "docs" / "toy_edit_gallery.png")
    args = parser.parse_args(argv)
    methods, seeds, edits, overrides = parse_benchmark(args, parser)
    arms = benchmark_arms(args, parser, methods, overrides)
    started = time.perf_counter()
    captures = source_views(args.work)

    import torch

    import toy_world
    from backend.data.capture_dataset import load_capture
    from backend.diffusion.model import DiffusionModel
    from backend.edit3d import edit_field
    from backend.editing.registry import build_method
    from backend.field.latent_field import load_latent_field
    from backend.field.ngp_field import load_field
    from backend.reconstruct.latent_trainer import fit_latent_field
    from backend.stages.latent_edit import edit_latent_field
    from backend.progress import StageReporter
    from backend.reconstruct.trainer import fit_field
    from backend.stages.edit import resolve_controlnet, resolve_model
    from backend.toy.judge import JUDGED_VIEWS, score_run
    from backend.toy.oracle import load_oracle
    from blender_piva import contract
    from toy_world import renders

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    capture_settings = contract.CaptureSettings(num_views=renders.BENCHMARK.views, num_eval_views=renders.BENCHMARK.eval_views,
                                                resolution=renders.BENCHMARK.resolution, samples=8,
                                                seed=renders.BENCHMARK.seed_base)
    fit_settings = contract.ReconstructSettings(steps=args.fit_steps, rays_per_batch=2048, preview_every=10**6)
    latent = args.field == "latent"
    fit_settings.field = args.field
    model_name = resolve_model(args.model)
    model = DiffusionModel.load(model_name, controlnet=resolve_controlnet(model_name, ""), device=device,
                                dtype=torch.float32)
    weights = model_tag(model_name)  # edits (and latent fits, which use the VAE) are the model's
    print(f"model {model_name}: {weights}", flush=True)

    def load_any(folder: Path):
        """(field, latent refiner or None) of either kind."""
        return load_latent_field(folder, device=device) if latent else (load_field(folder), None)

    # 1. One fit per source, and the source field's own renders at the judged views. A latent
    # field's folder also holds it as an RGB field (load_field): its colour head is distilled
    # from the VAE-decoded renders, so what is judged is what the export bakes.
    fields, refiners, sources = {}, {}, {}
    field_tag = "_latent" if latent else ""
    for key in sorted({edit.source for edit in edits}):
        out = args.work / "fits" / f"{key[0]}_{key[1]}_f{args.fit_steps}{field_tag}"  # settings in the name: reruns resume
        if latent:
            out = out.with_name(f"{out.name}_{weights}")
        if not (out / "field").is_dir():
            if latent:
                metrics = fit_latent_field(load_capture(captures[key]), fit_settings, out, model, device=device, seed=0,
                                           reporter=StageReporter.silent("reconstruct"))
            else:
                metrics = fit_field(load_capture(captures[key]), fit_settings, out, device=device, seed=0,
                                    reporter=StageReporter.silent("reconstruct"))
            print(f"fit {' '.join(key)}: held-out PSNR {metrics['heldout_psnr_db']:.1f} dB", flush=True)
        fields[key], refiners[key] = load_any(out / "field")
        _, _, frames = load_eval_views(captures[key])
        sources[key] = (frames[:JUDGED_VIEWS], *render_views(load_field(out / "field"), frames[:JUDGED_VIEWS]))
    print(f"captures and fits ready in {time.perf_counter() - started:.0f} s", flush=True)

    # 2. Every method on every edit and seed.
    oracle = load_oracle()
    runs: dict[str, list] = {}
    gallery: dict[int, list] = {}
    for arm in arms:
        method_name, label = arm.method, arm.label + field_tag
        suffix = (f"_{arm.tag}" if arm.tag else "") + field_tag
        runs[label] = []
        for index, edit in enumerate(edits):
            frames, source_rgb, source_mask = sources[edit.source]
            gallery.setdefault(index, [source_rgb[0]])
            for seed in seeds:
                name = (f"{method_name}_{'_'.join(edit.source)}_to_{'_'.join(edit.target)}_seed{seed}"
                        f"_s{args.steps}_r{args.render_resolution}_f{args.fit_steps}{suffix}")
                out = args.work / "edits" / weights / name
                if not (out / "field").is_dir():
                    spec = contract.JobSpec(
                        job_id=name, object_name="toy", output_dir=str(out.resolve()), seed=seed,
                        source_prompt=toy_world.prompt(*edit.source), target_prompt=toy_world.prompt(*edit.target),
                    )
                    spec.capture = capture_settings
                    spec.reconstruct.field = args.field
                    spec.edit.method, spec.edit.steps = method_name, args.steps
                    spec.edit.render_resolution = args.render_resolution
                    spec.edit.preview_every, spec.edit.checkpoint_every = 10**6, 10**6
                    spec.edit.method_params = dict(arm.params)
                    apply_edit_settings(spec.edit, arm.edit)
                    method = build_method(method_name, model, spec.edit)
                    try:
                        if latent:
                            edit_latent_field(fields[edit.source], refiners[edit.source], model, method, spec, out,
                                              device=device, reporter=StageReporter.silent("edit"))
                        else:
                            edit_field(fields[edit.source], model, method, spec, out, device=device,
                                       reporter=StageReporter.silent("edit"))
                    finally:
                        method.close()
                edited_rgb, edited_mask = render_views(load_field(out / "field"), frames)
                score = score_run(edit, oracle, edited_rgb, edited_mask, source_rgb, source_mask)
                runs[label].append((edit, seed, score))
                if seed == seeds[0]:
                    gallery[index].append(edited_rgb[0])
                print_run(label, edit, seed, score, started)
    finish(runs, gallery, args.gallery, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
