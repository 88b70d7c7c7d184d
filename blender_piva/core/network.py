"""Whether a model choice needs the network, and the refusal when Blender's online access is off (no bpy).

Blender asks extensions to use the network only when ``bpy.app.online_access`` is True
(Preferences > System > Network > Allow Online Access). A model or ControlNet is fetched from the
Hugging Face hub when it is a hub id: anything that is not ``toy`` (the model shipped with the
project), not empty, not an existing local folder, and not written as a path.
"""

from __future__ import annotations

from pathlib import Path

OFFLINE_MESSAGE = (
    "Blender's online access is off (Preferences > System > Network); "
    "choose a local model folder or allow online access"
)
"""The refusal's teaching part, the same from the panel and the command line."""


def looks_like_path(name: str) -> bool:
    """Written as a file system path (``/x``, ``./x``, ``~/x``, ``//x`` Blender-relative,
    ``C:\\x`` or ``C:/x``): never a hub id, even when the folder does not exist."""
    return name.startswith((".", "/", "~")) or "\\" in name or ":" in name


def is_hub_id(name: str) -> bool:
    """Whether ``name`` names a model on the hub (it is downloaded when first used)."""
    name = name.strip()
    if not name or name == "toy" or looks_like_path(name):
        return False
    return not Path(name).expanduser().exists()


def needs_network(model: str, controlnet: str = "") -> bool:
    """Whether the job would download its model or ControlNet. An empty ControlNet means the
    model's own (its ``controlnet/`` folder, or the hub default of a hub model, which is then
    downloaded from the same hub as the model)."""
    return is_hub_id(model) or is_hub_id(controlnet)


def network_refusal(model: str, controlnet: str = "", online_access: bool = True) -> str | None:
    """Why the job may not start (naming the hub ids and the fix), or None when it may."""
    if online_access or not needs_network(model, controlnet):
        return None
    hub = [f"{what} {name.strip()!r}" for what, name in (("model", model), ("ControlNet", controlnet)) if is_hub_id(name)]
    return f"{' and '.join(hub)} would be downloaded from the Hugging Face hub, but {OFFLINE_MESSAGE}"
