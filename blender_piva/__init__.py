"""PIVA for Blender: edit the selected mesh by typing what it should become.

The extension is imported by Blender as ``bl_ext.<repo>.blender_piva`` and by the tests and the
backend as ``blender_piva``. Importing the package needs neither bpy nor torch: the backend imports
``blender_piva.contract`` from its own Python. Everything that touches bpy is imported inside
:func:`register`.
"""


def register() -> None:
    from .ui import registration

    registration.register()


def unregister() -> None:
    from .ui import registration

    registration.unregister()
