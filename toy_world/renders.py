"""Labelled captures of every toy object, rendered by the project's own capture code (bpy).

One folder per (colour, shape) under a root, each a normal capture (``transforms.json``, RGBA
and depth PNGs) plus ``prompt.json`` (``prompt``, ``color``, ``shape``). The diffusion model, the
oracle's training set and the oracle's held-out set use disjoint capture seeds (and the held-out
set other evaluation cameras), so no figure is measured on views a model was trained on.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import bpy

from blender_piva import contract
from blender_piva.scene.capture import capture_object

from . import add_object, all_prompts, prompt


@dataclass(frozen=True)
class RenderSet:
    """Which views of every toy object a set holds."""

    views: int
    """Random training-distribution views per object (the capture's ``num_views``)."""
    eval_views: int
    """Evaluation-ring views per object (``num_eval_views``)."""
    seed_base: int
    """Capture seed of the first object; object i uses ``seed_base + i``."""
    eval_elevation_deg: float = 15.0
    """Elevation of the evaluation ring."""
    resolution: int = 64
    """Side of every image."""


DIFFUSION_TRAIN = RenderSet(views=160, eval_views=0, seed_base=1000)
"""The diffusion model's training data."""
ORACLE_TRAIN = RenderSet(views=48, eval_views=8, seed_base=5000)
"""The oracle's training data."""
ORACLE_HELD_OUT = RenderSet(views=24, eval_views=8, seed_base=9000, eval_elevation_deg=25.0)
"""The oracle's held-out test set (bench/toy_model.py)."""


def render_set(root: Path, render: RenderSet, log=print) -> Path:
    """Render ``render`` under ``root`` (one folder per object); folders already complete are kept."""
    root = Path(root)
    for index, (color, shape) in enumerate(all_prompts()):
        folder = root / f"{color}_{shape}"
        if (folder / "transforms.json").is_file() and (folder / "prompt.json").is_file():
            continue
        bpy.ops.wm.read_factory_settings(use_empty=True)
        obj = add_object(color, shape)
        settings = contract.CaptureSettings(
            num_views=render.views,
            num_eval_views=render.eval_views,
            resolution=render.resolution,
            samples=8,
            denoise=True,
            eval_elevation_deg=render.eval_elevation_deg,
            seed=render.seed_base + index,
        )
        if folder.exists():
            shutil.rmtree(folder)
        capture_object(obj, settings, folder)
        contract.write_json_atomic(folder / "prompt.json", {"prompt": prompt(color, shape), "color": color, "shape": shape})
        log(f"rendered {prompt(color, shape)} ({render.views} + {render.eval_views} views) in {root.name}")
    return root


BENCHMARK = RenderSet(views=30, eval_views=4, seed_base=20000)
"""The toy benchmarks' sources: 30 views to fit (3D) and the 4 judged held-out views (2D and 3D)."""
