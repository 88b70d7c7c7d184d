"""The held-out views of a job: the source as captured and the result rendered from the same cameras.

The results folder holds the exported mesh and texture only; the report and the contact sheet
compare the source with the result where both are known exactly: the capture's held-out views
(``split: eval`` frames of ``transforms.json``, rendered by Blender) and the job's final field (the
edit's, or the reconstruction's when no edit ran; the mesh is baked from it) rendered by the
backend from those very cameras, both at ``size`` pixels on the longest side. They are kept in::

    results/views/views.json     the index below (HeldoutViews), written last
    results/views/source_NN.png  the capture's view NN, composited on white
    results/views/result_NN.png  the final field from camera NN

so that the contact sheet of a queue needs neither torch nor the (cached, clearable) capture.
A capture without held-out views lends its first training views instead (``split`` says so).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from blender_piva import contract

from . import images

if TYPE_CHECKING:
    import torch

VIEWS_DIR = "views"
"""Folder of the views inside ``results/``."""
INDEX_FILE = "views.json"
"""The index inside :data:`VIEWS_DIR`."""


@dataclass
class HeldoutViews:
    """``results/views/views.json``: which PNGs show the source and the result, camera by camera."""

    source: list[str] = field(default_factory=list)
    """The capture's views, file names inside ``results/views/``; column NN of the comparison."""
    result: list[str] = field(default_factory=list)
    """The final field rendered from the same cameras, in the same order."""
    result_label: str = ""
    """Which field the result row shows: ``edit`` or ``reconstruction``."""
    cameras: list[str] = field(default_factory=list)
    """The capture image each column's camera belongs to (``images/eval_000.png`` ...)."""
    split: str = "eval"
    """``eval`` (held-out views) or ``train`` (the capture had no held-out view)."""
    size: int = 0
    """Longest side of every view, pixels."""
    contract: int = contract.CONTRACT_VERSION

    def paths(self, views_dir: Path, row: str) -> list[Path]:
        """Absolute paths of ``row`` (``source`` or ``result``)."""
        return [views_dir / name for name in getattr(self, row)]


def views_dir(results_dir: Path) -> Path:
    return Path(results_dir) / VIEWS_DIR


def load_views(results_dir: str | Path) -> HeldoutViews | None:
    """The index of ``results_dir``'s views; None when there is none, it is unreadable, or a view
    it lists is missing."""
    folder = views_dir(Path(results_dir))
    try:
        data = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(HeldoutViews)}
        views = HeldoutViews(**{k: v for k, v in data.items() if k in known})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError):
        return None
    names = [*views.source, *views.result]
    if not all(isinstance(n, str) and (folder / n).is_file() for n in names):
        return None
    return views


def final_field(spec: contract.JobSpec) -> tuple[Path, str]:
    """(folder of the job's final field, its label): the edit's when the job edits, else the fit's."""
    from ..stages.folders import FIELD_DIR

    if "edit" in spec.stages:
        return spec.job_dir / "edit" / FIELD_DIR, "edit"
    return spec.reconstruction_path / FIELD_DIR, "reconstruction"


def camera_frames(capture_dir: Path, max_views: int) -> tuple[list[dict], dict, str]:
    """Up to ``max_views`` frames to compare from (held-out first; training views without them),
    the transforms document, and which split they are. Raises ValueError when there is none."""
    meta = json.loads((capture_dir / contract.TRANSFORMS_FILE).read_text(encoding="utf-8"))
    frames = [f for f in meta.get("frames", []) if isinstance(f, dict)]
    chosen = [f for f in frames if f.get("split") == "eval"]
    split = "eval"
    if not chosen:
        chosen, split = [f for f in frames if f.get("split", "train") == "train"], "train"
    if not chosen:
        raise ValueError(f"{capture_dir / contract.TRANSFORMS_FILE} lists no frames")
    return chosen[:max_views], meta, split


def write_views(
    spec: contract.JobSpec, device: "torch.device | str" = "cpu", *, size: int = 128, max_views: int = 8
) -> HeldoutViews:
    """Render the job's final field from the capture's held-out cameras and copy the capture's
    views beside it, into ``results/views/``, at ``size`` pixels on the longest side (at most the
    capture's). Raises FileNotFoundError without a field or capture."""
    import torch
    from PIL import Image

    from ..field.ngp_field import load_field
    from ..render.rays import Intrinsics
    from ..render.volume import render_image

    frames, meta, split = camera_frames(spec.capture_path, max_views)
    field_dir, label = final_field(spec)
    field_ = load_field(field_dir, device=device)
    folder = views_dir(spec.results_path)
    views = HeldoutViews(result_label=label, split=split, size=size)
    for index, frame in enumerate(frames):
        w, h = int(frame.get("w", meta.get("w", 0))), int(frame.get("h", meta.get("h", 0)))
        s = min(size, max(w, h)) / max(w, h)  # never larger than the capture
        intr = Intrinsics(
            max(1, round(w * s)), max(1, round(h * s)),
            float(frame["fl_x"]) * s, float(frame["fl_y"]) * s, float(frame["cx"]) * s, float(frame["cy"]) * s,
        )
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float32)
        if c2w.shape == (3, 4):
            c2w = np.concatenate([c2w, np.array([[0, 0, 0, 1]], dtype=np.float32)])
        with torch.no_grad():
            rgb = render_image(field_, torch.as_tensor(c2w, device=field_.aabb.device), intr)["rgb"]
        result = (np.clip(rgb.cpu().numpy(), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        source = images.read_rgb(spec.capture_path / frame["file_path"]).resize((intr.w, intr.h))
        names = (f"source_{index:02d}.png", f"result_{index:02d}.png")
        contract.write_bytes_atomic(folder / names[0], images.png_bytes(source))
        contract.write_bytes_atomic(folder / names[1], images.png_bytes(Image.fromarray(result)))
        views.source.append(names[0])
        views.result.append(names[1])
        views.cameras.append(str(frame["file_path"]))
    contract.write_json_atomic(folder / INDEX_FILE, dataclasses.asdict(views))
    return views


def ensure_views(job_dir: str | Path, device: "torch.device | str" = "cpu", **kwargs) -> HeldoutViews:
    """The job's held-out views, rendered now when ``results/views/`` lacks them (a job run before
    reports existed). Raises ContractError for an unreadable ``job.json``, FileNotFoundError
    without a field or capture."""
    spec = contract.load_job(Path(job_dir) / contract.JOB_FILE)
    views = load_views(spec.results_path)
    return views if views is not None else write_views(spec, device, **kwargs)
