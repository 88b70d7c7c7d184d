"""bench/edit_step.py: the SD 2.1-base architecture it builds, and its step loop on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from backend.diffusion.model import DiffusionModel
from backend.diffusion.tiny import save_tiny_model
from backend.editing.registry import METHODS

from ..script_modules import load_script



@pytest.fixture(scope="module")
def edit_step():
    return load_script("bench/edit_step.py", "bench_edit_step")


def test_sd21_modules_have_the_published_sizes_and_fit_together(edit_step):
    # meta tensors: shapes without memory or compute
    with torch.device("meta"):
        unet, vae, cnet = edit_step.build_sd21_modules(controlnet=True)
        assert sum(p.numel() for p in unet.parameters()) == 865_910_724  # SD 2.1-base UNet
        assert sum(p.numel() for p in vae.parameters()) == 83_653_863  # SD VAE (kl-f8)
        image = torch.empty(1, 3, 512, 512)
        latents = vae.encode(image).latent_dist.mean
        assert latents.shape == (1, 4, 64, 64)
        t, cond = torch.zeros(1, dtype=torch.long), torch.empty(1, 77, 1024)
        down, mid = cnet(latents, t, encoder_hidden_states=cond, controlnet_cond=image, return_dict=False)
        out = unet(latents, t, encoder_hidden_states=cond, down_block_additional_residuals=down,
                   mid_block_additional_residual=mid, return_dict=False)[0]
    assert out.shape == (1, 4, 64, 64)


def test_bench_method_times_and_counts_every_method_on_the_tiny_model(edit_step, tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    model = DiffusionModel.load(
        str(folder), controlnet=str(folder / "controlnet"), device=torch.device("cpu"), dtype=torch.float32
    )
    names = edit_step.run_order(list(METHODS), unbatched=True, separate=True)
    assert names == ["sds", "dds", "pds", "ssd", "piva", "piva_unbatched", "piva_separate"]  # references beside piva
    figures = {name: edit_step.bench_method(name, model, resolution=32, reps=1) for name in names}
    for name, f in figures.items():
        assert f["ms"] > 0 and f["tflop"] > 0, name
        assert math.isfinite(f["peak_mb"]) and f["peak_mb"] >= 0, name
        assert "floor_ms" not in f  # the H100 floor is printed on CUDA only
    # PIVA adds adapter evaluations and training to a DDS-like call: more work than SDS's one call of 2
    assert figures["piva"]["tflop"] > 1.5 * figures["sds"]["tflop"]
    # batching moves rows between calls, it does not add or drop work
    assert figures["piva_unbatched"]["tflop"] == pytest.approx(figures["piva_separate"]["tflop"], rel=0.02)
    # a tiny UNet: auto chooses the separate calls (the fused call's FLOPs: tests/backend/editing)
    assert figures["piva"]["tflop"] == pytest.approx(figures["piva_separate"]["tflop"], rel=0.02)
    # bench_method closes each method: PIVA's adapters are gone from the UNet afterwards
    assert not any("lora_" in n for n, _ in model.unet.named_parameters())


def test_ratios_are_printed_only_for_methods_that_ran(edit_step):
    ms, tflop = {"dds": 100.0, "piva": 170.0, "piva_unbatched": 400.0}, {"dds": 1.0, "piva": 1.67, "piva_unbatched": 1.67}
    assert edit_step.ratios(ms, tflop) == pytest.approx(
        {"ratio_piva_dds": 1.7, "tflop_ratio_piva_dds": 1.67, "ratio_piva_unbatched_dds": 4.0, "speedup_piva": 400 / 170}
    )
    assert edit_step.ratios({"piva": 1.0}, {"piva": 1.0}) == {}
    assert edit_step.run_order(["dds", "piva"], unbatched=False) == ["dds", "piva"]
    ms, tflop = {"dds": 100.0, "piva": 250.0, "piva_separate": 350.0}, {"dds": 1.0, "piva": 2.5, "piva_separate": 1.9}
    assert edit_step.ratios(ms, tflop) == pytest.approx(
        {"ratio_piva_dds": 2.5, "tflop_ratio_piva_dds": 2.5, "ratio_piva_separate_dds": 3.5, "speedup_piva_fused": 1.4}
    )


@pytest.mark.parametrize("flag", ["--unbatched", "--separate"])
def test_references_need_piva(edit_step, flag):
    with pytest.raises(SystemExit):
        edit_step.parse_args(["--methods", "dds", flag])


def test_bench_methods_alternates_piva_and_its_unbatched_view_on_one_pair_of_adapters(edit_step, tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    model = DiffusionModel.load(
        str(folder), controlnet=str(folder / "controlnet"), device=torch.device("cpu"), dtype=torch.float32
    )
    names = edit_step.run_order(["dds", "piva"], unbatched=True, separate=True)
    figures = edit_step.bench_methods(names, model, resolution=32, reps=2)
    assert set(figures) == {"dds", "piva", "piva_unbatched", "piva_separate"}
    assert all(f["ms"] > 0 and f["tflop"] > 0 for f in figures.values())
    assert figures["piva_unbatched"]["tflop"] == pytest.approx(figures["piva_separate"]["tflop"], rel=0.02)
    assert not any("lora_" in n for n, _ in model.unet.named_parameters())  # piva closed, once
