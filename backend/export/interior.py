"""Seal a fitted field's hollow, speckled interior before marching cubes.

A radiance field is only constrained where the cameras see: inside an opaque object its density is
arbitrary, and a hash-grid fit leaves it speckled with low-density pockets. Marching cubes wraps
every pocket in a surface; where a pocket touches the shell through a thin channel it joins the
outer component, so dropping small components (cleanup.py) does not remove it. On a fitted
Suzanne (40 views, 128 px, 256^3) such interior sheets were 2/3 of the 1.06 M faces and put the
symmetric Chamfer distance at 2.2 % of the bounding-box diagonal.

The outside is what the empty space reaches from the grid's border once channels narrower than
``2 radius + 1`` cells are closed: an opening of the empty set by reconstruction (erode it by
``radius``, keep the part connected to the border, dilate that back by ``radius`` inside the
empty set). Everything else is solid. Concavities of the outer surface wider than the channel
width keep their shape; narrower ones are filled deeper than ``radius`` cells.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def solid_occupancy(occupied: np.ndarray, radius: int) -> np.ndarray:  # [X, Y, Z] bool -> [X, Y, Z] bool
    """``occupied`` plus every empty cell the outside cannot reach through channels wider than ``2 radius``.

    The grid's border counts as outside (the extractor pads the grid with empty cells too).
    ``radius`` 0 fills only fully enclosed cavities.
    """
    occupied = np.asarray(occupied, dtype=bool)
    if occupied.ndim != 3:
        raise ValueError(f"occupied must be a 3-D grid, got shape {occupied.shape}")
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"radius must be at least 0 cells, got {radius}")
    pad = radius + 1
    empty = np.pad(~occupied, pad, constant_values=True)  # a shell of outside around the grid
    cross = ndimage.generate_binary_structure(3, 1)
    core = ndimage.binary_erosion(empty, cross, iterations=radius, border_value=1) if radius > 0 else empty
    labels, _ = ndimage.label(core, structure=cross)
    outside = labels == labels[0, 0, 0]  # the corner lies in the padding shell, always outside
    if radius > 0:
        outside = ndimage.binary_dilation(outside, cross, iterations=radius, mask=empty)
    return ~outside[pad:-pad, pad:-pad, pad:-pad]
