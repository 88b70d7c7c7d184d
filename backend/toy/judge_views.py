"""Judge rendered views of a result against the source's, as the main job reports them.

    python -m backend judge RESULT_DIR SOURCE_DIR --color blue --shape cube [--json]

RESULT_DIR and SOURCE_DIR hold the same held-out views (PNG, RGB on white, same names, the
oracle's 64x64 size or any size: they are resized). Prints the fraction of result views the
oracle (backend/models/toy_oracle) classifies as the target colour AND shape
(``oracle_agree``), what it saw per view, and the speckle ratio of backend/toy/judge.py (local
roughness of the result's foreground over the source's; 1 = as smooth as the source).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .judge import local_roughness, white_distance_mask
from .oracle import DEFAULT_ORACLE, ToyOracle, load_oracle


class ViewsError(ValueError):
    """The view folders cannot be judged; the message says what to fix."""


@dataclass
class ViewsVerdict:
    agree: float
    """Fraction of result views classified as the target colour and shape."""
    speckle_ratio: float
    """Foreground roughness of the result over the source's (1 = as smooth)."""
    seen: list[str]
    """What the oracle saw in each result view ("colour shape")."""


def load_views(folder: Path, size: int) -> tuple[list[str], torch.Tensor]:  # -> names, [V, 3, size, size]
    from PIL import Image

    files = sorted(Path(folder).glob("*.png"))
    if not files:
        raise ViewsError(f"{folder} holds no PNG views; render the held-out views there first")
    images = []
    for f in files:
        rgb = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(rgb).permute(2, 0, 1))
    batch = torch.stack(images)
    if batch.shape[-1] != size or batch.shape[-2] != size:
        batch = F.interpolate(batch, size=(size, size), mode="area")
    return [f.name for f in files], batch


def judge_views(result_dir: Path, source_dir: Path, color: str, shape: str, oracle: ToyOracle) -> ViewsVerdict:
    size = oracle.config.image_size
    names, result = load_views(result_dir, size)
    source_names, source = load_views(source_dir, size)
    if names != source_names:
        raise ViewsError(f"{result_dir} and {source_dir} must hold the same view names; got {names} and {source_names}")
    if color not in oracle.config.colors or shape not in oracle.config.shapes:
        raise ViewsError(f"the oracle knows colours {', '.join(oracle.config.colors)} and shapes "
                         f"{', '.join(oracle.config.shapes)}; got {color!r} {shape!r}")
    with torch.no_grad():
        colors, shapes = oracle.classify(result)
    agree = sum(c == color and s == shape for c, s in zip(colors, shapes)) / len(names)
    base = local_roughness(source, white_distance_mask(source))
    rough = local_roughness(result, white_distance_mask(result))
    ratio = rough / base if base > 0 else float("nan")
    return ViewsVerdict(agree, ratio, [f"{c} {s}" for c, s in zip(colors, shapes)])


def main_judge(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend judge", description=__doc__.split("\n")[0])
    parser.add_argument("result", type=Path, help="folder of the result's view PNGs")
    parser.add_argument("source", type=Path, help="folder of the source's view PNGs (same names)")
    parser.add_argument("--color", required=True, help="the target colour")
    parser.add_argument("--shape", required=True, help="the target shape")
    parser.add_argument("--oracle", type=Path, default=DEFAULT_ORACLE, help="oracle folder (default: the shipped one)")
    parser.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    args = parser.parse_args(argv)
    try:
        verdict = judge_views(args.result, args.source, args.color, args.shape, load_oracle(args.oracle))
    except ViewsError as exc:
        print(f"judge: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(verdict)))
    else:
        print(f"oracle_agree: {verdict.agree:.2f}")
        print(f"speckle_ratio: {verdict.speckle_ratio:.2f}")
        print(f"oracle_saw: {', '.join(verdict.seen)}")
    return 0
