"""PIVA's batched calls (peft mixed-adapter rows) against the one-call-per-adapter reference.

:class:`PIVAUnbatched` is the computation as it was before the batching (the base pair, psi and phi
predictions one call each, their training steps one forward and backward each). Both run from the
same seeded adapters on the same inputs and generators, so gradients, losses and the adapter
weights after the updates must agree up to float rounding (batched kernels sum in another order).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from backend.diffusion.lora import SOURCE, TARGET, AdapterBatch, LoraPair, LoraSettings
from backend.diffusion.model import DiffusionModel
from backend.editing.base import MethodInputs
from backend.editing.piva import PAPER, PIVA, PIVAConfig, PIVAUnbatched
from tests.backend.editing.standin import NULL, SRC, TGT, LinearPredictor

SHAPE = (2, 3, 4, 4)


def standin_inputs(step: int, *, control: bool = False, source_control: bool = False) -> MethodInputs:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(SHAPE, generator=g)
    source = torch.randn(SHAPE, generator=g)
    depth = torch.rand(SHAPE[0], 3, 4, 4, generator=g)
    return MethodInputs(
        x=x.requires_grad_(True), source=source, cond_src=SRC, cond_tgt=TGT, cond_null=NULL,
        step=step, total_steps=10, generator=torch.Generator().manual_seed(step),
        control=depth if control else None, source_control=depth.flip(0) if source_control else None,
    )


def run(method: PIVA, make_inputs: Any, steps: int) -> list[tuple[torch.Tensor, dict[str, float]]]:
    initial = [p.detach().clone() for name in (SOURCE, TARGET) for p in method.adapters.params[name]]
    out = []
    for step in range(steps):
        result = method.step(make_inputs(step))
        out.append((result.grad, result.losses))
    # the adapters were updated, so comparing them afterwards is not comparing two untouched adapters
    after = [p for name in (SOURCE, TARGET) for p in method.adapters.params[name]]
    assert any(not torch.equal(p, q) for p, q in zip(initial, after)), "the adapters never moved"
    return out


def assert_same_runs(batched: PIVA, reference: PIVA, results: list, expected: list, *, rtol: float, atol: float) -> None:
    for step, ((grad, losses), (grad_ref, losses_ref)) in enumerate(zip(results, expected)):
        torch.testing.assert_close(grad, grad_ref, rtol=rtol, atol=atol, msg=lambda m: f"step {step} gradient: {m}")
        assert losses.keys() == losses_ref.keys()
        for key in losses:
            assert losses[key] == pytest.approx(losses_ref[key], rel=rtol * 10, abs=atol), (step, key)
    for name in (SOURCE, TARGET):
        for p, q in zip(batched.adapters.params[name], reference.adapters.params[name], strict=True):
            torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=lambda m: f"adapter {name}: {m}")


CASES = {
    "default (x_hat_t)": (dict(), dict()),
    "paper shortcut": (dict(use_source_latent=False), dict()),
    "depth on the adapters": (dict(), dict(control=True, source_control=True)),
    "depth on base and adapters, shortcut": (dict(use_source_latent=False, control_base=True), dict(control=True)),
    "source depth only (unbatched training)": (dict(), dict(source_control=True)),
    "two adapter steps and a warm-up": (dict(adapter_steps=2, adapter_warmup_steps=2), dict()),
    "sigma2, no dropout": (dict(weighting="sigma2", lora_condition_dropout=0.0), dict()),
}


@pytest.mark.parametrize("fused_call", ["fused", "separate"])
@pytest.mark.parametrize("case", list(CASES))
def test_batched_piva_matches_the_unbatched_reference_on_the_standin(case, fused_call):
    config, inputs_kw = CASES[case]
    config = dict(lora_learning_rate=1e-2, fused_call=fused_call, **config)
    batched, reference = (cls(PIVAConfig(**config), LinearPredictor()) for cls in (PIVA, PIVAUnbatched))
    make = lambda step: standin_inputs(step, **inputs_kw)  # noqa: E731
    results, expected = run(batched, make, 4), run(reference, make, 4)
    assert_same_runs(batched, reference, results, expected, rtol=1e-5, atol=1e-6)


def test_batched_piva_makes_one_base_call_one_adapter_call_and_one_training_pass():
    B = SHAPE[0]
    batched, reference = (cls(PIVAConfig(fused_call="separate"), LinearPredictor()) for cls in (PIVA, PIVAUnbatched))
    batched.step(standin_inputs(0, control=True))
    reference.step(standin_inputs(0, control=True))
    assert batched.model.calls == [4 * B, 2 * B, 2 * B]
    assert reference.model.calls == [4 * B, B, B, B, B]


@pytest.mark.parametrize("adapter_steps, calls", [(1, [8]), (2, [8, 2])])
def test_fused_piva_makes_one_call(adapter_steps, calls):
    """Fused: base rows, prediction rows and the first adapter step in one call; a second adapter
    step is a training pass of its own."""
    B = SHAPE[0]
    method = PIVA(PIVAConfig(adapter_steps=adapter_steps, fused_call="fused"), LinearPredictor())
    result = method.step(standin_inputs(0, control=True))
    assert method.model.calls == [c * B for c in calls]
    assert {"lora_psi", "lora_phi"} <= result.losses.keys()
    frozen = PIVA(PIVAConfig(train_adapters=False), LinearPredictor())
    frozen.step(standin_inputs(1, control=True))
    assert frozen.model.calls == [4 * B, 2 * B]  # nothing to train: the predictions alone, no graph


def test_auto_fuses_on_the_cpu_only_for_a_full_size_unet(monkeypatch):
    """auto decides by the UNet's size: a call of a small UNet costs its rows (separate is faster),
    one of SD's costs its weights (fused is faster); measured in docs/RESULTS.md."""
    x = torch.zeros(SHAPE)
    small = PIVA(PIVAConfig(), LinearPredictor())
    assert not small._fuses(x)
    monkeypatch.setattr("backend.editing.piva.FUSED_MIN_PARAMETERS", 16)  # the stand-in's 4x4 Linear
    large = PIVA(PIVAConfig(), LinearPredictor())
    assert large._fuses(x)
    assert not PIVA(PIVAConfig(train_adapters=False), LinearPredictor())._fuses(x)  # nothing to train


