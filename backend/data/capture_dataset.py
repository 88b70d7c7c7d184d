"""Load a capture folder (docs/capture_format.md) into tensors.

Everything is float32 on the CPU; the trainer moves what it needs. Per view: rgb composited on
white ([H, W, 3] in [0, 1]), alpha ([H, W]), planar depth ([H, W], 0 = background) and the camera.
Rays are built on demand from the cameras (rays.py) so that big captures stay small in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from backend.render.rays import Intrinsics, generate_rays

_FRAME_KEYS = ("file_path", "transform_matrix", "fl_x", "fl_y", "cx", "cy")


class CaptureError(ValueError):
    """The capture folder is missing or malformed; the message names the file and the fix."""


def recapture_hint(root: Path) -> str:
    """The fix for a damaged capture: it is reused while it exists (also from the cache), so delete it."""
    return f"re-run the capture: delete {root} and run the edit again"


@dataclass
class CaptureViews:
    """All views of one split, stacked."""

    rgb: Tensor
    """[V, H, W, 3] colour composited on white, in [0, 1]."""
    alpha: Tensor
    """[V, H, W] coverage of the object, in [0, 1]."""
    depth: Tensor
    """[V, H, W] planar depth in normalised units; 0 where there is no surface."""
    c2w: Tensor
    """[V, 4, 4] camera-to-world (OpenGL convention)."""
    intrinsics: list[Intrinsics] = field(default_factory=list)
    """Per-view pinhole intrinsics (the field of view varies per view)."""
    names: list[str] = field(default_factory=list)
    """Image file of each view, relative to the capture folder."""

    def __len__(self) -> int:
        return self.rgb.shape[0]

    def rays(self, index: int) -> tuple[Tensor, Tensor]:
        """(origins [H, W, 3], directions [H, W, 3]) of view ``index``; t is planar depth."""
        return generate_rays(self.c2w[index], self.intrinsics[index])

    def all_rays(self) -> tuple[Tensor, Tensor]:
        """Rays of every pixel of every view: (origins [V, H, W, 3], directions [V, H, W, 3])."""
        pairs = [self.rays(i) for i in range(len(self))]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@dataclass
class CaptureDataset:
    """A capture: training and held-out views plus the frame they live in."""

    train: CaptureViews
    """Views with ``split == "train"``."""
    eval: CaptureViews | None
    """Held-out views (``split == "eval"``); None when the capture has none."""
    aabb: Tensor
    """[2, 3] box of the object in the normalised frame."""
    background: tuple[float, float, float]
    """Colour the images were composited on (white)."""
    root: Path
    """The capture folder."""
    meta: dict
    """The whole transforms.json (normalisation matrices, capture settings...)."""


def load_capture(root: str | Path, transforms_name: str = "transforms.json") -> CaptureDataset:
    """Read ``root/transforms.json`` and every image and depth map it lists."""
    root = Path(root)
    path = root / transforms_name
    if not path.is_file():
        raise CaptureError(f"{path} does not exist: capture the object in Blender first (it writes transforms.json)")
    again = recapture_hint(root)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "it is not UTF-8 text"
        raise CaptureError(f"{path} is not valid JSON ({where}); capture the object again: {again}") from None
    except OSError as exc:
        raise CaptureError(f"{path} cannot be read ({exc.strerror or exc}); {again}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise CaptureError(f"{path} has no 'frames' list; capture the object again (docs/capture_format.md): {again}")
    scale = meta.get("depth_unit_scale_factor")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise CaptureError(f"{path}: 'depth_unit_scale_factor' must be a positive number, got {scale!r}; {again}")
    try:
        aabb = torch.tensor(meta.get("aabb", [[-1, -1, -1], [1, 1, 1]]), dtype=torch.float32)
        background = tuple(float(c) for c in meta.get("background", [1.0, 1.0, 1.0]))
    except (TypeError, ValueError, RuntimeError):
        raise CaptureError(f"{path}: 'aabb' or 'background' is not a list of numbers; {again}") from None
    if aabb.shape != (2, 3):
        raise CaptureError(f"{path}: 'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]], got {meta.get('aabb')!r}")
    if background != (1.0, 1.0, 1.0):
        raise CaptureError(f"{path}: background {background} is not supported; PIVA composites on white [1, 1, 1]")

    by_split: dict[str, list[dict]] = {"train": [], "eval": []}
    for i, frame in enumerate(meta["frames"]):
        if not isinstance(frame, dict):
            raise CaptureError(f"{path}: frames[{i}] is {type(frame).__name__}, not an object; {again}")
        missing = [k for k in _FRAME_KEYS if k not in frame]
        if missing:
            raise CaptureError(f"{path}: frames[{i}] lacks {', '.join(missing)}; capture the object again: {again}")
        _check_frame(path, i, frame, again)
        split = frame.get("split", "train")
        if split not in by_split:
            raise CaptureError(f"{path}: frames[{i}].split is {split!r} (allowed: train, eval)")
        by_split[split].append(frame)
    if not by_split["train"]:
        raise CaptureError(f"{path} has no frame with split 'train'; capture with num_views >= 1")
    train = _load_views(root, path, by_split["train"], meta, float(scale))
    evals = _load_views(root, path, by_split["eval"], meta, float(scale)) if by_split["eval"] else None
    return CaptureDataset(train=train, eval=evals, aabb=aabb, background=background, root=root, meta=meta)


def _check_frame(path: Path, index: int, frame: dict, again: str) -> None:
    """The frame's numbers are numbers and its file names are text (before any image is read)."""
    for key in ("file_path", "depth_file_path"):
        if key in frame and not isinstance(frame[key], str):
            raise CaptureError(f"{path}: frames[{index}].{key} is {frame[key]!r}, not a file name; {again}")
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
        value = frame.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise CaptureError(f"{path}: frames[{index}].{key} is {value!r}, not a number; {again}")
    try:
        matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        matrix = np.zeros(0)
    if matrix.shape not in ((4, 4), (3, 4)) or not np.isfinite(matrix).all():
        raise CaptureError(f"{path}: frames[{index}].transform_matrix is not a 4x4 matrix of numbers; {again}")


