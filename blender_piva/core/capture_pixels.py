"""Pixel conversions of the capture (numpy, no bpy): Cycles' linear passes to the files of the
capture format (docs/capture_format.md)."""

from __future__ import annotations

import numpy as np

from ..contract.capture import BACKGROUND_DEPTH, DEPTH_MAX_CODE


def srgb8_from_linear(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:  # [H,W,3], [H,W] -> [H,W,4] uint8
    """8-bit straight-alpha sRGB RGBA from Cycles' linear, premultiplied Combined pass.

    This is Blender's "Standard" view transform on the sRGB display (the piecewise sRGB curve)
    applied to un-premultiplied colour, rounded without dithering; it matches the PNG Blender
    itself writes with ``dither_intensity = 0`` exactly (see tests/blender_piva/scene/test_capture.py).
    """
    alpha = np.clip(alpha, 0.0, 1.0)
    safe = np.maximum(alpha, 1e-8)[..., None]
    # Where alpha is 0 (the denoiser may leave faint colour there) Blender keeps the colour as is.
    straight = np.where(alpha[..., None] > 0.0, rgb / safe, rgb).clip(0.0, 1.0)
    encoded = np.where(straight <= 0.0031308, 12.92 * straight, 1.055 * np.power(straight, 1.0 / 2.4) - 0.055)
    out = np.concatenate([encoded, alpha[..., None]], -1)
    return np.round(out * 255.0).astype(np.uint8)


def depth_codes_from_z(z: np.ndarray, scale: float) -> np.ndarray:  # [H, W] float -> [H, W] uint16
    """16-bit codes of a planar-depth map: ``round(z / scale)``, 0 where the centre ray missed."""
    z = np.asarray(z, np.float64)
    valid = np.isfinite(z) & (z > 0.0) & (z < BACKGROUND_DEPTH)
    codes = np.where(valid, np.round(z / scale), 0.0)
    return np.clip(codes, 0, DEPTH_MAX_CODE).astype(np.uint16)
