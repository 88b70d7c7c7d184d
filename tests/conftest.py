"""Shared fixtures. Blender state is reset per test by the fixtures that need bpy."""

from __future__ import annotations

import os

import pytest

# Two cores are shared by torch and Cycles in the tests: avoid oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def fresh_bpy():
    """An empty Blender session with the factory settings; the add-on registered when asked."""
    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny SD-style model (UNet, depth ControlNet, VAE, CLIP text encoder, tokenizer) saved to
    a folder and loaded by the real loading code: it edits nothing meaningful, but runs every path."""
    from backend.diffusion.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test():
    """A test that ran jobs on the session's backend worker (queues default to it) stops it, so
    the next test starts as a fresh Blender session would (e.g. Release Backend disabled)."""
    yield
    from blender_piva.core.worker_client import release_all

    release_all(10.0)
