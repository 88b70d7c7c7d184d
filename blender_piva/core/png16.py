"""PNG writer and reader (standard library zlib + numpy), 8 and 16 bits per channel.

The capture writes its depth maps as 16-bit grayscale PNGs and its colour images as 8-bit RGBA
PNGs without Pillow (Blender's Python does not ship it). The writer emits non-interlaced
images with the "Up" filter on every row, which numpy computes in one vectorised step and which
compresses smooth depth maps well. The reader accepts any non-interlaced 8/16-bit gray, gray +
alpha, RGB or RGBA PNG (all five row filters), which covers what this writer and Pillow produce.
"""

from __future__ import annotations

import struct
import zlib
from os import PathLike
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)
_CHANNELS = {v: k for k, v in _COLOR_TYPES.items()}


class PngError(ValueError):
    """The file is not a PNG this reader understands, or the array cannot be written as one."""


def encode_png(pixels: np.ndarray, level: int = 6) -> bytes:
    """PNG bytes of ``pixels``: uint8 or uint16, [H, W] or [H, W, C] with C in 1..4, row 0 on top."""
    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise PngError(f"PNG pixels must be uint8 or uint16, got {pixels.dtype}; convert with .astype()")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in _COLOR_TYPES or 0 in pixels.shape[:2]:
        raise PngError(f"PNG pixels must be [H, W] or [H, W, 1..4] and non-empty, got shape {pixels.shape}")
    height, width, channels = pixels.shape
    bit_depth = 8 * pixels.dtype.itemsize
    rows = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder(">"))).view(np.uint8)
    rows = rows.reshape(height, width * channels * pixels.dtype.itemsize)
    # "Up" filter: each byte minus the byte above it (modulo 256); the first row sees zeros.
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2
    filtered[0, 1:] = rows[0]
    filtered[1:, 1:] = rows[1:] - rows[:-1]
    header = struct.pack(">IIBBBBB", width, height, bit_depth, _COLOR_TYPES[channels], 0, 0, 0)
    idat = zlib.compress(filtered.tobytes(), level)
    return b"".join([_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", idat), _chunk(b"IEND", b"")])


def write_png(path: str | PathLike, pixels: np.ndarray, level: int = 6) -> Path:
    """Write ``pixels`` (see :func:`encode_png`) to ``path``; returns the path."""
    path = Path(path)
    path.write_bytes(encode_png(pixels, level))
    return path


def decode_png(data: bytes) -> np.ndarray:
    """Pixels of a PNG: uint8 or uint16, [H, W] for gray images, else [H, W, C]."""
    if not data.startswith(_SIGNATURE):
        raise PngError("not a PNG file (bad signature)")
    pos = len(_SIGNATURE)
    header = None
    idat = []
    ended = False
    while pos < len(data):
        if pos + 12 > len(data):
            raise PngError(f"the file is truncated (a chunk header is cut off at byte {pos} of {len(data)})")
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        if pos + 12 + length > len(data):
            raise PngError(f"the file is truncated (its {kind.decode('latin-1')!r} chunk ends past byte {len(data)})")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if crc != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise PngError(f"the file is damaged (checksum of its {kind.decode('latin-1')!r} chunk does not match)")
        pos += 12 + length
        if kind == b"IHDR":
            if length != 13:
                raise PngError(f"the file is damaged (IHDR chunk of {length} bytes, not 13)")
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            ended = True
            break
    if header is None:
        raise PngError("PNG has no IHDR chunk")
    if not ended:
        raise PngError("the file is truncated (it has no IEND chunk)")
    width, height, bit_depth, color_type, _compression, _filter, interlace = header
    if bit_depth not in (8, 16) or color_type not in _CHANNELS:
        raise PngError(f"unsupported PNG: bit depth {bit_depth}, colour type {color_type} (need 8/16-bit, no palette)")
    if interlace:
        raise PngError("interlaced PNGs are not supported")
    channels = _CHANNELS[color_type]
    bpp = channels * bit_depth // 8
    stride = width * bpp
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    except zlib.error as exc:
        raise PngError(f"the file is damaged (its image data does not decompress: {exc})") from None
    if raw.size != height * (stride + 1):
        raise PngError(f"PNG data has {raw.size} bytes, expected {height * (stride + 1)}; the file is damaged")
    raw = raw.reshape(height, stride + 1)
    rows = np.zeros((height, stride), np.uint8)
    previous = np.zeros(stride, np.uint8)
    for y in range(height):
        rows[y] = _unfilter(raw[y, 0], raw[y, 1:], previous, bpp)
        previous = rows[y]
    dtype = np.dtype(">u2") if bit_depth == 16 else np.dtype(np.uint8)
    pixels = rows.view(dtype).astype(dtype.newbyteorder("=")).reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def read_png(path: str | PathLike) -> np.ndarray:
    """Read a PNG file (see :func:`decode_png`); a :class:`PngError` names the file."""
    try:
        return decode_png(Path(path).read_bytes())
    except PngError as exc:
        raise PngError(f"{path}: {exc}") from None


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _unfilter(kind: int, line: np.ndarray, previous: np.ndarray, bpp: int) -> np.ndarray:
    if kind == 0:
        return line
    if kind == 2:
        return line + previous
    if kind == 1:  # Sub: running sum per byte of the pixel, modulo 256 (uint8 wraps)
        return np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
    out = np.zeros(len(line), np.uint8)
    line16, prev16 = line.astype(np.int16), previous.astype(np.int16)
    left = np.zeros(bpp, np.int16)
    upleft = np.zeros(bpp, np.int16)
    for x in range(0, len(line), bpp):  # Average and Paeth depend on the pixel just decoded
        up = prev16[x : x + bpp]
        if kind == 3:
            value = line16[x : x + bpp] + (left + up) // 2
        elif kind == 4:
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
            value = line16[x : x + bpp] + pred
        else:
            raise PngError(f"unknown PNG row filter {kind}; the file is damaged")
        left = value & 0xFF
        out[x : x + bpp] = left
        upleft = up
    return out
