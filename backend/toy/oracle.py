"""The toy world's oracle: a small classifier that names the colour and the shape of a render.

Every toy benchmark judges with it (bench/toy_model.py, bench/toy_edit2d.py, bench/toy_edit.py),
so no figure rests on a hand-made heuristic. It is trained (backend/toy/oracle_train.py) on Cycles
renders of the toy world made by the project's capture code, from cameras and seeds the diffusion
model never saw, with augmentations that imitate a fitted field's renders (blur, noise, shifts).

Shipped as ``backend/models/toy_oracle/``: ``config.json`` (labels, sizes) and
``oracle.safetensors`` (weights only: loading runs no code).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_ORACLE = Path(__file__).resolve().parent.parent / "models" / "toy_oracle"
"""The shipped oracle's folder."""
WEIGHTS_FILE = "oracle.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class OracleConfig:
    """Labels and sizes of the oracle (saved next to its weights)."""

    colors: tuple[str, ...]
    """Colour labels, in the order of the colour head's outputs."""
    shapes: tuple[str, ...]
    """Shape labels, in the order of the shape head's outputs."""
    image_size: int = 64
    """Side of the square input; other sizes are resized to it (bilinear, antialiased)."""
    channels: tuple[int, ...] = (16, 32, 64, 128)
    """Channels of the convolutional levels (each halves the resolution)."""


class ToyOracle(nn.Module):
    """Colour and shape logits of renders on white: [B, 3, H, W] in [0, 1] -> ([B, C], [B, S])."""

    def __init__(self, config: OracleConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = 3
        for channels in config.channels:
            layers += [
                nn.Conv2d(width, channels, 3, padding=1),
                nn.GroupNorm(8, channels),
                nn.SiLU(),
                nn.Conv2d(channels, channels, 3, padding=1, stride=2),
                nn.GroupNorm(8, channels),
                nn.SiLU(),
            ]
            width = channels
        self.features = nn.Sequential(*layers)
        self.color_head = nn.Linear(width, len(config.colors))
        self.shape_head = nn.Linear(width, len(config.shapes))

    def forward(self, rgb: Tensor) -> tuple[Tensor, Tensor]:
        x = self.prepare(rgb) * 2.0 - 1.0
        features = self.features(x).mean(dim=(2, 3))
        return self.color_head(features), self.shape_head(features)

    def prepare(self, rgb: Tensor) -> Tensor:  # [B, 3, H, W] -> [B, 3, S, S]
        size = self.config.image_size
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"the oracle takes RGB images [B, 3, H, W] in [0, 1]; got shape {tuple(rgb.shape)}")
        if rgb.shape[-2:] != (size, size):
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return rgb.float().clamp(0.0, 1.0)

    @torch.no_grad()
    def classify(self, rgb: Tensor) -> tuple[list[str], list[str]]:
        """The colour and shape names the oracle sees in each image."""
        color_logits, shape_logits = self(rgb)
        colors = [self.config.colors[i] for i in color_logits.argmax(-1).tolist()]
        shapes = [self.config.shapes[i] for i in shape_logits.argmax(-1).tolist()]
        return colors, shapes


def save_oracle(oracle: ToyOracle, folder: Path) -> Path:
    """Write ``config.json`` and ``oracle.safetensors`` to ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in oracle.state_dict().items()}, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(oracle.config), indent=2), encoding="utf-8")
    return folder


def load_oracle(folder: Path = DEFAULT_ORACLE, *, device: torch.device | str = "cpu") -> ToyOracle:
    """The oracle saved in ``folder`` (safetensors only), in eval mode on ``device``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    weights, config_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if not weights.is_file() or not config_path.is_file():
        raise FileNotFoundError(
            f"no toy oracle in {folder} (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            f"train it with `.venv/bin/python scripts/train_toy_model.py`"
        )
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    config = OracleConfig(
        colors=tuple(raw["colors"]), shapes=tuple(raw["shapes"]), image_size=int(raw["image_size"]),
        channels=tuple(int(c) for c in raw["channels"]),
    )
    oracle = ToyOracle(config)
    oracle.load_state_dict(load_file(str(weights)))
    return oracle.to(device).eval().requires_grad_(False)
