"""A minimal OpenEXR reader (numpy only) for the files the capture asks Cycles to write.

Why not ``bpy.data.images.load``: an image datablock exposes one pass of a multilayer file at a
time and costs a datablock per view; why not OpenImageIO: it is not importable from every
Blender build. The capture controls the writer settings, so only the simple case is needed:

* scanline images (single-part or multipart, as Blender 5 writes multilayer files: one part per
  pass, e.g. ``ViewLayer.Depth``),
* no compression (``exr_codec = 'NONE'``),
* HALF or FLOAT channels, no subsampling.

Anything else raises :class:`ExrError` that says which writer setting to change.
"""

from __future__ import annotations

import struct
from os import PathLike
from pathlib import Path

import numpy as np

_MAGIC = 20000630
_MULTIPART = 0x1000
_TILED = 0x200
_NON_IMAGE = 0x800
_PIXEL_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}  # UINT, HALF, FLOAT
_COMPRESSION_NONE = 0


class ExrError(ValueError):
    """The file is not an EXR this reader understands."""


def read_exr(path: str | PathLike) -> dict[str, np.ndarray]:
    """Read every channel of an uncompressed scanline EXR.

    Returns ``{full channel name: float32 array [H, W]}``, row 0 at the top of the image (EXR's
    own order). In multipart files the channel names already carry the layer and pass
    (``ViewLayer.Depth.Z``); a part's ``name`` is not prefixed again. A truncated or damaged
    file is an :class:`ExrError` naming it.
    """
    data = Path(path).read_bytes()
    try:
        return _read_exr(data, path)
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, ExrError):
            raise
        raise ExrError(f"{path}: the file is truncated or damaged ({exc})") from None


def _read_exr(data: bytes, path: str | PathLike) -> dict[str, np.ndarray]:
    if len(data) < 8:
        raise ExrError(f"{path}: file is too short to be an EXR")
    magic, version = struct.unpack_from("<ii", data, 0)
    if magic != _MAGIC:
        raise ExrError(f"{path}: not an OpenEXR file (bad magic number)")
    if version & (_TILED | _NON_IMAGE):
        raise ExrError(f"{path}: tiled or deep EXR files are not supported; write scanline images")
    multipart = bool(version & _MULTIPART)

    pos = 8
    headers: list[dict[str, tuple[str, bytes]]] = []
    while True:
        header, pos = _read_header(data, pos, path)
        headers.append(header)
        if not multipart or data[pos] == 0:
            break
    if multipart:
        pos += 1  # the empty header that ends the list

    parts = [_part_layout(h, path) for h in headers]
    for part in parts:  # skip the offset tables: chunks carry their own part number and y
        pos += 8 * part["chunks"]

    out: dict[str, np.ndarray] = {}
    for part in parts:
        for name, _dtype in part["channels"]:
            out[name] = np.zeros((part["height"], part["width"]), np.float32)

    total = sum(p["chunks"] for p in parts)
    for _ in range(total):
        index = 0
        if multipart:
            (index,) = struct.unpack_from("<i", data, pos)
            pos += 4
        y, size = struct.unpack_from("<ii", data, pos)
        pos += 8
        part = parts[index]
        row = y - part["y0"]
        width = part["width"]
        cursor = pos
        for name, dtype in part["channels"]:  # channels are stored in chlist (alphabetical) order
            nbytes = width * dtype.itemsize
            out[name][row] = np.frombuffer(data, dtype, width, cursor)
            cursor += nbytes
        if cursor - pos != size:
            raise ExrError(f"{path}: scanline {y} has {size} bytes, expected {cursor - pos}; file is damaged")
        pos += size
    return out


def _read_header(data: bytes, pos: int, path: object) -> tuple[dict[str, tuple[str, bytes]], int]:
    header: dict[str, tuple[str, bytes]] = {}
    while data[pos] != 0:
        name, pos = _cstring(data, pos)
        kind, pos = _cstring(data, pos)
        (size,) = struct.unpack_from("<i", data, pos)
        pos += 4
        header[name] = (kind, data[pos : pos + size])
        pos += size
    return header, pos + 1


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("utf-8"), end + 1


def _part_layout(header: dict[str, tuple[str, bytes]], path: object) -> dict:
    try:
        compression = header["compression"][1][0]
        x0, y0, x1, y1 = struct.unpack("<iiii", header["dataWindow"][1])
        raw_channels = header["channels"][1]
    except KeyError as exc:
        raise ExrError(f"{path}: header lacks the required attribute {exc.args[0]!r}") from None
    if compression != _COMPRESSION_NONE:
        raise ExrError(
            f"{path}: compression {compression} is not supported; write with image_settings.exr_codec = 'NONE'"
        )
    channels = []
    pos = 0
    while raw_channels[pos] != 0:
        name, pos = _cstring(raw_channels, pos)
        pixel_type, _linear, xs, ys = struct.unpack_from("<iB3xii", raw_channels, pos)
        pos += 16
        if (xs, ys) != (1, 1):
            raise ExrError(f"{path}: channel {name!r} is subsampled, which is not supported")
        if pixel_type not in _PIXEL_TYPES:
            raise ExrError(f"{path}: channel {name!r} has unknown pixel type {pixel_type}")
        channels.append((name, _PIXEL_TYPES[pixel_type]))
    height = y1 - y0 + 1
    chunks = struct.unpack("<i", header["chunkCount"][1])[0] if "chunkCount" in header else height
    return {"channels": channels, "width": x1 - x0 + 1, "height": height, "y0": y0, "chunks": chunks}
