"""The one module that imports tiny-cuda-nn (optional, CUDA only).

tinycudann cannot be pip-installed on a CPU box, so everything here is lazy: importing this module
never fails; :func:`load_tcnn` returns the module or ``None`` with the reason.
"""

from __future__ import annotations

from types import ModuleType


def load_tcnn() -> tuple[ModuleType | None, str]:
    """Return ``(tinycudann, "")`` when it can be used, else ``(None, why_not)``."""
    import torch

    if not torch.cuda.is_available():
        return None, "CUDA is not available"
    try:
        import tinycudann  # type: ignore[import-not-found]
    except ImportError as exc:
        return None, f"tinycudann is not installed ({exc}); install it from github.com/NVlabs/tiny-cuda-nn"
    return tinycudann, ""


def make_tcnn_hash_grid(
    num_levels: int,
    features_per_level: int,
    log2_table_size: int,
    base_resolution: int,
    per_level_scale: float,
):
    """A ``tcnn.Encoding`` with the same hyper-parameters as :class:`HashEncoding`'s torch twin.

    Its input must be in [0, 1]^3 (tcnn's convention too); its output is [N, L * F] in float16 or
    float32 depending on the tcnn build. Raises RuntimeError when tcnn is unusable.
    """
    tcnn, why = load_tcnn()
    if tcnn is None:
        raise RuntimeError(f"tiny-cuda-nn hash grid requested but unusable: {why}")
    return tcnn.Encoding(
        n_input_dims=3,
        encoding_config={
            "otype": "HashGrid",
            "n_levels": num_levels,
            "n_features_per_level": features_per_level,
            "log2_hashmap_size": log2_table_size,
            "base_resolution": base_resolution,
            "per_level_scale": per_level_scale,
            "interpolation": "Linear",
        },
    )
