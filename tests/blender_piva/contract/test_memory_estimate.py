"""The peak-GPU-memory estimate shown before a job starts (contract/memory_estimate.py)."""

from __future__ import annotations

import pytest

from blender_piva.contract import memory_estimate as me
from blender_piva.contract.layout import MEMORY_MODES, METHODS
from blender_piva.core import memory_estimate as core_estimate

RES = (32, 64, 96, 128, 200, 256, 384, 512, 768, 1024)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("memory", MEMORY_MODES)
def test_monotone_in_resolution(method, memory):
    values = [me.estimate_gib(method, r, memory)[0] for r in RES]
    assert all(a <= b for a, b in zip(values, values[1:])), values
    assert values[-1] > values[0]  # a bigger render needs more
    assert all(v > 0 for v in values)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("resolution", RES)
def test_low_needs_no_more_than_balanced_no_more_than_fast(method, resolution):
    low, balanced, fast = (me.estimate_gib(method, resolution, m)[0] for m in ("low", "balanced", "fast"))
    assert low <= balanced <= fast
    assert low < fast  # the offloaded text encoder at least


@pytest.mark.parametrize("resolution", RES)
@pytest.mark.parametrize("memory", MEMORY_MODES)
def test_piva_needs_at_least_what_dds_needs(resolution, memory):
    assert me.estimate_gib("piva", resolution, memory)[0] >= me.estimate_gib("dds", resolution, memory)[0]
    assert me.estimate_gib("dds", resolution, memory)[0] >= me.estimate_gib("sds", resolution, memory)[0]


def test_table_entries_are_returned_as_they_are_and_marked_computed():
    table = me.load_table()
    for method in METHODS:
        for resolution in me.RESOLUTIONS:
            for memory in MEMORY_MODES:
                entry = table["entries"][method][str(resolution)][memory]
                assert me.estimate_gib(method, resolution, memory) == (entry["gib"], entry["source"])
                assert entry["source"] in ("computed", "measured")


def test_the_shipped_table_is_what_compute_table_gives():
    """Regenerate with ``python -m blender_piva.contract.memory_estimate --write`` after changing the derivation."""
    assert me.compute_table(me.load_table()) == me.load_table()


def test_measured_entries_survive_a_recompute():
    table = me.compute_table()
    table["entries"]["piva"]["512"]["fast"] = {"gib": 13.37, "source": "measured"}
    again = me.compute_table(table)
    assert again["entries"]["piva"]["512"]["fast"] == {"gib": 13.37, "source": "measured"}
    assert again["entries"]["piva"]["512"]["low"]["source"] == "computed"


def test_unknown_method_mode_or_resolution_teaches():
    with pytest.raises(me.MemoryEstimateError, match="allowed: sds, dds, pds, ssd, piva"):
        me.estimate_gib("magic", 128, "fast")
    with pytest.raises(me.MemoryEstimateError, match="allowed: fast, balanced, low"):
        me.estimate_gib("piva", 128, "tiny")
    with pytest.raises(me.MemoryEstimateError, match="positive number of pixels"):
        me.estimate_gib("piva", 0, "fast")


def test_the_add_on_reads_the_same_estimate_and_line():
    assert core_estimate.estimate_gib("piva", 256, "low") == me.estimate_gib("piva", 256, "low")
    line = core_estimate.describe("piva", 128, "balanced")
    assert line.startswith("≈ ") and line.endswith(" GiB GPU (computed)")
