"""De-lighting: the capture's diffuse shading divided out of the baked colours."""

from __future__ import annotations

import math

import numpy as np

from backend.export.delight import (
    delight_colors,
    diffuse_shading,
    linear_to_srgb,
    srgb_to_linear,
    sun_disc_directions,
)
from blender_piva.contract.capture import LightRig

RIG = LightRig(world_strength=0.8, world_color=(1.0, 1.0, 1.0), sun_direction=(0.0, 0.0, 1.0),
               sun_strength=0.2 * math.pi, sun_angle_deg=30.0)


def test_sun_disc_directions_are_unit_and_inside_the_disc():
    d = sun_disc_directions(RIG)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    angle = np.degrees(np.arccos(np.clip(d @ np.array([0.0, 0.0, 1.0]), -1, 1)))
    assert angle.max() <= 15.0 and angle.max() > 10.0
    mean = d.mean(axis=0)
    np.testing.assert_allclose(mean[:2], 0.0, atol=1e-9)  # symmetric about the sun's centre


def test_shading_is_world_plus_cosine_sun_with_a_soft_terminator():
    normals = np.array([[0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0], [0, math.sin(0.5), math.cos(0.5)]])
    shade = diffuse_shading(RIG, normals)
    assert shade.shape == (4, 3)
    np.testing.assert_allclose(shade[0], 1.0, atol=1e-9)  # facing the sun: 0.8 + 0.2
    np.testing.assert_allclose(shade[1], 0.8, atol=1e-12)  # facing away: the world alone
    # Grazing: half the disc is above the horizon, at cosines up to sin(15 deg), not a hard 0.
    assert 0.8 + 0.2 * 0.02 < shade[2, 0] < 0.8 + 0.2 * math.sin(math.radians(15.0)) / 2
    np.testing.assert_allclose(shade[3], 0.8 + 0.2 * math.cos(0.5), atol=2e-3)  # fully lit: n.s


def test_delight_inverts_the_diffuse_lighting():
    rng = np.random.default_rng(0)
    albedo = rng.uniform(0.05, 0.95, (500, 3))
    normals = rng.normal(size=(500, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    lit = linear_to_srgb(srgb_to_linear(albedo) * diffuse_shading(RIG, normals))
    np.testing.assert_allclose(delight_colors(lit, normals, RIG), albedo, atol=1e-5)
    # A lit colour brighter than any albedo could give (a highlight) clamps to white.
    assert np.all(delight_colors(np.ones((1, 3)), np.array([[0.0, 0.0, -1.0]]), RIG) == 1.0)


def test_srgb_curves_invert_each_other():
    c = np.linspace(0.0, 1.0, 101)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(c)), c, atol=1e-12)
    assert math.isclose(float(srgb_to_linear(np.array(0.5))), 0.21404, rel_tol=1e-4)
