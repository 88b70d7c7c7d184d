"""The two queries the exporter needs from a field (``backend.field.ngp_field.NGPField`` has them)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class FieldLike(Protocol):
    """A volume with density and view-independent colour, in the normalised frame ([-1, 1]^3)."""

    def density(self, x: Tensor) -> Tensor:  # x: [N, 3] -> [N], >= 0
        """Volume density (per unit length of the normalised frame) at the points ``x``."""
        ...

    def color(self, x: Tensor) -> Tensor:  # x: [N, 3] -> [N, 3] in [0, 1]
        """RGB in [0, 1], in the colour space of the training images (sRGB), so it bakes as is."""
        ...


def density_and_color(field: FieldLike, x: Tensor) -> tuple[Tensor, Tensor]:  # x: [N, 3] -> ([N], [N, 3])
    """``(field.density(x), field.color(x))``, in one query when the field offers one
    (``density_and_color``: NGPField's shares the hash-grid lookup, half the bake's cost)."""
    both = getattr(field, "density_and_color", None)
    if both is not None:
        return both(x)
    return field.density(x), field.color(x)
