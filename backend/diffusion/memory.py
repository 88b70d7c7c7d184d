"""Memory modes of the diffusion model, with diffusers' and accelerate's own tools.

:func:`apply_memory_mode` puts a loaded :class:`~backend.diffusion.model.DiffusionModel` in one of
``contract.MEMORY_MODES`` and returns what it applied, one line each, for the job's log:

* ``fast``: SDPA attention everywhere (``AttnProcessor2_0`` via ``set_attn_processor`` on the UNet,
  the ControlNet and the VAE): ``torch.nn.functional.scaled_dot_product_attention`` picks a fused
  kernel (flash / memory-efficient on CUDA) that never materialises the L x L attention matrix.
  Nothing traded.
* ``balanced``: ``fast`` plus VAE slicing (``vae.enable_slicing()``: a batch is encoded and decoded
  one image at a time; the 2D path edits batches, 3D previews decode one). Attention slicing is left
  out: on top of SDPA's fused kernels it saves nothing and costs time (diffusers' advice).
* ``low``: attention slicing (``set_attention_slice("max")`` on the UNet and the ControlNet:
  ``SlicedAttnProcessor`` computes attention one head slice at a time, in place of SDPA, so the
  attention matrix of one slice is the peak), VAE slicing and tiling (``vae.enable_tiling()``:
  images larger than the VAE's tile, 512+ pixels for SD, are encoded tile by tile), and model CPU
  offload on CUDA (accelerate's ``cpu_offload_with_hook``): the text encoder lives on the CPU and
  sits on the GPU only while it encodes a prompt (a few times per edit, the embeddings are cached).
  The UNet, ControlNet and VAE stay on
  the GPU: every edit step runs the VAE encoder, then the UNet, then backpropagates the injected
  gradient through the VAE encoder (and PIVA through the UNet's adapters), so moving them between
  calls would move ~2.4 GiB twice a step without lowering the peak (the VAE's saved activations
  and the UNet coexist). On the CPU and on MPS (one memory for both) the offload is a no-op.

Every mode changes speed and peak memory, not the predictions: they agree to float tolerance
(tests/backend/diffusion/test_memory.py). Applying a mode twice, or another mode after one, is
allowed, except after ``low`` has installed its offload hooks (load the model again).
"""

from __future__ import annotations

from typing import Any

from blender_piva.contract.layout import MEMORY_MODES


class MemoryModeError(ValueError):
    """An unknown memory mode, or a model that cannot take it; the message names the fix."""


def _attention_modules(model: Any) -> list[tuple[str, Any]]:
    """The model's components that hold attention layers (UNet, ControlNet, VAE), present ones only."""
    found = []
    for name in ("unet", "controlnet", "vae"):
        module = getattr(model, name, None)
        if module is not None and hasattr(module, "set_attn_processor"):
            found.append((name, module))
    return found


def set_sdpa(model: Any) -> list[str]:
    """``AttnProcessor2_0`` (PyTorch's scaled_dot_product_attention) on every attention layer."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    applied = []
    for name, module in _attention_modules(model):
        if getattr(module, "attn_processors", None):
            module.set_attn_processor(AttnProcessor2_0())
            applied.append(f"{name}: SDPA attention (AttnProcessor2_0)")
    return applied


def set_attention_slicing(model: Any, slice_size: str | int = "max") -> list[str]:
    """diffusers' attention slicing (``SlicedAttnProcessor``) on the UNet and the ControlNet."""
    applied = []
    for name in ("unet", "controlnet"):
        module = getattr(model, name, None)
        if module is not None and hasattr(module, "set_attention_slice"):
            module.set_attention_slice(slice_size)
            applied.append(f"{name}: attention slicing ({slice_size!r})")
    return applied


def offload_text_encoder(model: Any, execution_device: Any = None) -> list[str]:
    """accelerate's model CPU offload of the text encoder: ``cpu_offload_with_hook`` moves it to
    ``execution_device`` (default: the model's device) when it runs, and a forward hook hands it
    back to the CPU as soon as it has encoded a prompt. The UNet is not hooked: it stays where it is
    (adapters, their optimiser state and checkpoints restored before the first step stay on one
    device). :func:`apply_memory_mode` calls it on CUDA only."""
    import torch

    if getattr(model, "_offload_hooks", None):
        return ["cpu offload: already on"]
    from accelerate import cpu_offload_with_hook

    device = torch.device(execution_device if execution_device is not None else model.device)
    _, text_hook = cpu_offload_with_hook(model.text_encoder, device)

    def hand_back(module: Any, args: Any, output: Any) -> None:  # None: the output is kept as it is
        text_hook.offload()

    handle = model.text_encoder.register_forward_hook(hand_back)
    model._offload_hooks = [text_hook, handle]
    return ["cpu offload: text encoder on the GPU only while it encodes a prompt (accelerate cpu_offload_with_hook)"]


def apply_memory_mode(model: Any, mode: str) -> list[str]:
    """Put ``model`` (a loaded DiffusionModel) in memory mode ``mode``; return what was applied.

    Raises :class:`MemoryModeError` for a mode outside ``contract.MEMORY_MODES``."""
    import torch

    if mode not in MEMORY_MODES:
        raise MemoryModeError(f"unknown memory mode {mode!r}; allowed: {', '.join(MEMORY_MODES)}")
    if getattr(model, "_offload_hooks", None) and mode != "low":
        raise MemoryModeError(
            f"the model runs with CPU offload hooks (memory mode 'low'); to use {mode!r} load the model again"
        )
    applied = set_sdpa(model)
    vae = getattr(model, "vae", None)
    if mode in ("balanced", "low") and vae is not None:
        vae.enable_slicing()
        applied.append("vae: slicing (one image of a batch at a time)")
    elif vae is not None and hasattr(vae, "disable_slicing"):
        vae.disable_slicing()
    if mode == "low":
        applied += set_attention_slicing(model, "max")
        if vae is not None:
            vae.enable_tiling()
            applied.append("vae: tiling (images larger than its tile, tile by tile)")
        device = torch.device(model.device)
        if device.type == "cuda":
            applied += offload_text_encoder(model)
        else:
            applied.append(f"cpu offload: skipped (device {device.type}: the components already share one memory)")
    elif vae is not None and hasattr(vae, "disable_tiling"):
        vae.disable_tiling()
    return applied
