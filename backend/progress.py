"""How a backend stage reports progress, writes previews and notices a cancel request.

Stages (reconstruct, edit, export) receive a :class:`StageReporter` and never touch the event file
or the cancel file themselves. Tests and benchmarks pass :func:`StageReporter.silent`.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from blender_piva import contract


class JobCancelled(Exception):
    """Raised by a stage after it saved a checkpoint because a cancel was requested."""

    def __init__(self, stage: str, step: int) -> None:
        super().__init__(f"{stage} cancelled at step {step}; resume by running the same job again")
        self.stage = stage
        self.step = step


@dataclass
class StageReporter:
    """Progress sink of one stage of one job."""

    stage: str
    """Stage name, one of contract.STAGES."""
    events: contract.EventWriter | None = None
    """Where events go; None = nowhere (tests, benchmarks)."""
    preview_dir: Path | None = None
    """Folder for preview PNGs; None = previews are dropped."""
    cancel_check: Callable[[], bool] = lambda: False
    """Returns True once the user asked to stop."""
    min_interval_s: float = 0.0
    """Progress events closer together than this are skipped (the last step is always sent)."""
    _last_progress: float = field(default=0.0, repr=False)

    @classmethod
    def silent(cls, stage: str) -> "StageReporter":
        return cls(stage=stage)

    def begin(self, total: int, message: str = "") -> None:
        if self.events is not None:
            self.events.emit("stage", stage=self.stage, total=int(total), message=message)

    def progress(self, step: int, total: int, losses: dict[str, float] | None = None) -> None:
        if self.events is None:
            return
        now = time.monotonic()
        if step < total and now - self._last_progress < self.min_interval_s:
            return
        self._last_progress = now
        clean = {k: float(v) for k, v in (losses or {}).items() if np.isfinite(float(v))}
        self.events.emit("progress", stage=self.stage, step=int(step), total=int(total), losses=clean)

    def log(self, message: str) -> None:
        if self.events is not None:
            self.events.emit("log", stage=self.stage, message=message)

    def preview(self, step: int, image: np.ndarray) -> Path | None:
        """Write ``image`` ([H, W, 3] float in [0, 1] or uint8) as a PNG and announce it."""
        if self.preview_dir is None:
            return None
        from PIL import Image  # local: PIL is a backend-only dependency

        if image.dtype != np.uint8:
            image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        path = Path(self.preview_dir) / f"{self.stage}_{step:06d}.png"
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        contract.write_bytes_atomic(path, buffer.getvalue())  # a full disk leaves no partial file
        if self.events is not None:
            self.events.emit("preview", stage=self.stage, step=int(step), preview=str(path))
        return path

    def should_stop(self) -> bool:
        return bool(self.cancel_check())
