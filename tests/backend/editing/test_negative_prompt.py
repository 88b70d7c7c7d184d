"""The negative prompt reaches the unconditional branch of every method's CFG, and only there:
PIVA's adapter dropout and SSD's cross-trajectory term keep the empty prompt."""

from __future__ import annotations

import pytest
import torch

from backend.editing.base import MethodInputs
from backend.editing.registry import build_method
from tests.backend.editing.standin import NULL, SRC, TGT, LinearPredictor

NEG = torch.tensor([[-0.3, 0.7]])
B = 2
SHAPE = (B, 3, 4, 4)


class RecordingPredictor(LinearPredictor):
    """The stand-in, keeping the conditioning of every predict_noise call."""

    def __init__(self) -> None:
        super().__init__()
        self.conds: list[torch.Tensor] = []

    def predict_noise(self, x_t, t, cond, *, control=None, controlled=None):
        self.conds.append(cond.detach().clone())
        return super().predict_noise(x_t, t, cond, control=control, controlled=controlled)


def rows(cond: torch.Tensor) -> list[str]:
    """Name each row of a conditioning batch: src, tgt, null or neg."""
    names = {"src": SRC, "tgt": TGT, "null": NULL, "neg": NEG}
    out = []
    for row in cond:
        match = [n for n, c in names.items() if torch.equal(row, c[0])]
        assert len(match) == 1, row
        out.append(match[0])
    return out


def run(method: str, negative: torch.Tensor | None, **params):
    model = RecordingPredictor()
    editor = build_method(method, model, params={"schedule": "uniform", "t_min": 0.5, "t_max": 0.5, **params})
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    inputs = MethodInputs(
        x=x.clone().requires_grad_(True), source=torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)),
        cond_src=SRC, cond_tgt=TGT, cond_null=NULL, cond_negative=negative,
        step=0, total_steps=10, generator=torch.Generator().manual_seed(0),
    )
    try:
        result = editor.step(inputs)
    finally:
        editor.close()
    return [rows(c) for c in model.conds], result.grad


def per_image(names: list[str]) -> list[str]:
    """[a, a, b, b, ...] (each name B times, as the batched calls lay them out) -> [a, b, ...]."""
    assert all(len(set(names[i:i + B])) == 1 for i in range(0, len(names), B)), names
    return names[::B]


EXPECTED = {
    # the first call's conditioning, one name per block of B samples, with a negative prompt
    "sds": ["neg", "tgt"],
    "dds": ["neg", "src", "neg", "tgt"],
    "pds": ["neg", "src", "neg", "tgt"],
    "ssd": ["src", "tgt", "neg", "null"],  # prompt enhancement takes it; the cross-trajectory term does not
    # without depth the DDS rows and the adapters' rows (psi: src, phi: tgt, CFG 1) share one call
    "piva": ["neg", "src", "neg", "tgt", "src", "tgt"],
}


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_the_negative_prompt_is_the_unconditional_branch(method):
    params = {"train_adapters": False} if method == "piva" else {}
    calls, grad_neg = run(method, NEG, **params)
    assert per_image(calls[0]) == EXPECTED[method]
    calls, grad_plain = run(method, None, **params)
    assert per_image(calls[0]) == [n.replace("neg", "null") for n in EXPECTED[method]]  # none: the empty prompt
    assert not torch.allclose(grad_neg, grad_plain)  # and it changes the edit


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_the_empty_negative_prompt_is_todays_behaviour(method):
    params = {"train_adapters": False} if method == "piva" else {}
    _, grad_none = run(method, None, **params)
    _, grad_empty = run(method, NULL, **params)  # the embedding of "" passed as the negative prompt
    torch.testing.assert_close(grad_none, grad_empty)


@pytest.mark.parametrize("fused_call", ["separate", "fused"])
def test_piva_adapter_dropout_stays_the_empty_prompt(fused_call):
    calls, _ = run("piva", NEG, lora_condition_dropout=1.0, fused_call=fused_call)
    if fused_call == "fused":  # one call: the predictions' rows, then the training rows
        (rows_of_call,) = calls
        guided_and_reg, train = rows_of_call[: 6 * B], rows_of_call[6 * B :]
    else:
        guided_and_reg, train = calls
    assert per_image(guided_and_reg) == EXPECTED["piva"]  # adapters at CFG 1: no uncond in their rows
    assert train == ["null"] * (2 * B)  # psi's and phi's rows, dropped: unconditional training


def test_piva_paper_shortcut_has_no_unconditional_branch():
    calls, grad_neg = run("piva", NEG, preset="paper", train_adapters=False)
    assert "neg" not in calls[0] and "null" not in calls[0]
    _, grad_plain = run("piva", None, preset="paper", train_adapters=False)
    torch.testing.assert_close(grad_neg, grad_plain)
