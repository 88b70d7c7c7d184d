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