def test_fused_call_names_its_choices():
    with pytest.raises(ValueError, match="fused_call must be one of auto, fused, separate"):
        PIVA(PIVAConfig(fused_call="always"), LinearPredictor())


@pytest.fixture
def sd_pair(tiny_model):
    """Two loads of the tiny SD-style model (UNet + ControlNet): each method injects its own adapters."""
    load = lambda: DiffusionModel.load(  # noqa: E731
        str(tiny_model), controlnet=str(tiny_model / "controlnet"), device=torch.device("cpu"), dtype=torch.float32
    )
    return load(), load()


def sd_inputs(model: DiffusionModel, step: int) -> MethodInputs:
    g = torch.Generator().manual_seed(200 + step)
    image, source_image = torch.rand(2, 1, 3, 32, 32, generator=g)
    with torch.no_grad():
        source = model.encode_images(source_image)
    return MethodInputs(
        x=model.encode_images(image.requires_grad_(True)), source=source,
        cond_src=model.encode_prompt("a red cube"), cond_tgt=model.encode_prompt("a blue cube"),
        cond_null=model.encode_prompt(""), step=step, total_steps=10,
        control=torch.rand(1, 3, 32, 32, generator=g), source_control=torch.rand(1, 3, 32, 32, generator=g),
        generator=torch.Generator().manual_seed(step),
    )


@pytest.mark.parametrize("fused_call", ["fused", "separate"])
@pytest.mark.parametrize("preset", ["default", "paper"])
def test_batched_piva_matches_the_reference_through_a_diffusers_unet_and_controlnet(sd_pair, preset, fused_call):
    """The real path: peft's LoRA layers in a diffusers UNet's attention, the ControlNet on the
    adapters (fused: on the adapter rows of a call whose base rows take none)."""
    config = {**(PAPER if preset == "paper" else {}), "lora_learning_rate": 1e-2, "fused_call": fused_call}
    (m1, m2) = sd_pair
    batched, reference = PIVA(PIVAConfig(**config), m1), PIVAUnbatched(PIVAConfig(**config), m2)
    try:
        results = run(batched, lambda s: sd_inputs(m1, s), 3)
        expected = run(reference, lambda s: sd_inputs(m2, s), 3)
        assert_same_runs(batched, reference, results, expected, rtol=1e-4, atol=1e-5)
    finally:
        batched.close()
        reference.close()
    assert not any("lora_" in n for n, _ in m1.unet.named_parameters())