def _read_image(image_path: Path, path: Path, root: Path, mode: str | None) -> np.ndarray:
    """The pixels of a capture image (``mode``: Pillow mode to convert to; None = as stored)."""
    from PIL import Image

    if not image_path.is_file():
        raise CaptureError(
            f"{image_path} (listed in {path.name}) is missing; capture the object again: {recapture_hint(root)}"
        )
    try:
        with Image.open(image_path) as im:
            return np.asarray(im.convert(mode) if mode else im, dtype=np.float32)
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's ways of saying "truncated" or "not an image"
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise CaptureError(
            f"{image_path} (listed in {path.name}) cannot be read as a PNG ({problem}): it is damaged or "
            f"truncated; {recapture_hint(root)}"
        ) from None


def _load_views(root: Path, path: Path, frames: list[dict], meta: dict, scale: float) -> CaptureViews:
    rgbs, alphas, depths, c2ws, intrs, names = [], [], [], [], [], []
    for frame in frames:
        name = frame["file_path"]
        img_path = root / name
        rgba = _read_image(img_path, path, root, "RGBA") / 255.0  # [H, W, 4]
        h, w = rgba.shape[:2]
        fw, fh = int(frame.get("w", meta.get("w", w))), int(frame.get("h", meta.get("h", h)))
        if (fw, fh) != (w, h):
            raise CaptureError(f"{img_path} is {w}x{h} but {path.name} says {fw}x{fh}; {recapture_hint(root)}")
        if rgbs and rgba.shape[:2] != rgbs[0].shape[:2]:
            raise CaptureError(f"{img_path} is {w}x{h}, unlike the other views of its split; all must share one size")
        alpha = rgba[..., 3]
        # The PNG stores straight (non-premultiplied) colour: composite on white as the doc says.
        rgb = rgba[..., :3] * alpha[..., None] + (1.0 - alpha[..., None])
        depth = np.zeros((h, w), dtype=np.float32)
        dname = frame.get("depth_file_path")
        if dname:
            dpath = root / dname
            raw = _read_image(dpath, path, root, None)
            if raw.shape != (h, w):
                raise CaptureError(
                    f"{dpath} has shape {raw.shape}, expected a 16-bit grayscale {w}x{h} PNG; {recapture_hint(root)}"
                )
            depth = raw * scale
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float32)
        if c2w.shape == (3, 4):
            c2w = np.concatenate([c2w, [[0, 0, 0, 1]]], axis=0).astype(np.float32)
        if c2w.shape != (4, 4):
            raise CaptureError(f"{path.name}: transform_matrix of {name} must be 4x4, got shape {c2w.shape}")
        rgbs.append(rgb)
        alphas.append(alpha)
        depths.append(depth)
        c2ws.append(c2w)
        intrs.append(Intrinsics(w, h, float(frame["fl_x"]), float(frame["fl_y"]), float(frame["cx"]), float(frame["cy"])))
        names.append(name)
    return CaptureViews(
        rgb=torch.from_numpy(np.stack(rgbs)),
        alpha=torch.from_numpy(np.stack(alphas)),
        depth=torch.from_numpy(np.stack(depths)),
        c2w=torch.from_numpy(np.stack(c2ws)),
        intrinsics=intrs,
        names=names,
    )
