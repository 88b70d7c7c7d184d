"""How much GPU memory an edit will need, before it starts (standard library only).

Both sides use it: the backend's edit stage logs the estimate before the model loads, the panel
shows it (through ``blender_piva.core.memory_estimate``), so it lives in the contract.

The table ``memory_estimate.json`` (next to this module) holds the estimated PEAK GPU memory, in
GiB, of the edit stage per method (sds, dds, pds, ssd, piva), edit resolution
(``edit.render_resolution``: 64, 128, 256, 512) and memory mode (``contract.MEMORY_MODES``), for
Stable Diffusion 2.1-base with its depth ControlNet in fp16, one edit camera per step. Each entry
says where it comes from: ``"computed"`` (by :func:`compute_table`, below) or ``"measured"``
(``torch.cuda.max_memory_allocated`` plus the CUDA context, on a real GPU). A GPU owner replaces
entries with measured ones (``python -m blender_piva.contract.memory_estimate --write`` rewrites the
computed ones and keeps every measured entry).

Derivation of the computed entries (r = edit resolution, h = r / 8 the latent side, 2 bytes a
value in fp16, activation sizes counted from the SD 2.1 architecture):

* weights: UNet 866 M, text encoder 340 M, ControlNet 361 M, VAE 84 M parameters
  -> 1.61 + 0.63 + 0.67 + 0.16 = 3.08 GiB; plus 0.6 GiB for the CUDA context and the allocator's
  reserve; PIVA adds its two rank-4 LoRA adapters in fp32 with AdamW state (0.05 GiB);
* the radiance field: the edited copy with its gradient and Adam moments and the frozen original,
  0.35 GiB; its differentiable render keeps ~32 samples per ray of ~384 bytes for the backward:
  r^2 * 12 KiB (3 GiB at 512);
* the VAE encoder's activations, kept from the encode to the backward (the injected gradient flows
  through it into the render): ~6700 * r^2 bytes (14 saved tensors per level, 128/256/512/512
  channels at r, r/2, r/4, r/8): 1.6 GiB at 512;
* UNet noise predictions (no graph): ~60 KB * h^2 per sample (skip connections of every level and
  the working set of the largest block, attention by SDPA's fused kernels, no L x L matrix): the
  batch is 2 for SDS, 4 for DDS, PDS, SSD and PIVA;
* PIVA's adapter training: a backward through the frozen UNet to the LoRA weights keeps its
  activations: ~768 KiB * h^2 per sample (3 GiB at 512; the measured cost of LoRA fine-tuning SD at
  512 without gradient checkpointing), plus the ControlNet's forward (half a UNet prediction);
  the peak of a step is the larger of the 4-batch prediction and one training step;
* memory modes: ``balanced`` adds VAE slicing, which changes nothing for one camera (the 3D edit
  encodes one image at a time): the same as ``fast``. ``low`` keeps the text encoder on the CPU
  (-0.63 GiB) and slices attention one head at a time, which materialises one head's L x L
  matrix (+ 2 * h^4 bytes) where SDPA's fused kernel keeps none; VAE tiling acts only above the
  VAE's tile (512+ pixels).

Resolutions between table entries are interpolated linearly in r^2 (every term is a constant plus
a multiple of r^2, up to the small h^4 one), larger ones extrapolated from the last two entries;
smaller ones get the first entry (the weights dominate there: a slight overestimate).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .layout import MEMORY_MODES, METHODS

TABLE_FILE = Path(__file__).with_suffix(".json")
"""The shipped table (``memory_estimate.json``)."""
RESOLUTIONS = (64, 128, 256, 512)
"""Edit resolutions the table lists."""
GIB = 1024**3

# -- the derivation of the module docstring, term by term (bytes) ----------------------------------
PARAMS = {"unet": 865.9e6, "text_encoder": 340.4e6, "controlnet": 361.3e6, "vae": 83.7e6}
"""Parameters of SD 2.1-base and its depth ControlNet."""
FP16 = 2
CONTEXT = 0.6 * GIB
LORA_STATE = 0.05 * GIB
FIELD_STATE = 0.35 * GIB
RENDER_PER_PIXEL = 32 * 384
VAE_GRAD_PER_PIXEL = 6700
UNET_PREDICT_PER_LATENT = 60_000
UNET_TRAIN_PER_LATENT = 768 * 1024
UNET_BATCH = {"sds": 2, "dds": 4, "pds": 4, "ssd": 4, "piva": 4}
"""Samples of each method's batched noise prediction (backend/editing/)."""


class MemoryEstimateError(ValueError):
    """A method, resolution or memory mode the estimate does not know; the message lists the allowed."""


