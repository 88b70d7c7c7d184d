"""Blender properties: the panel's settings (saved with the scene) and the runtime status
(on the window manager, never saved, so a running job never dirties the user's file)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .. import contract
from ..contract.layout import MEMORY_MODES
from ..core import presets

METHOD_ITEMS = [
    ("piva", "PIVA", "DDS plus the identity regulariser of two LoRA-tuned models (Le, Pham et al.)"),
    ("dds", "DDS", "Delta Denoising Score (Hertz et al.)"),
    ("pds", "PDS", "Posterior Distillation Sampling (Koo et al.)"),
    ("ssd", "SSD", "Stable Score Distillation (Zhu et al.)"),
    ("sds", "SDS", "Score Distillation Sampling (DreamFusion); ignores the source prompt"),
]
assert {m[0] for m in METHOD_ITEMS} == set(contract.METHODS), "the panel must offer every method"

MEMORY_ITEMS = [
    ("fast", "Fast", "SDPA attention, nothing traded: the most GPU memory"),
    ("balanced", "Balanced", "SDPA attention and VAE slicing"),
    ("low", "Low", "Attention slicing, VAE slicing and tiling, text encoder offloaded to the CPU: slower, least memory"),
]
assert tuple(m[0] for m in MEMORY_ITEMS) == MEMORY_MODES, "the panel must offer every memory mode"

FIELD_ITEMS = [
    ("rgb", "RGB", "Fit the object's colours; every edit step encodes the render with the VAE"),
    ("latent", "Latent", "Fit the diffusion model's latents (ED-NeRF): no VAE in the edit loop, faster steps"),
]
assert tuple(f[0] for f in FIELD_ITEMS) == contract.FIELDS, "the panel must offer every field"

PRESET_ITEMS = [(name, p.label, p.description) for name, p in presets.PRESETS.items() if name != "test"]


class PIVA_PG_variant(bpy.types.PropertyGroup):
    """One prompt variant: a target prompt and a seed."""

    target_prompt: StringProperty(name="Target", description="What this variant should become")
    seed: IntProperty(name="Seed", default=0, min=0)


BATCH_SOURCE_ITEMS = [
    ("SELECTED", "Selected Meshes", "Every selected mesh object"),
    ("COLLECTION", "Collection", "Every mesh of a collection (and its child collections)"),
]


class PIVA_PG_settings(bpy.types.PropertyGroup):
    """Scene.piva: what to edit and how."""

    source_prompt: StringProperty(name="Source", description="What the object is now, e.g. 'a red cube'")
    target_prompt: StringProperty(name="Target", description="What it should become, e.g. 'a blue cube'")
    negative_prompt: StringProperty(
        name="Negative prompt",
        description="What the edit should steer away from, e.g. 'blurry, low quality' (empty = none)",
    )
    method: EnumProperty(name="Method", items=METHOD_ITEMS, default="piva")
    memory: EnumProperty(name="GPU memory", items=MEMORY_ITEMS, default="balanced")
    field: EnumProperty(name="Field", items=FIELD_ITEMS, default="rgb")
    lambda_identity: FloatProperty(
        name="Identity (lambda)",
        description="PIVA's regulariser weight: higher keeps more of the original (paper: 0.4 objects, 0.2 scenes)",
        default=0.4, min=0.0, soft_max=2.0,
    )
    steps: IntProperty(name="Steps", description="Editing steps (0 = the preset's)", default=0, min=0, soft_max=20000)
    seed: IntProperty(name="Seed", default=0, min=0)
    preset: EnumProperty(name="Quality", items=PRESET_ITEMS, default="preview")
    use_cache: BoolProperty(
        name="Reuse capture and fit",
        description="Share the object's capture and fitted field between edits while its mesh, materials "
        "and quality settings stay the same (a second prompt goes straight to editing)",
        default=True,
    )
    variants: CollectionProperty(type=PIVA_PG_variant, name="Variants")
    variant_index: IntProperty(name="Active variant", default=0, min=0)
    batch_source: EnumProperty(name="Objects", items=BATCH_SOURCE_ITEMS, default="SELECTED")
    batch_collection: PointerProperty(type=bpy.types.Collection, name="Collection")
    queue_file: StringProperty(
        name="Queue", description="queue.json of this scene's latest variants or batch (to resume it)", subtype="FILE_PATH"
    )


class PIVA_PG_status(bpy.types.PropertyGroup):
    """WindowManager.piva_status: the running job, for the panel to draw."""

    running: BoolProperty(default=False)
    stage: StringProperty(default="")
    step: IntProperty(default=0)
    total: IntProperty(default=0)
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    eta_s: FloatProperty(default=-1.0)
    message: StringProperty(default="")
    error: StringProperty(default="")
    hint: StringProperty(default="")
    log_path: StringProperty(default="")
    preview_path: StringProperty(default="")
    job_dir: StringProperty(default="")
    queue_item: StringProperty(default="", description="The queue item running now, e.g. '2/3 Cube: a blue cube'")


CLASSES = (PIVA_PG_variant, PIVA_PG_settings, PIVA_PG_status)


def register_properties() -> None:
    bpy.types.Scene.piva = PointerProperty(type=PIVA_PG_settings)
    bpy.types.WindowManager.piva_status = PointerProperty(type=PIVA_PG_status)


def unregister_properties() -> None:
    del bpy.types.WindowManager.piva_status
    del bpy.types.Scene.piva
