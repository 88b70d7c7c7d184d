"""The worker's model cache: reuse for an equal key, reload for another, and a model that a job
gives back changed (PIVA's adapters, SSD's FreeU) is never reused."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from blender_piva import contract

from backend.serve.model_cache import ModelCache, model_changes
from backend.stages.context import ModelKey

from .jobs import events, load_count, make_job


def _fresh(tiny_model):
    from backend.diffusion.memory import apply_memory_mode
    from backend.diffusion.model import DiffusionModel
    from backend.stages.edit import resolve_controlnet

    model = DiffusionModel.load(
        str(tiny_model), controlnet=resolve_controlnet(str(tiny_model), ""), device=torch.device("cpu"), dtype=torch.float32
    )
    return model, apply_memory_mode(model, "balanced")


def _predictions(model) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([100, 700])
    cond = torch.cat([model.encode_prompt("a red cube"), model.encode_prompt("a blue cube")])
    control = torch.rand(2, 3, 16, 16, generator=gen)  # the tiny ControlNet: 2x the latent side
    with torch.no_grad():
        return torch.cat([model.predict_noise(x, t, cond), model.predict_noise(x, t, cond, control=control)])


def test_after_a_piva_job_the_cached_model_is_clean_and_predicts_as_a_fresh_one(tmp_path, tiny_model):
    from backend.runner import run_job

    cache = ModelCache()
    job = make_job(tmp_path / "piva", tiny_model, method="piva")
    assert run_job(job, started=0.0, models=cache, sigterm_cancels=False) == contract.EXIT_OK, [
        e.message for e in events(job) if e.type == "error"
    ]
    assert cache.loads == 1 and load_count(job) == 1
    model = cache.model
    assert model_changes(model) == []
    assert not [n for n, _ in model.unet.named_parameters() if "lora_" in n] and not getattr(model.unet, "peft_config", None)
    fresh, _ = _fresh(tiny_model)
    torch.testing.assert_close(_predictions(model), _predictions(fresh), rtol=0, atol=1e-6)


def test_a_model_left_changed_is_loaded_again_and_another_key_replaces_it(tiny_model):
    from backend.diffusion.lora import LoraPair, LoraSettings

    writer = contract.EventWriter.__new__(contract.EventWriter)
    logged: list[str] = []
    writer.emit = lambda kind, **fields: logged.append(fields.get("message", ""))
    key = ModelKey(str(tiny_model), "", "cpu", "torch.float32", "balanced")
    cache = ModelCache()
    loader = lambda: _fresh(tiny_model)  # noqa: E731
    first, _ = cache.get(key, loader, writer)
    assert cache.get(key, loader, writer)[0] is first and cache.loads == 1

    LoraPair(first, LoraSettings(rank=2))  # a method that never called close()
    assert any("LoRA" in change for change in model_changes(first))
    second, _ = cache.get(key, loader, writer)
    assert second is not first and cache.loads == 2 and "left changed by an earlier job" in logged[-2]

    dropout = next(m for m in second.unet.modules() if isinstance(m, torch.nn.Dropout))
    dropout.train()
    assert "modules in training mode" in model_changes(second)[0]
    assert cache.get(key, loader, writer)[0] is second and model_changes(second) == []  # put back in eval mode

    second.unet.enable_freeu(b1=1.1, b2=1.1, s1=0.9, s2=0.2)  # SSD outside its freeu() block
    assert model_changes(second) == ["unet: FreeU is enabled"]
    second.unet.disable_freeu()
    assert model_changes(second) == []

    other = ModelKey(str(tiny_model), "", "cpu", "torch.float32", "low")
    assert cache.get(other, loader, writer)[0] is not second and cache.loads == 3 and cache.key == other
    assert logged[-1].startswith("loaded model ") and logged[-1].endswith("(load 3 of this worker)")
    assert cache.release() and cache.model is None and not cache.release()
