"""A minimal glTF 2.0 binary (GLB) writer and strict reader for one textured triangle mesh.

Layout: 12-byte header, a JSON chunk, a BIN chunk holding POSITION, NORMAL, TEXCOORD_0 (float32),
indices (uint32) and the PNG of the base-colour texture, each bufferView 4-byte aligned.

Axes: the arrays passed in and returned are in Blender's convention (+Z up). glTF is +Y up, so the
file stores ``(x, z, -y)``; Blender's own glTF importer applies the inverse, and so does
``read_glb``. UVs use glTF's convention (origin at the image's top-left corner).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A  # "JSON"
CHUNK_BIN = 0x004E4942  # "BIN\0"
FLOAT, UINT32, UINT16, UINT8 = 5126, 5125, 5123, 5121
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}
_DTYPES = {FLOAT: np.float32, UINT32: np.uint32, UINT16: np.uint16, UINT8: np.uint8}

# Blender (+Z up) -> glTF (+Y up) and back; both are rotations, so normals map the same way.
Z_UP_TO_Y_UP = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float32)


class GlbError(ValueError):
    """The bytes are not a GLB this module can read."""


@dataclass
class TexturedMesh:
    """One mesh with one base-colour texture, Blender axes (+Z up), glTF UVs (v down)."""

    positions: np.ndarray  # [V, 3] float32
    normals: np.ndarray  # [V, 3] float32
    uvs: np.ndarray  # [V, 2] float32
    faces: np.ndarray  # [F, 3] int64, counter-clockwise seen from outside
    texture_png: bytes
    name: str = "piva_result"


def write_glb(mesh: TexturedMesh, generator: str = "PIVA for Blender") -> bytes:
    """Encode ``mesh`` as a self-contained GLB (the texture is embedded)."""
    n = len(mesh.positions)
    if mesh.positions.shape != (n, 3) or mesh.normals.shape != (n, 3) or mesh.uvs.shape != (n, 2):
        raise ValueError(
            f"positions [V, 3], normals [V, 3] and uvs [V, 2] must agree, got {mesh.positions.shape}, "
            f"{mesh.normals.shape}, {mesh.uvs.shape}"
        )
    if mesh.faces.ndim != 2 or mesh.faces.shape[1] != 3 or len(mesh.faces) == 0:
        raise ValueError(f"faces must be a non-empty [F, 3] array, got shape {mesh.faces.shape}")
    if mesh.faces.min() < 0 or mesh.faces.max() >= n:
        raise ValueError(f"face indices must lie in [0, {n}), got [{mesh.faces.min()}, {mesh.faces.max()}]")
    if not mesh.texture_png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("texture_png must hold PNG bytes")
    positions = (mesh.positions.astype(np.float32) @ Z_UP_TO_Y_UP.T).astype(np.float32)
    normals = (mesh.normals.astype(np.float32) @ Z_UP_TO_Y_UP.T).astype(np.float32)
    blobs = [
        positions.tobytes(),
        normals.tobytes(),
        mesh.uvs.astype(np.float32).tobytes(),
        mesh.faces.astype(np.uint32).tobytes(),
        mesh.texture_png,
    ]
    views, offset = [], 0
    targets = [ARRAY_BUFFER, ARRAY_BUFFER, ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, None]
    for blob, target in zip(blobs, targets):
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(blob)}
        if target is not None:
            view["target"] = target
        views.append(view)
        offset += _pad4(len(blob))
    binary = b"".join(blob + b"\x00" * (_pad4(len(blob)) - len(blob)) for blob in blobs)
    doc = {
        "asset": {"version": "2.0", "generator": generator},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": mesh.name}],
        "meshes": [
            {
                "name": mesh.name,
                "primitives": [
                    {
                        "attributes": {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 2},
                        "indices": 3,
                        "material": 0,
                        "mode": 4,
                    }
                ],
            }
        ],
        "materials": [
            {
                "name": mesh.name,
                # Lighting is baked into the colour: a rough dielectric shows it as captured.
                "pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 1.0},
            }
        ],
        "textures": [{"sampler": 0, "source": 0}],
        "samplers": [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}],
        "images": [{"bufferView": 4, "mimeType": "image/png", "name": "texture"}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": FLOAT,
                "count": n,
                "type": "VEC3",
                "min": positions.min(axis=0).tolist(),
                "max": positions.max(axis=0).tolist(),
            },
            {"bufferView": 1, "componentType": FLOAT, "count": n, "type": "VEC3"},
            {"bufferView": 2, "componentType": FLOAT, "count": n, "type": "VEC2"},
            {"bufferView": 3, "componentType": UINT32, "count": int(mesh.faces.size), "type": "SCALAR"},
        ],
        "bufferViews": views,
        "buffers": [{"byteLength": len(binary)}],
    }
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (_pad4(len(text)) - len(text))
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join(
        [
            struct.pack("<III", GLB_MAGIC, 2, total),
            struct.pack("<II", len(text), CHUNK_JSON),
            text,
            struct.pack("<II", len(binary), CHUNK_BIN),
            binary,
        ]
    )


def read_glb(data: bytes) -> TexturedMesh:
    """Decode a GLB written by :func:`write_glb`, checking every structure it relies on."""
    doc, binary = split_glb(data)
    try:
        prim = doc["meshes"][0]["primitives"][0]
        attrs = prim["attributes"]
        if prim.get("mode", 4) != 4:
            raise GlbError(f"primitive mode {prim['mode']} is not triangles (4)")
        positions = _accessor(doc, binary, attrs["POSITION"], "VEC3")
        normals = _accessor(doc, binary, attrs["NORMAL"], "VEC3")
        uvs = _accessor(doc, binary, attrs["TEXCOORD_0"], "VEC2")
        indices = _accessor(doc, binary, prim["indices"], "SCALAR").astype(np.int64)
        material = doc["materials"][prim["material"]]
        texture = doc["textures"][material["pbrMetallicRoughness"]["baseColorTexture"]["index"]]
        image = doc["images"][texture["source"]]
        png = _view_bytes(doc, binary, image["bufferView"])
        name = doc["meshes"][0].get("name", "mesh")
    except (KeyError, IndexError, TypeError) as exc:
        raise GlbError(f"the GLB lacks an entry a textured mesh needs ({type(exc).__name__}: {exc})") from None
    if len(indices) % 3 or (len(indices) and (indices.min() < 0 or indices.max() >= len(positions))):
        raise GlbError(f"{len(indices)} indices are not whole triangles over {len(positions)} vertices")
    if not (len(positions) == len(normals) == len(uvs)):
        raise GlbError(f"attribute counts differ: {len(positions)} positions, {len(normals)} normals, {len(uvs)} uvs")
    if image.get("mimeType") != "image/png" or not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise GlbError("the base-colour texture is not an embedded PNG")
    to_z_up = Z_UP_TO_Y_UP  # (x, z, -y) -> (x, y, z) is the transpose
    return TexturedMesh(
        positions=(positions @ to_z_up).astype(np.float32),
        normals=(normals @ to_z_up).astype(np.float32),
        uvs=uvs.astype(np.float32),
        faces=indices.reshape(-1, 3),
        texture_png=png,
        name=name,
    )


def split_glb(data: bytes) -> tuple[dict, bytes]:
    """Check the header and the two chunks; return the JSON document and the BIN chunk."""
    if len(data) < 28:
        raise GlbError(f"{len(data)} bytes is too short for a GLB (header and two chunk headers need 28)")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2:
        raise GlbError(f"not a glTF 2.0 binary (magic {magic:#x}, version {version})")
    if length != len(data):
        raise GlbError(f"the header says {length} bytes, the file has {len(data)}: it is truncated or padded")
    json_len, json_type = struct.unpack_from("<II", data, 12)
    if json_type != CHUNK_JSON or json_len % 4 or 20 + json_len > len(data):
        raise GlbError("the first chunk is not a 4-byte aligned JSON chunk")
    try:
        doc = json.loads(data[20 : 20 + json_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GlbError(f"the JSON chunk is malformed: {exc}") from None
    if doc.get("asset", {}).get("version") != "2.0":
        raise GlbError(f"asset.version is {doc.get('asset', {}).get('version')!r}, expected '2.0'")
    at = 20 + json_len
    if at + 8 > len(data):
        raise GlbError("the BIN chunk is missing")
    bin_len, bin_type = struct.unpack_from("<II", data, at)
    if bin_type != CHUNK_BIN or bin_len % 4 or at + 8 + bin_len != len(data):
        raise GlbError("the second chunk is not a 4-byte aligned BIN chunk ending the file")
    binary = data[at + 8 : at + 8 + bin_len]
    if doc.get("buffers", [{}])[0].get("byteLength", -1) > len(binary):
        raise GlbError("buffers[0].byteLength exceeds the BIN chunk")
    return doc, binary


def _view_bytes(doc: dict, binary: bytes, index: int) -> bytes:
    view = doc["bufferViews"][index]
    start = view.get("byteOffset", 0)
    end = start + view["byteLength"]
    if view.get("buffer", 0) != 0 or end > len(binary):
        raise GlbError(f"bufferView {index} reaches byte {end}, past the {len(binary)}-byte BIN chunk")
    return binary[start:end]


def _accessor(doc: dict, binary: bytes, index: int, kind: str) -> np.ndarray:
    acc = doc["accessors"][index]
    if acc["type"] != kind or acc["componentType"] not in _DTYPES:
        raise GlbError(f"accessor {index} is {acc['type']}/{acc['componentType']}, expected {kind}")
    view = doc["bufferViews"][acc["bufferView"]]
    if view.get("byteStride") not in (None, 0):
        raise GlbError(f"accessor {index} uses an interleaved bufferView, which this reader does not read")
    dtype = np.dtype(_DTYPES[acc["componentType"]])
    comps = _COMPONENTS[kind]
    raw = _view_bytes(doc, binary, acc["bufferView"])
    start = acc.get("byteOffset", 0)
    need = start + acc["count"] * comps * dtype.itemsize
    if need > len(raw):
        raise GlbError(f"accessor {index} needs {need} bytes, its bufferView has {len(raw)}")
    values = np.frombuffer(raw, dtype=dtype, count=acc["count"] * comps, offset=start)
    return values.reshape(acc["count"], comps) if comps > 1 else values


def _pad4(n: int) -> int:
    return (n + 3) & ~3