def test_mixed_rows_are_the_single_adapter_calls(sd_pair):
    model, _ = sd_pair
    pair = LoraPair(model, LoraSettings(learning_rate=1e-2))
    try:
        g = torch.Generator().manual_seed(0)
        x, c, depth = torch.randn(2, 4, 16, 16, generator=g), model.encode_prompt("a red cube"), torch.rand(2, 3, 32, 32, generator=g)
        for _ in range(2):  # move both adapters off the base model, differently
            pair.train_steps(
                [AdapterBatch(SOURCE, x, c.expand(2, -1, -1), depth), AdapterBatch(TARGET, -x, c.expand(2, -1, -1), depth)],
                generator=g,
            )
        t = torch.tensor([300, 600, 300])
        xs, cs, ds = torch.cat([x, x[:1]]), c.expand(3, -1, -1), torch.cat([depth, depth[:1]])
        mixed = pair.predict_rows([SOURCE, TARGET, None], xs, t, cs, control=ds)
        torch.testing.assert_close(mixed[0:1], pair.predict(SOURCE, xs[0:1], t[0:1], cs[0:1], control=ds[0:1]))
        torch.testing.assert_close(mixed[1:2], pair.predict(TARGET, xs[1:2], t[1:2], cs[1:2], control=ds[1:2]))
        with torch.no_grad():
            base = model.predict_noise(xs[2:], t[2:], cs[2:], control=ds[2:])
        torch.testing.assert_close(mixed[2:], base)
        assert not torch.allclose(mixed[0:1], base[0:1])  # the adapters did move
        with pytest.raises(ValueError, match="at most once"):
            pair.train_steps([AdapterBatch(SOURCE, x, c.expand(2, -1, -1)), AdapterBatch(SOURCE, x, c.expand(2, -1, -1))])
        with pytest.raises(ValueError, match="control for every adapter"):
            pair.train_steps([AdapterBatch(SOURCE, x, c.expand(2, -1, -1), depth), AdapterBatch(TARGET, x, c.expand(2, -1, -1))])
        with pytest.raises(ValueError, match="unknown adapter"):
            pair.predict_rows(["chi", None], x, t[:2], c.expand(2, -1, -1))
        with torch.no_grad():  # outside the mixed call the model is the pretrained one again
            torch.testing.assert_close(model.predict_noise(xs[2:], t[2:], cs[2:], control=ds[2:]), base)
    finally:
        pair.remove()


def test_controlled_rows_are_the_calls_of_their_own_kind(sd_pair):
    """predict_noise(controlled=): the ControlNet on some rows of a call, each row as in a call of its kind."""
    model, _ = sd_pair
    g = torch.Generator().manual_seed(3)
    x, depth = torch.randn(3, 4, 16, 16, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    t, c = torch.tensor([100, 500, 900]), model.encode_prompt("a red cube").expand(3, -1, -1)
    with torch.no_grad():
        mixed = model.predict_noise(x, t, c, control=depth, controlled=torch.tensor([True, False, True]))
        with_depth = model.predict_noise(x[[0, 2]], t[[0, 2]], c[:2], control=depth)
        plain = model.predict_noise(x[1:2], t[1:2], c[:1])
    torch.testing.assert_close(mixed[[0, 2]], with_depth, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[1:2], plain, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(with_depth[:1], model.predict_noise(x[:1], t[:1], c[:1]).detach(), atol=1e-4)
    with pytest.raises(ValueError, match="2 controlled rows but 1 control images"):
        model.predict_noise(x, t, c, control=depth[:1], controlled=torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match=r"controlled must be a \[3\] bool mask"):
        model.predict_noise(x, t, c, control=depth, controlled=torch.tensor([1, 0, 1]))


def test_the_fused_call_costs_more_flops_in_fewer_calls(sd_pair):
    """Its backward runs over every row: the price of one call instead of three (PIVAConfig.fused_call)."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for model, mode in zip(sd_pair, ("fused", "separate")):
        method = PIVA(PIVAConfig(fused_call=mode), model)
        try:
            method.step(sd_inputs(model, 0))  # first step: Adam state, kernel choice
            counter = FlopCounterMode(display=False)
            with counter:
                method.step(sd_inputs(model, 1))
            flops[mode] = counter.get_total_flops()
        finally:
            method.close()
    assert flops["fused"] > 1.1 * flops["separate"]
