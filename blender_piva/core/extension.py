"""Who the extension is, wherever it is loaded from (no bpy)."""

PACKAGE = (__package__ or "blender_piva.core").rpartition(".")[0]
"""The extension's own package: ``bl_ext.<repo>.blender_piva`` in Blender, ``blender_piva`` in the
bpy module and the tests. Its preferences' id and the key of its user folder."""
