from __future__ import annotations

import torch

from backend.diffusion.lora import SOURCE, TARGET, LoraPair, LoraSettings


def test_adapters_start_as_the_base_model_and_train_separately(tiny_model):
    m = tiny_model
    pair = LoraPair(m, LoraSettings(learning_rate=1e-2))
    try:
        assert all(p.dtype == torch.float32 for ps in pair.params.values() for p in ps)
        assert len(pair.params[SOURCE]) == len(pair.params[TARGET]) > 0
        x, t, c = torch.randn(1, 4, 16, 16), torch.tensor([400]), m.encode_prompt("a red cube")
        depth = torch.rand(1, 3, 32, 32)
        with torch.no_grad():
            base = m.predict_noise(x, t, c)
        assert torch.equal(pair.predict(SOURCE, x, t, c), base)  # LoRA B = 0
        for i in range(2):
            loss = pair.train_step(SOURCE, x, c, control=depth, generator=torch.Generator().manual_seed(i))
            assert loss > 0
        assert not torch.allclose(pair.predict(SOURCE, x, t, c), base)
        assert torch.equal(pair.predict(TARGET, x, t, c), base)  # phi untouched
        with torch.no_grad():
            assert torch.equal(m.predict_noise(x, t, c), base)  # adapters off outside predict()
    finally:
        pair.remove()
    with torch.no_grad():
        assert torch.equal(m.predict_noise(x, t, c), base)
    LoraPair(m, LoraSettings()).remove()  # the names are free again after remove()


def _trained(model, settings, cond, null):
    pair = LoraPair(model, settings)
    try:
        pair.train_step(SOURCE, torch.ones(2, 4, 16, 16), cond, null_cond=null, generator=torch.Generator().manual_seed(0))
        return [p.detach().clone() for p in pair.params[SOURCE]], pair.optimizers[SOURCE]
    finally:
        pair.remove()


def test_condition_dropout_trains_on_the_empty_prompt(tiny_model):
    m = tiny_model
    cond, null = m.encode_prompt("a red cube").expand(2, -1, -1), m.null_condition()
    always, optimizer = _trained(m, LoraSettings(learning_rate=1e-2, condition_dropout=1.0), cond, null)
    on_null, _ = _trained(m, LoraSettings(learning_rate=1e-2, condition_dropout=1.0), null.expand(2, -1, -1), null)
    never, _ = _trained(m, LoraSettings(learning_rate=1e-2, condition_dropout=0.0), cond, null)
    assert all(torch.equal(a, b) for a, b in zip(always, on_null))  # every condition became the empty one
    assert any(not torch.allclose(a, b) for a, b in zip(always, never))
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.99) and group["eps"] == 1e-15  # ProlificDreamer's
