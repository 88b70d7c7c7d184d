"""Models known to work with PIVA, offered in the add-on preferences (no bpy, no backend import).

The extension never imports the backend, so the hub ids are written here again; a test checks
they match the backend's own (``backend/diffusion/hub.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    """One choice of the preferences' model menu."""

    key: str
    """Identifier of the menu item."""
    label: str
    """What the menu shows."""
    model: str
    """Fills the Model preference: a hub id, or ``toy``."""
    controlnet: str
    """Fills the Depth ControlNet preference (empty = the model's own)."""
    description: str
    """The menu item's tooltip."""


KNOWN_MODELS: dict[str, KnownModel] = {
    m.key: m
    for m in (
        KnownModel(
            key="toy",
            label="Toy (shipped, offline)",
            model="toy",
            controlnet="",
            description="The small model shipped with the project (64x64, colours and simple shapes): "
            "runs on the CPU in minutes, no download",
        ),
        KnownModel(
            key="sd21_base",
            label="Stable Diffusion 2.1 base + depth ControlNet",
            model="stabilityai/stable-diffusion-2-1-base",
            controlnet="thibaud/controlnet-sd21-depth-diffusers",
            description="The paper's model (512x512) with its depth ControlNet; downloaded from the Hugging Face "
            "hub on first use (needs online access, about 6 GB); a GPU is strongly advised",
        ),
    )
}
"""Menu key -> the model and ControlNet it fills in, in menu order."""


def known_model_of(model: str, controlnet: str) -> str:
    """The key of the known model these preferences name, or "" when they name another."""
    for m in KNOWN_MODELS.values():
        if m.model == model.strip() and m.controlnet == controlnet.strip():
            return m.key
    return ""
