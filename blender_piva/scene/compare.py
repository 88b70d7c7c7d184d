"""Before/after renders: the source and the edited object from the same held-out cameras.

Reuses the capture code (a temporary scene, the neutral light rig, the object's own materials),
so the comparison is rendered exactly like the views the backend learned from.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .. import contract
from ..core import png16


def render_views(obj, settings: contract.CaptureSettings) -> list[np.ndarray]:
    """RGB renders [H, W, 3] float in [0, 1] on white of ``obj`` from ``settings``' held-out views."""
    from .capture import capture_object

    with tempfile.TemporaryDirectory(prefix="piva-compare-") as tmp:
        transforms = capture_object(obj, settings, Path(tmp) / "views")
        import json

        frames = json.loads(transforms.read_text())["frames"]
        images = []
        for frame in frames:
            if frame.get("split") != "eval":
                continue
            rgba = png16.read_png(transforms.parent / frame["file_path"]).astype(np.float32) / 255.0
            alpha = rgba[..., 3:4]
            images.append(rgba[..., :3] * alpha + (1.0 - alpha))
        return images


def before_after(source, result, out_path: Path, *, resolution: int = 256, views: int = 4) -> Path:
    """Write one PNG: the source's views on the top row, the result's below them."""
    settings = contract.CaptureSettings(
        num_views=1, num_eval_views=views, resolution=resolution, samples=16, eval_elevation_deg=25.0
    )
    rows = [np.concatenate(render_views(obj, settings), axis=1) for obj in (source, result)]
    grid = np.concatenate(rows, axis=0)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    png16.write_png(out_path, (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return out_path


JUDGE_RESOLUTION = 64
"""Side of the views the toy oracle judges (its training size)."""


def save_judged_views(obj, folder: Path, *, views: int = 4) -> Path:
    """``obj``'s held-out views at the oracle's size (elevation 25, as its held-out set) as PNGs in ``folder``."""
    settings = contract.CaptureSettings(
        num_views=1, num_eval_views=views, resolution=JUDGE_RESOLUTION, samples=16, eval_elevation_deg=25.0
    )
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(render_views(obj, settings)):
        png16.write_png(folder / f"view_{i}.png", (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return folder
