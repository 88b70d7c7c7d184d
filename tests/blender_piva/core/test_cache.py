"""Cache keys: what changes the capture or the fit changes the key, and nothing else does."""

from __future__ import annotations

import dataclasses

import pytest

from blender_piva import contract
from blender_piva.core import cache


def test_keys_follow_the_settings_that_matter(tmp_path):
    capture, fit = contract.CaptureSettings(), contract.ReconstructSettings()
    entry = cache.cache_entry(tmp_path, "abc", capture, fit)
    assert entry == cache.cache_entry(tmp_path, "abc", contract.CaptureSettings(), contract.ReconstructSettings())
    assert entry.capture_dir.parent == tmp_path / cache.CACHE_DIR / entry.object_key
    assert cache.cache_entry(tmp_path, "abd", capture, fit).object_key != entry.object_key
    assert cache.cache_entry(tmp_path, "abc", dataclasses.replace(capture, resolution=64), fit).object_key != entry.object_key
    # The fit's own settings change only the fit's folder, within the same capture.
    other_fit = cache.cache_entry(tmp_path, "abc", capture, dataclasses.replace(fit, steps=7))
    assert other_fit.capture_dir == entry.capture_dir and other_fit.reconstruction_dir != entry.reconstruction_dir
    # How often it checkpoints or previews does not change the field.
    same = cache.cache_entry(tmp_path, "abc", capture, dataclasses.replace(fit, checkpoint_every=3, preview_every=9))
    assert same == entry
    assert not entry.has_capture and not entry.has_reconstruction


def test_entries_are_complete_only_with_their_markers(tmp_path):
    entry = cache.cache_entry(tmp_path, "abc", contract.CaptureSettings(), contract.ReconstructSettings())
    entry.capture_dir.mkdir(parents=True)
    assert not entry.has_capture
    (entry.capture_dir / contract.TRANSFORMS_FILE).write_text("{}")
    assert entry.has_capture
    (entry.reconstruction_dir / "field").mkdir(parents=True)
    assert not entry.has_reconstruction  # a fit in progress has no metrics.json yet
    (entry.reconstruction_dir / "metrics.json").write_text("{}")
    assert entry.has_reconstruction
    assert cache.clear_cache(tmp_path, entry.object_key) == 1 and not entry.capture_dir.exists()
    assert cache.clear_cache(tmp_path) == 0


def test_fingerprint_sees_shape_rotation_and_material_but_not_placement(fresh_bpy):
    pytest.importorskip("bpy")
    import toy_world
    from blender_piva.scene.fingerprint import object_fingerprint

    bpy = fresh_bpy
    cube = toy_world.add_object("red", "cube", name="Cube")
    base = object_fingerprint(cube)
    cube.location, cube.scale = (4.0, -1.0, 2.0), (3.0, 3.0, 3.0)
    bpy.context.view_layer.update()
    assert object_fingerprint(cube) == base  # the capture normalises placement and size away
    cube.scale = (1.0, 1.0, 2.0)
    bpy.context.view_layer.update()
    assert object_fingerprint(cube) != base  # a stretched cube is another shape
    cube.scale = (1.0, 1.0, 1.0)
    cube.rotation_euler = (0.0, 0.0, 0.5)
    bpy.context.view_layer.update()
    assert object_fingerprint(cube) != base  # the cameras and the light are fixed in the world
    cube.rotation_euler = (0.0, 0.0, 0.0)
    bpy.context.view_layer.update()
    assert object_fingerprint(cube) == base
    bsdf = next(n for n in cube.active_material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    colour = tuple(bsdf.inputs["Base Color"].default_value)
    bsdf.inputs["Roughness"].default_value = 0.1
    assert object_fingerprint(cube) != base
    bsdf.inputs["Roughness"].default_value = 0.8
    bsdf.inputs["Base Color"].default_value = colour
    restored = object_fingerprint(cube)
    cube.modifiers.new("Bevel", "BEVEL")
    assert object_fingerprint(cube) != restored  # modifiers change what is rendered
    assert len(bpy.data.meshes) == 1  # hashing adds no datablock


def test_a_latent_fit_is_keyed_on_its_model_and_an_rgb_fit_as_before(tmp_path):
    rgb = contract.ReconstructSettings()
    latent = dataclasses.replace(rgb, field="latent")
    settings = {k: v for k, v in dataclasses.asdict(rgb).items() if k not in cache.FIT_SETTINGS_IGNORED and k != "field"}
    assert cache.fit_key(rgb) == cache._digest({"format": cache.CACHE_FORMAT, "reconstruct": settings})  # unchanged key
    assert cache.fit_key(rgb, "toy") == cache.fit_key(rgb, "other")  # an RGB field does not depend on the model
    assert cache.fit_key(latent, "toy") != cache.fit_key(latent, "other") != cache.fit_key(rgb, "other")
