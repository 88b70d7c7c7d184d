"""Memory modes (backend/diffusion/memory.py) on the tiny SD model: each calls diffusers' own
tools (checked on the modules' flags and attention processors) and none changes a prediction."""

from __future__ import annotations

import pytest
import torch

from backend.diffusion.lora import SOURCE, TARGET, LoraPair, LoraSettings
from backend.diffusion.memory import MemoryModeError, apply_memory_mode, offload_text_encoder
from backend.diffusion.model import DiffusionModel
from blender_piva.contract.layout import MEMORY_MODES


def _load(tiny_dir, dtype=torch.float32):
    return DiffusionModel.load(str(tiny_dir), controlnet=str(tiny_dir / "controlnet"), device=torch.device("cpu"), dtype=dtype)


def _processor_names(module) -> set[str]:
    return {type(p).__name__ for p in module.attn_processors.values()}


@pytest.mark.parametrize("mode", MEMORY_MODES)
def test_each_mode_sets_the_expected_diffusers_tools(tiny_dir, mode):
    model = _load(tiny_dir)
    applied = apply_memory_mode(model, mode)
    assert applied and all(isinstance(line, str) for line in applied)
    assert _processor_names(model.vae) == {"AttnProcessor2_0"}  # SDPA in the VAE's attention in every mode
    if mode == "low":
        assert _processor_names(model.unet) == {"SlicedAttnProcessor"}
        assert _processor_names(model.controlnet) == {"SlicedAttnProcessor"}
        assert model.vae.use_slicing and model.vae.use_tiling
        assert any("cpu offload: skipped" in line for line in applied)  # a no-op on the CPU
    else:
        assert _processor_names(model.unet) == {"AttnProcessor2_0"}
        assert _processor_names(model.controlnet) == {"AttnProcessor2_0"}
        assert model.vae.use_slicing is (mode == "balanced")
        assert not model.vae.use_tiling


def test_predictions_and_encodings_are_the_same_in_every_mode(tiny_dir):
    model = _load(tiny_dir)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 16, 16, generator=g)
    t = torch.tensor([100, 500, 900])
    cond = model.encode_prompt("a red cube").expand(3, -1, -1)
    depth = torch.rand(3, 3, 32, 32, generator=g)
    rgb = torch.rand(2, 3, 32, 32, generator=g)  # the tiny VAE's tile is 32 pixels: not tiled
    results = {}
    for mode in ("fast", "balanced", "low", "fast"):  # back to fast: modes can be switched
        apply_memory_mode(model, mode)
        with torch.no_grad():
            results.setdefault(mode, []).append(
                (model.predict_noise(x, t, cond), model.predict_noise(x, t, cond, control=depth),
                 model.encode_images(rgb), model.decode_latents(x[:2]))
            )
    reference = results["fast"][0]
    for mode, runs in results.items():
        for run in runs:
            for got, want in zip(run, reference):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=f"mode {mode}")


def test_unknown_mode_names_the_allowed_ones(tiny_model):
    with pytest.raises(MemoryModeError, match="fast, balanced, low"):
        apply_memory_mode(tiny_model, "tiny")


def test_lora_parameters_stay_fp32_on_a_bf16_model(tiny_dir):
    model = _load(tiny_dir, dtype=torch.bfloat16)
    apply_memory_mode(model, "low")
    assert model.unet.dtype == torch.bfloat16
    pair = LoraPair(model, LoraSettings(learning_rate=1e-2))
    try:
        params = [p for ps in pair.params.values() for p in ps]
        assert params and all(p.dtype == torch.float32 for p in params)
        x, c = torch.randn(1, 4, 16, 16), model.encode_prompt("a red cube")
        before = [p.detach().clone() for p in pair.params[SOURCE]]
        loss = pair.train_step(SOURCE, x, c, null_cond=model.null_condition(), generator=torch.Generator().manual_seed(0))
        assert loss == loss and loss > 0  # finite
        assert all(p.dtype == torch.float32 for p in pair.params[SOURCE])
        assert any(not torch.equal(a, b) for a, b in zip(before, pair.params[SOURCE]))
        state = pair.optimizers[SOURCE].state
        assert all(v.dtype == torch.float32 for s in state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
        assert pair.predict(TARGET, x, torch.tensor([300]), c).dtype == torch.float32
    finally:
        pair.remove()


def test_text_encoder_offload_hands_it_back_after_each_prompt(tiny_dir):
    """The CUDA path's wiring, run with the CPU as the execution device (no GPU needed)."""
    model = _load(tiny_dir)
    reference = model.encode_prompt("a red cube")
    model._prompt_cache.clear()
    offload_text_encoder(model, torch.device("cpu"))
    text_hook, _ = model._offload_hooks
    offloads = []
    real = text_hook.offload
    text_hook.offload = lambda: (offloads.append(1), real())[1]
    torch.testing.assert_close(model.encode_prompt("a red cube"), reference)
    model.encode_prompt("a blue cube")
    assert offloads == [1, 1]  # back to the CPU after every encoding
    assert offload_text_encoder(model) == ["cpu offload: already on"]
    with pytest.raises(MemoryModeError, match="load the model again"):
        apply_memory_mode(model, "fast")
    assert apply_memory_mode(model, "low")[-1].startswith("cpu offload: skipped")
