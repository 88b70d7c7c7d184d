"""Registers every class of the extension, in dependency order; unregisters in reverse."""

from __future__ import annotations

import bpy

from . import operators, panels, preferences, properties, queue_operators

CLASSES = (*properties.CLASSES, *preferences.CLASSES, *operators.CLASSES, *queue_operators.CLASSES, *panels.CLASSES)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()


def unregister() -> None:
    if operators.ACTIVE.job is not None and operators.ACTIVE.job.process is not None:
        operators.ACTIVE.job.process.release()
        operators.ACTIVE.job = None
    operators.ACTIVE.runner = None
    panels.free_previews()
    properties.unregister_properties()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
