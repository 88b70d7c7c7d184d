"""The PNG writer/reader against Pillow (the backend reads the capture's PNGs with Pillow)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from blender_piva.core.png16 import PngError, decode_png, encode_png, read_png, write_png


def _smooth_depth(h: int = 37, w: int = 53) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    depth = (30000 + 400 * x + 900 * y + 7 * x * y).astype(np.uint16)
    depth[:5, :7] = 0  # background
    depth[-1, -1] = 65535  # full range
    return depth


def test_uint16_gray_round_trip_and_pillow_reads_it(tmp_path):
    depth = _smooth_depth()
    path = write_png(tmp_path / "d.png", depth)
    assert np.array_equal(read_png(path), depth)
    with Image.open(path) as im:
        assert im.size == (53, 37)
        from_pil = np.array(im)
    assert from_pil.dtype.kind in "iu"
    assert np.array_equal(from_pil.astype(np.int64), depth.astype(np.int64))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_uint8_round_trip_and_pillow_reads_it(tmp_path, channels):
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 256, (19, 23, channels), dtype=np.uint8)
    path = write_png(tmp_path / "c.png", pixels)
    expected = pixels[:, :, 0] if channels == 1 else pixels
    assert np.array_equal(read_png(path), expected)
    with Image.open(path) as im:
        assert im.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        assert np.array_equal(np.array(im), expected)


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "I;16"])
def test_reads_pillow_files_with_all_row_filters(tmp_path, mode):
    # Pillow picks filters adaptively (Sub, Up, Average, Paeth) for images with structure.
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:41, 0:47]
    if mode == "I;16":
        noisy = _smooth_depth(41, 47).astype(np.int64) + rng.integers(0, 50, (41, 47))
        pixels = noisy.clip(0, 65535).astype(np.uint16)
        image = Image.fromarray(pixels)
    else:
        base = (3 * x + 5 * y + rng.integers(0, 20, x.shape)) % 256
        channels = {"RGBA": 4, "RGB": 3, "L": 1}[mode]
        pixels = np.stack([(base + 40 * c) % 256 for c in range(channels)], -1).astype(np.uint8)
        pixels = pixels[:, :, 0] if channels == 1 else pixels
        image = Image.fromarray(pixels)
    path = tmp_path / "pil.png"
    image.save(path, optimize=False)
    assert np.array_equal(read_png(path), pixels)


def test_rejects_wrong_dtype_and_shape():
    with pytest.raises(PngError, match="uint8 or uint16"):
        encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(PngError, match="shape"):
        encode_png(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(PngError, match="signature"):
        decode_png(b"not a png")


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:-12], "truncated (it has no IEND chunk)"),
        (lambda data: data[:50] + bytes([data[50] ^ 0xFF]) + data[51:], "damaged (checksum"),
    ],
)
def test_damaged_file_is_named_with_what_is_wrong(tmp_path, damage, problem):
    path = write_png(tmp_path / "depth.png", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(PngError) as info:
        read_png(path)
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value)
