"""Quality presets: named bundles of capture, reconstruction, edit and export settings (no bpy).

``preview`` is for trying a prompt (minutes on a CPU), ``final`` follows the PIVA paper as far as a
single machine allows (a GPU is expected). ``test`` is the tiny configuration the test suite uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import contract


@dataclass(frozen=True)
class Preset:
    """Settings blocks of one quality level."""

    label: str
    """Shown in the panel."""
    description: str
    """Tooltip."""
    capture: contract.CaptureSettings
    reconstruct: contract.ReconstructSettings
    edit: contract.EditSettings
    export: contract.ExportSettings


PRESETS: dict[str, Preset] = {
    "preview": Preset(
        label="Preview",
        description="Fast: 40 views at 128 px, a short fit and edit, 128^3 mesh (minutes on a CPU)",
        capture=contract.CaptureSettings(num_views=40, num_eval_views=4, resolution=128, samples=8),
        # 600 steps of 1024 rays: the fit length bench/reconstruct.py supports at 128 px (docs/RESULTS.md)
        reconstruct=contract.ReconstructSettings(steps=600, rays_per_batch=1024, samples_per_ray=64),
        edit=contract.EditSettings(steps=300, render_resolution=64),
        export=contract.ExportSettings(grid_resolution=128, face_budget=10000, texture_size=512),
    ),
    "final": Preset(
        label="Final",
        description="Paper settings: 100 views at 512 px, long fit and edit at 512 px, 256^3 mesh (GPU)",
        capture=contract.CaptureSettings(num_views=100, num_eval_views=8, resolution=512, samples=16),
        reconstruct=contract.ReconstructSettings(steps=10000, rays_per_batch=8192, samples_per_ray=96),
        edit=contract.EditSettings(steps=10000, render_resolution=512),
        export=contract.ExportSettings(grid_resolution=256, face_budget=20000, texture_size=1024),
    ),
    "test": Preset(
        label="Test",
        description="Tiny settings for automated tests",
        capture=contract.CaptureSettings(num_views=6, num_eval_views=2, resolution=32, samples=4, denoise=False),
        reconstruct=contract.ReconstructSettings(
            steps=30, rays_per_batch=256, samples_per_ray=24, checkpoint_every=10, preview_every=15
        ),
        edit=contract.EditSettings(steps=4, render_resolution=32, checkpoint_every=2, preview_every=2),
        export=contract.ExportSettings(grid_resolution=32, face_budget=2000, texture_size=64),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise contract.ContractError("preset", f"unknown preset {name!r}", ", ".join(PRESETS)) from None


def fresh_blocks(name: str) -> dict:
    """Deep copies of a preset's settings blocks, safe to modify."""
    preset = get_preset(name)
    return {
        "capture": dataclasses.replace(preset.capture),
        "reconstruct": dataclasses.replace(preset.reconstruct),
        "edit": dataclasses.replace(preset.edit, method_params=dict(preset.edit.method_params)),
        "export": dataclasses.replace(preset.export),
    }
