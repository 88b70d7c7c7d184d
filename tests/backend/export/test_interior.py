"""Sealing the interior of a fitted field: pockets go, the outer shape and open concavities stay."""

from __future__ import annotations

import numpy as np
import pytest

from backend.export.interior import solid_occupancy


def ball(shape: tuple[int, int, int], centre, radius: float) -> np.ndarray:
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    return np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius


def test_enclosed_and_channel_connected_pockets_are_filled():
    shape = (40, 40, 40)
    solid = ball(shape, (20, 20, 20), 15)
    speckled = solid & ~ball(shape, (20, 20, 20), 6)  # a hollow core ...
    speckled[20, 20, 20:] = False  # ... joined to the outside by a one-cell channel
    assert not np.array_equal(solid_occupancy(speckled, 0), solid)  # the channel keeps it open
    sealed = solid_occupancy(speckled, 1)
    assert sealed[ball(shape, (20, 20, 20), 12)].all()  # the pocket and the channel's inner part are solid
    # Only the channel's mouth (within the radius of the outside) may stay open.
    assert 0 < np.count_nonzero(sealed != solid) <= 2 and not (sealed & ~solid).any()


def test_wide_concavities_and_the_outside_are_kept():
    shape = (48, 48, 48)
    cup = ball(shape, (24, 24, 24), 18) & ~ball(shape, (24, 24, 40), 12)  # a bowl open to +z
    assert (solid_occupancy(cup, 2) == cup).mean() > 0.999
    sealed = solid_occupancy(cup, 2)
    assert not sealed[0].any() and not sealed[24, 24, 40]  # border and the bowl's inside stay empty


def test_object_touching_the_border_is_not_filled_outward():
    occupied = np.zeros((10, 10, 10), dtype=bool)
    occupied[:, 3:7, 3:7] = True  # a bar from face to face
    np.testing.assert_array_equal(solid_occupancy(occupied, 2), occupied)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="3-D"):
        solid_occupancy(np.zeros((4, 4), dtype=bool), 1)
    with pytest.raises(ValueError, match="at least 0"):
        solid_occupancy(np.zeros((4, 4, 4), dtype=bool), -1)
