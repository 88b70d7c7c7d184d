"""The UI tests' shared fixture: the extension registered in an empty Blender session."""

from __future__ import annotations

import pytest


@pytest.fixture
def registered(fresh_bpy):
    """``bpy`` with the extension registered (unregistered afterwards)."""
    import blender_piva

    blender_piva.register()
    yield fresh_bpy
    blender_piva.unregister()
