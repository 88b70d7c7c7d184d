"""Reconstruction quality and speed: capture a textured Suzanne with Cycles, fit the field on the CPU.

For each resolution (64 and 128 by default) prints the training curve (step, seconds, batch PSNR)
and the held-out figures ``heldout_psnr_db_R``, ``depth_error_rel_R`` (mean |planar depth error|
on held-out foreground pixels over the box size) and ``fit_seconds_R``. Goal: >= 30 dB at 128 px
within a few minutes on 2 CPU cores. The defaults are the fit of the ``preview`` preset, the one
the demo runs (600 steps of 1024 rays, 64 samples per ray, 40 + 4 views).

The same capture is fitted once per ``--variants`` entry (issue 18), in that order: ``before``, the
reference paths of the CPU fit (``TrainerConfig(fast_paths=False)``: the hash-grid lookup and
pruning as before the fast twins, every grid update run, the 50-step warm-up and the full batch
from the first step); ``after``, today's defaults; optionally
``every_update``, today's with the settled grid updates run too (the same field: the time they
cost), and ``grid32``, the occupancy grid updated every 32 steps (``--repeats`` alternates them further: the machine is shared, so only side-by-side ratios mean
something). Each variant prints ``heldout_psnr_db_R_V``, ``depth_error_rel_R_V``,
``fit_seconds_R_V`` (medians over repeats); the plain names are the current default's, and
``fit_speedup_R`` is before / after.

    .venv/bin/python bench/reconstruct.py [--resolutions 64 128] [--steps 600] [--views 40] [--threads 2]
        [--variants before after every_update grid32] [--repeats 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bpy  # noqa: E402
import torch  # noqa: E402

from backend.data.capture_dataset import load_capture  # noqa: E402
from backend.progress import StageReporter  # noqa: E402
from backend.reconstruct.trainer import TrainerConfig, fit_field  # noqa: E402
from blender_piva.scene.capture import capture_object  # noqa: E402
from blender_piva.contract import CaptureSettings, ReconstructSettings  # noqa: E402


VARIANTS = {
    "before": {"fast_paths": False, "skip_settled_occupancy": False, "warmup_steps": 50, "start_steps": 0},
    "after": {},
    "every_update": {"skip_settled_occupancy": False},
    "grid32": {"occupancy_update_every": 32},
    "warmup50": {"warmup_steps": 50},
    "warmup10": {"warmup_steps": 10},
    "full_start": {"start_steps": 0},
}
"""Bench variant -> ``TrainerConfig`` overrides. ``before``: the fit as before issue 18 (the reference
paths, every grid update, the 50-step warm-up, the full batch from the first step);
``after``: today's defaults; ``every_update``: today's with every grid update run, also those that
cannot change the sampling (``skip_settled_occupancy`` off: the same field, only slower);
``grid32``: the occupancy grid updated every 32 steps instead of 16 (tried to cut the fit's grid
updates: the same PSNR on the demo's cube, 2 dB less on Suzanne); ``warmup50`` / ``warmup10``: the
learning rate's linear warm-up over 50 or 10 steps (while the untrained field is transparent every
ray's pruning marches all its samples: the fit's first 50 steps cost half of it on the demo's cube);
``full_start``: the full batch from the first step (today's default draws 256 rays during the
first 60 steps, while the field is still a fog that keeps some 47 samples on every ray)."""


def make_textured_suzanne() -> "bpy.types.Object":
    """Suzanne (subdivided) whose base colour is a smooth procedural noise: colour varies over the surface."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_monkey_add(rotation=(0.0, 0.0, 0.5))
    obj = bpy.context.active_object
    obj.modifiers.new("Subdivision", "SUBSURF").levels = 1
    material = bpy.data.materials.new("NoisePaint")
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 2.5
    noise.inputs["Detail"].default_value = 1.0
    links.new(noise.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.9
    obj.data.materials.append(material)
    bpy.context.view_layer.update()
    return obj


class CurveReporter(StageReporter):
    """Prints the training curve every ``every`` steps."""

    def __init__(self, every: int) -> None:
        super().__init__(stage="reconstruct")
        self.every = every
        self.t0 = time.perf_counter()

    def progress(self, step, total, losses=None):
        if step % self.every == 0 or step == total:
            l = losses or {}
            print(
                f"step {step:5d}  {time.perf_counter() - self.t0:7.1f} s  batch_psnr {l.get('psnr', 0):5.2f} dB  "
                f"depth {l.get('depth', 0):.4f}  samples/ray {l.get('samples_per_ray', 0):.1f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rays", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--views", type=int, default=40)
    parser.add_argument("--eval-views", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the bench machine has 2 cores)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["before", "after"],
                        help="fits per capture, in this order: reference paths (before), today's defaults (after), "
                             "today's with every grid update (every_update), the grid updated every 32 steps (grid32)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the variants; even rounds run them reversed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="piva_bench_reconstruct_") as tmp:
        for res in args.resolutions:
            obj = make_textured_suzanne()
            capture_settings = CaptureSettings(num_views=args.views, num_eval_views=args.eval_views, resolution=res, samples=16)
            t = time.perf_counter()
            transforms = capture_object(obj, capture_settings, Path(tmp) / f"capture_{res}")
            print(f"capture_seconds_{res}: {time.perf_counter() - t:.1f}")
            dataset = load_capture(transforms.parent)
            settings = ReconstructSettings(
                steps=args.steps,
                rays_per_batch=args.rays,
                samples_per_ray=args.samples,
                learning_rate=args.lr,
                checkpoint_every=args.steps,
                preview_every=args.steps,
            )
            figures: dict[str, dict[str, list[float]]] = {v: {} for v in args.variants}
            for rep in range(args.repeats):
                order = args.variants if rep % 2 == 0 else args.variants[::-1]
                for variant in order:
                    print(f"fit {variant} (round {rep + 1} of {args.repeats})", flush=True)
                    metrics = fit_field(
                        dataset,
                        settings,
                        Path(tmp) / f"fit_{res}_{variant}_{rep}",
                        device=torch.device("cpu"),
                        seed=0,
                        reporter=CurveReporter(max(args.steps // 10, 1)),
                        config=TrainerConfig(eval_views=args.eval_views, **VARIANTS[variant]),
                    )
                    for key in ("heldout_psnr_db", "depth_error_rel", "fit_seconds"):
                        figures[variant].setdefault(key, []).append(metrics[key])
            for variant in args.variants:
                m = {k: statistics.median(v) for k, v in figures[variant].items()}
                print(f"heldout_psnr_db_{res}_{variant}: {m['heldout_psnr_db']:.2f}")
                print(f"depth_error_rel_{res}_{variant}: {m['depth_error_rel']:.4f}")
                print(f"fit_seconds_{res}_{variant}: {m['fit_seconds']:.1f}")
            current = "after" if "after" in figures else args.variants[0]
            m = {k: statistics.median(v) for k, v in figures[current].items()}
            print(f"heldout_psnr_db_{res}: {m['heldout_psnr_db']:.2f}")
            print(f"depth_error_rel_{res}: {m['depth_error_rel']:.4f}")
            print(f"fit_seconds_{res}: {m['fit_seconds']:.1f}")
            if "before" in figures and "after" in figures:
                speedup = statistics.median(figures["before"]["fit_seconds"]) / m["fit_seconds"]
                print(f"fit_speedup_{res}: {speedup:.2f}")


if __name__ == "__main__":
    main()
