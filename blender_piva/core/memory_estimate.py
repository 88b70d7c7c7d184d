"""The estimated peak GPU memory of an edit, for the panel and the preferences (no bpy, no torch).

The table, its derivation and the function that recomputes it live in
``blender_piva/contract/memory_estimate.py`` (the backend logs the same estimate before the model
loads, and the backend may import only the contract); this module is the add-on's door to it.

>>> gib, source = estimate_gib("piva", 128, "balanced")
>>> source
'computed'
"""

from __future__ import annotations

from ..contract.memory_estimate import (
    RESOLUTIONS,
    MemoryEstimateError,
    compute_table,
    describe,
    estimate_gib,
    load_table,
)

__all__ = ["RESOLUTIONS", "MemoryEstimateError", "compute_table", "describe", "estimate_gib", "load_table"]