def computed_bytes(method: str, resolution: int, memory: str) -> float:
    """Peak GPU bytes of one edit step by the derivation of the module docstring."""
    _check(method, memory)
    r2 = float(resolution) ** 2
    h2 = r2 / 64.0
    weights = sum(PARAMS.values()) * FP16
    if memory == "low":
        weights -= PARAMS["text_encoder"] * FP16
    fixed = CONTEXT + weights + FIELD_STATE + (LORA_STATE if method == "piva" else 0.0)
    graphs = r2 * (RENDER_PER_PIXEL + VAE_GRAD_PER_PIXEL)
    unet = UNET_BATCH[method] * UNET_PREDICT_PER_LATENT * h2
    if method == "piva":
        unet = max(unet, UNET_TRAIN_PER_LATENT * h2 + 0.5 * UNET_PREDICT_PER_LATENT * h2)
    if memory == "low":
        unet += FP16 * h2 * h2  # one head's attention matrix (sliced attention, no fused kernel)
    return fixed + graphs + unet


def compute_table(previous: dict | None = None) -> dict:
    """The table with every entry computed, except the entries of ``previous`` marked measured."""
    entries: dict = {}
    old = (previous or {}).get("entries", {})
    for method in METHODS:
        for resolution in RESOLUTIONS:
            for memory in MEMORY_MODES:
                kept = old.get(method, {}).get(str(resolution), {}).get(memory)
                if kept is not None and kept.get("source") == "measured":
                    entry = kept
                else:
                    entry = {"gib": round(computed_bytes(method, resolution, memory) / GIB, 2), "source": "computed"}
                entries.setdefault(method, {}).setdefault(str(resolution), {})[memory] = entry
    return {
        "model": "stabilityai/stable-diffusion-2-1-base + thibaud/controlnet-sd21-depth-diffusers",
        "precision": "fp16",
        "unit": "GiB",
        "what": "peak GPU memory of the edit stage, one camera per step (see memory_estimate.py)",
        "entries": entries,
    }


_TABLE: dict | None = None


def load_table() -> dict:
    """The shipped table (cached); computed afresh when the file is missing."""
    global _TABLE
    if _TABLE is None:
        try:
            _TABLE = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            _TABLE = compute_table()
    return _TABLE


def estimate_gib(method: str, resolution: int, memory: str = "balanced") -> tuple[float, str]:
    """(estimated peak GiB, source) of an edit with ``method`` at ``resolution`` in mode ``memory``.

    ``source`` is ``"measured"`` when every table entry used was measured, else ``"computed"``.
    Raises :class:`MemoryEstimateError` naming the allowed values."""
    _check(method, memory)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise MemoryEstimateError(f"resolution must be a positive number of pixels, got {resolution!r}")
    rows = load_table()["entries"][method]
    known = sorted(int(r) for r in rows)
    if resolution in known or resolution < known[0]:  # below the table the weights dominate: its first row
        entry = rows[str(resolution if resolution in known else known[0])][memory]
        return float(entry["gib"]), entry["source"]
    # the two neighbouring resolutions, or the nearest two outside the table
    upper = next((i for i, r in enumerate(known) if r > resolution), len(known) - 1)
    upper = min(max(upper, 1), len(known) - 1)
    r0, r1 = known[upper - 1], known[upper]
    e0, e1 = rows[str(r0)][memory], rows[str(r1)][memory]
    g0, g1 = float(e0["gib"]), float(e1["gib"])
    slope = (g1 - g0) / (r1**2 - r0**2)
    gib = g0 + slope * (resolution**2 - r0**2)
    source = "measured" if e0["source"] == e1["source"] == "measured" else "computed"
    return round(gib, 2), source


def describe(method: str, resolution: int, memory: str = "balanced") -> str:
    """``"≈ 7.9 GiB GPU (computed)"``: the panel's and the log's line."""
    gib, source = estimate_gib(method, resolution, memory)
    return f"≈ {gib:.1f} GiB GPU ({source})"


def _check(method: str, memory: str) -> None:
    if method not in METHODS:
        raise MemoryEstimateError(f"no memory estimate for method {method!r}; allowed: {', '.join(METHODS)}")
    if memory not in MEMORY_MODES:
        raise MemoryEstimateError(f"no memory estimate for memory mode {memory!r}; allowed: {', '.join(MEMORY_MODES)}")


def main(argv: list[str] | None = None) -> int:
    """``python -m blender_piva.contract.memory_estimate [--write]``: print (or rewrite) the table,
    keeping every measured entry of the shipped one."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        previous = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        previous = None
    table = compute_table(previous)
    text = json.dumps(table, indent=1) + "\n"
    if "--write" in argv:
        TABLE_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {TABLE_FILE}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
