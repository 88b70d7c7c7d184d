"""The toy world: simple primitives in a few flat colours, named by prompts of one fixed form.

"a red cube", "a blue torus", ... The embedded default model is trained on Cycles captures of
these objects (scripts/train_toy_model.py), the demo edits one of them, and bench/toy_edit.py
measures every editing method on them. bpy + numpy only.
"""

from __future__ import annotations

import math

import bpy  # first: importing the bpy module makes bmesh importable
import bmesh  # noqa: E402
import numpy as np

SHAPES = ("cube", "sphere", "cylinder", "cone", "torus")
"""Primitive names, as they appear in prompts."""

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.12, 0.70, 0.15),
    "blue": (0.10, 0.22, 0.88),
    "yellow": (0.92, 0.80, 0.10),
    "cyan": (0.10, 0.72, 0.78),
    "purple": (0.55, 0.15, 0.78),
}
"""Colour name -> display (sRGB) colour of the material. Every colour stands out on the white
background the capture composites on (the first edition's "white" did not); cyan also names the
overdriven blue of a failed blue edit, so the oracle can tell the two apart."""


def prompt(color: str, shape: str) -> str:
    """The one prompt form of the toy world."""
    return f"a {color} {shape}"


def srgb_to_linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _torus(bm: bmesh.types.BMesh, major: float = 0.7, minor: float = 0.3, rings: int = 32, sides: int = 16) -> None:
    verts = []
    for i in range(rings):
        u = 2.0 * math.pi * i / rings
        for j in range(sides):
            v = 2.0 * math.pi * j / sides
            r = major + minor * math.cos(v)
            verts.append(bm.verts.new((r * math.cos(u), r * math.sin(u), minor * math.sin(v))))
    for i in range(rings):
        for j in range(sides):
            a = verts[i * sides + j]
            b = verts[((i + 1) % rings) * sides + j]
            c = verts[((i + 1) % rings) * sides + (j + 1) % sides]
            d = verts[i * sides + (j + 1) % sides]
            bm.faces.new((a, b, c, d))


def build_mesh(shape: str, name: str | None = None) -> bpy.types.Mesh:
    """A new mesh datablock of ``shape`` (about unit size, centred at the origin)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown toy shape {shape!r}; allowed: {', '.join(SHAPES)}")
    bm = bmesh.new()
    if shape == "cube":
        bmesh.ops.create_cube(bm, size=1.0)
    elif shape == "sphere":
        bmesh.ops.create_uvsphere(bm, u_segments=32, v_segments=16, radius=0.5)
    elif shape == "cylinder":
        bmesh.ops.create_cone(bm, cap_ends=True, segments=32, radius1=0.5, radius2=0.5, depth=1.0)
    elif shape == "cone":
        bmesh.ops.create_cone(bm, cap_ends=True, segments=32, radius1=0.5, radius2=0.0, depth=1.0)
    else:
        _torus(bm)
    for face in bm.faces:
        face.smooth = shape != "cube"
    mesh = bpy.data.meshes.new(name or shape)
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def build_material(color: str) -> bpy.types.Material:
    """A matte Principled material of the named colour."""
    if color not in COLORS:
        raise ValueError(f"unknown toy colour {color!r}; allowed: {', '.join(COLORS)}")
    material = bpy.data.materials.new(f"toy {color}")
    if material.node_tree is None:  # Blender < 5 creates materials without nodes (5.0 deprecates use_nodes)
        material.use_nodes = True
    bsdf = material.node_tree.nodes.get("Principled BSDF")
    linear = tuple(srgb_to_linear(c) for c in COLORS[color])
    bsdf.inputs["Base Color"].default_value = (*linear, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.9
    material.diffuse_color = (*linear, 1.0)
    return material


def add_object(
    color: str,
    shape: str,
    *,
    scene: bpy.types.Scene | None = None,
    location: tuple[float, float, float] = (0.0, 0.0, 0.0),
    name: str | None = None,
) -> bpy.types.Object:
    """Add "a COLOR SHAPE" to ``scene`` (default: the context scene) and return the object."""
    scene = scene or bpy.context.scene
    mesh = build_mesh(shape, name=name or f"{color} {shape}")
    mesh.materials.append(build_material(color))
    obj = bpy.data.objects.new(name or f"{color} {shape}", mesh)
    obj.location = location
    scene.collection.objects.link(obj)
    return obj


def remove_object(obj: bpy.types.Object) -> None:
    """Remove a toy object with its mesh and materials (used between dataset captures)."""
    mesh = obj.data
    materials = [m for m in mesh.materials if m is not None]
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(mesh)
    for material in materials:
        if material.users == 0:
            bpy.data.materials.remove(material)


def all_prompts() -> list[tuple[str, str]]:
    """Every (colour, shape) pair of the toy world."""
    return [(c, s) for s in SHAPES for c in COLORS]


def color_distance(rgb: np.ndarray, color: str) -> float:
    """Euclidean distance in sRGB between a mean colour [3] and a named toy colour."""
    return float(np.linalg.norm(np.asarray(rgb, dtype=np.float64) - np.asarray(COLORS[color])))
