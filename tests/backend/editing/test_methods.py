"""Every method against its paper formula, with the closed-form stand-in predictor."""

from __future__ import annotations

import math

import pytest
import torch

from backend.editing.base import MethodInputs, cfg, injection_loss
from backend.editing.dds import DDS, DDSConfig
from backend.editing.pds import PDS, PDSConfig
from backend.editing.piva import PIVA, PIVAConfig
from backend.editing.sds import SDS, SDSConfig
from backend.editing.ssd import SSD, SSDConfig
from tests.backend.editing.standin import NULL, SRC, T, TGT, LinearPredictor, known

SHAPE = (2, 3, 4, 4)
T_FIXED = 500  # every test pins t with t_min = t_max = 0.5, so the first random draw is eps


def fixed_t(**kw):
    return dict(schedule="uniform", t_min=0.5, t_max=0.5, **kw)


def make_inputs(x=None, source=None, src=SRC, tgt=TGT, seed=0, step=0):
    g = torch.Generator().manual_seed(seed)
    if x is None:
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    if source is None:
        source = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    return MethodInputs(
        x=x.clone().requires_grad_(True), source=source, cond_src=src, cond_tgt=tgt, cond_null=NULL,
        step=step, total_steps=10, generator=g,
    )


def draws(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=g) for _ in range(n)]


def noised(x0, eps, t, ac):
    a = ac[t]
    return math.sqrt(a) * x0 + math.sqrt(1 - a) * eps


def tt(batch=SHAPE[0]):
    return torch.full((batch,), T_FIXED)


def e(x_t, c):
    return known(x_t, tt(), c.expand(SHAPE[0], -1))


def test_injection_loss_gradient_is_grad_over_batch():
    x = torch.randn(SHAPE, requires_grad=True)
    grad = torch.randn(SHAPE)
    injection_loss(x, grad).backward()
    torch.testing.assert_close(x.grad, grad / SHAPE[0])


def test_sds_matches_eq3():
    model = LinearPredictor()
    inputs = make_inputs()
    result = SDS(SDSConfig(**fixed_t(guidance_scale=20.0)), model).step(inputs)
    (eps,) = draws(1)
    ac = model.alphas_cumprod
    x_t = noised(inputs.x.detach(), eps, T_FIXED, ac)
    expected = (1 - ac[T_FIXED]) * (cfg(e(x_t, NULL), e(x_t, TGT), 20.0) - eps)
    torch.testing.assert_close(result.grad, expected)
    result.loss.backward()
    torch.testing.assert_close(inputs.x.grad, expected / SHAPE[0])
    assert model.calls == [2 * SHAPE[0]], "SDS must batch [uncond, cond] into one call"


def test_dds_matches_eq6_and_shares_noise():
    model = LinearPredictor()
    inputs = make_inputs()
    result = DDS(DDSConfig(**fixed_t()), model).step(inputs)
    (eps,) = draws(1)
    ac = model.alphas_cumprod
    x_t = noised(inputs.x.detach(), eps, T_FIXED, ac)
    xs_t = noised(inputs.source, eps, T_FIXED, ac)
    expected = cfg(e(x_t, NULL), e(x_t, TGT), 7.5) - cfg(e(xs_t, NULL), e(xs_t, SRC), 7.5)
    torch.testing.assert_close(result.grad, expected)
    assert model.calls == [4 * SHAPE[0]]


def test_dds_zero_for_equal_prompts_at_the_source():
    source = torch.randn(SHAPE)
    result = DDS(DDSConfig(), LinearPredictor()).step(make_inputs(x=source, source=source, src=SRC, tgt=SRC))
    assert result.grad.abs().max() == 0.0


def test_pds_matches_eq13():
    model = LinearPredictor()
    inputs = make_inputs()
    result = PDS(PDSConfig(**fixed_t(guidance_scale=7.5, grid_steps=500)), model).step(inputs)
    eps, eps_prev = draws(2)
    ac = model.alphas_cumprod.double()
    t, tp = T_FIXED, T_FIXED - 2  # grid of 500 on T = 1000: step 2
    a_t, a_p = ac[t], ac[tp]
    beta = 1 - a_t / ac[t - 1]  # the scheduler's single-step beta (the reference's)
    sigma = torch.sqrt((1 - a_p) / (1 - a_t) * beta)

    def z(x0, c):
        x0 = x0.double()
        x_t = noised(x0, eps.double(), t, ac)
        x_prev = noised(x0, eps_prev.double(), tp, ac)
        eh = cfg(e(x_t.float(), NULL), e(x_t.float(), c), 7.5).double()
        x0_hat = (x_t - torch.sqrt(1 - a_t) * eh) / torch.sqrt(a_t)
        mu = torch.sqrt(a_p) * beta / (1 - a_t) * x0_hat + torch.sqrt(1 - beta) * (1 - a_p) / (1 - a_t) * x_t
        return (x_prev - mu) / sigma

    expected = (z(inputs.x.detach(), TGT) - z(inputs.source, SRC)).float()
    torch.testing.assert_close(result.grad, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("t", [2, 100, 498, 980])
def test_pds_coefficients_are_the_references(t):
    """gamma, delta, sigma from diffusers' own scheduler tables (betas, alphas), as pds/pds.py reads them."""
    from diffusers import DDPMScheduler

    from backend.editing.pds import posterior_coefficients

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=T)
    tp = t - 2
    beta, alpha = scheduler.betas[t].double(), scheduler.alphas[t].double()
    a_t, a_p = scheduler.alphas_cumprod[t].double(), scheduler.alphas_cumprod[tp].double()
    expected = (a_p.sqrt() * beta / (1 - a_t), alpha.sqrt() * (1 - a_p) / (1 - a_t), ((1 - a_p) / (1 - a_t) * beta).sqrt())
    got = posterior_coefficients(scheduler.alphas_cumprod.float(), torch.tensor([t]), torch.tensor([tp]))
    for value, want in zip(got, expected):
        torch.testing.assert_close(value.double(), want.reshape(1), rtol=2e-4, atol=1e-7)
    # eq. 14: the coefficient psi(t) of (x_tgt - x_src) is present (zero with the effective beta)
    gamma, delta, sigma = (v.double() for v in got)
    psi = (a_p.sqrt() - gamma - delta * a_t.sqrt()) / sigma
    assert psi.abs().item() > 1e-3


def test_pds_pulls_towards_the_source_when_the_predictions_agree():
    """A predictor blind to x_t and prompt: DDS gives exactly 0, PDS the (x_tgt - x_src) term of eq. 14."""
    from backend.editing.pds import posterior_coefficients

    model = LinearPredictor()
    blind = torch.tensor([[0.0, 0.3]])  # eps = 0.3 t / T whatever x_t
    inputs, dds_inputs = make_inputs(src=blind, tgt=blind), make_inputs(src=blind, tgt=blind)
    inputs.cond_null = dds_inputs.cond_null = blind
    grad = PDS(PDSConfig(**fixed_t(guidance_scale=7.5)), model).step(inputs).grad
    dds = DDS(DDSConfig(**fixed_t()), model).step(dds_inputs).grad
    assert dds.abs().max() == 0.0
    ac = model.alphas_cumprod
    gamma, delta, sigma = posterior_coefficients(ac, torch.tensor([T_FIXED]), torch.tensor([T_FIXED - 2]))
    psi = (ac[T_FIXED - 2].sqrt() - gamma - delta * ac[T_FIXED].sqrt()) / sigma
    torch.testing.assert_close(grad, psi * (inputs.x.detach() - inputs.source), rtol=1e-3, atol=1e-4)


def test_ssd_matches_eq6_to_8():
    model = LinearPredictor()
    inputs = make_inputs()
    c = SSDConfig(**fixed_t())
    result = SSD(c, model).step(inputs)
    (eps,) = draws(1)
    ac = model.alphas_cumprod
    x_t = noised(inputs.x.detach(), eps, T_FIXED, ac)
    xs_t = noised(inputs.source, eps, T_FIXED, ac)
    expected = (
        c.w_prompt * (e(x_t, TGT) - e(x_t, SRC))
        + c.w_trajectory * (e(x_t, SRC) - e(xs_t, NULL))
        + c.w_enhance * (e(x_t, TGT) - e(x_t, NULL))
        + 0.075 * math.exp(T_FIXED / T) * (x_t - xs_t)
    )
    torch.testing.assert_close(result.grad, expected)
    assert model.calls == [4 * SHAPE[0]]


def test_ssd_timestep_decreases_linearly_over_the_run():
    method = SSD(SSDConfig(), LinearPredictor())
    ts = [method.step(make_inputs(step=s)).losses["t"] for s in (0, 9)]
    assert ts == [980.0, 20.0]


def test_piva_step0_is_eq9_with_adapters_equal_to_the_base_model():
    """The paper's shortcut (x_t in both DDS branches)."""
    model = LinearPredictor()
    inputs = make_inputs()
    method = PIVA(PIVAConfig(**fixed_t(train_adapters=False, use_source_latent=False, weighting="sigma2")), model)
    result = method.step(inputs)
    (eps,) = draws(1)
    ac = model.alphas_cumprod
    x_t = noised(inputs.x.detach(), eps, T_FIXED, ac)
    dds = 7.5 * (e(x_t, TGT) - e(x_t, SRC))  # CFG_tgt - CFG_src at one x_t: the uncond cancels
    reg = e(x_t, SRC) - e(x_t, TGT)  # psi = phi = base model at step 0 (LoRA B = 0)
    expected = (1 - ac[T_FIXED]) * (dds + 0.4 * reg)  # w(t) = sigma_t^2, the paper's
    torch.testing.assert_close(result.grad, expected)
    # the product's default w(t) = 1: the same bracket, unweighted
    default = PIVA(PIVAConfig(**fixed_t(train_adapters=False, use_source_latent=False)), model).step(make_inputs())
    torch.testing.assert_close(default.grad, dds + 0.4 * reg)
    # the regulariser is the base model's prompt delta at step 0, not zero (see piva.py)
    assert result.losses["reg_norm"] == pytest.approx(float(reg.norm()), rel=1e-5)


def test_piva_zero_gradient_for_equal_prompts_at_step0():
    # Step 0 of a real edit: the edited render IS the source render.
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    result = PIVA(PIVAConfig(), LinearPredictor()).step(make_inputs(x=x, source=x.clone(), src=SRC, tgt=SRC))
    assert result.grad.abs().max() == 0.0
    assert result.losses["reg_norm"] == 0.0
    # The paper's shortcut (x_t in both branches) is zero for equal prompts whatever the source.
    shortcut = PIVA(PIVAConfig(use_source_latent=False), LinearPredictor()).step(make_inputs(src=SRC, tgt=SRC))
    assert shortcut.grad.abs().max() == 0.0


def test_piva_regulariser_moves_after_adapter_updates():
    model = LinearPredictor()
    method = PIVA(PIVAConfig(**fixed_t(lora_learning_rate=1e-2)), model)
    inputs = make_inputs(src=SRC, tgt=SRC)
    x_t = torch.randn(SHAPE)
    before = method.regulariser(x_t, tt(), inputs)
    assert before.abs().max() == 0.0  # equal prompts, untouched adapters
    for step in range(3):
        losses = method.step(make_inputs(src=SRC, tgt=SRC, seed=step, step=step)).losses
    assert {"lora_psi", "lora_phi"} <= set(losses)
    after = method.regulariser(x_t, tt(), inputs)
    assert after.abs().max() > 1e-4, "psi (source renders) and phi (edited renders) must diverge"
    assert model.lin.weight.abs().max() == 0.0, "the base weights stay frozen"
    with torch.no_grad():
        torch.testing.assert_close(model.predict_noise(x_t, tt(), SRC.expand(2, -1)), known(x_t, tt(), SRC.expand(2, -1)))


def test_piva_state_dict_round_trip():
    model = LinearPredictor()
    method = PIVA(PIVAConfig(lora_learning_rate=1e-2), model)
    method.step(make_inputs())
    state = method.state_dict()
    x_t = torch.randn(SHAPE)
    ref = method.regulariser(x_t, tt(), make_inputs())
    method.step(make_inputs(seed=5))
    method.load_state_dict(state)
    torch.testing.assert_close(method.regulariser(x_t, tt(), make_inputs()), ref)


def test_nan_predictions_give_finite_gradients():
    nan = torch.tensor([[float("nan"), 0.0]])
    for method in (SDS(SDSConfig(), LinearPredictor()), DDS(DDSConfig(), LinearPredictor())):
        result = method.step(make_inputs(tgt=nan))
        assert torch.isfinite(result.grad).all() and torch.isfinite(result.loss)


def test_methods_needing_a_source_say_so():
    inputs = make_inputs()
    inputs.source = None
    with pytest.raises(ValueError, match="needs inputs.source"):
        DDS(DDSConfig(), LinearPredictor()).step(inputs)


class ControlRecorder(LinearPredictor):
    """Records, for every call, which rows were given a depth control image."""

    def __init__(self) -> None:
        super().__init__()
        self.with_control: list[list[bool]] = []

    def predict_noise(self, x_t, t, cond, *, control=None, controlled=None):
        rows = [control is not None] * x_t.shape[0] if controlled is None else controlled.tolist()
        self.with_control.append(rows)
        return super().predict_noise(x_t, t, cond, control=control, controlled=controlled)


@pytest.mark.parametrize("fused_call", ["separate", "fused"])
@pytest.mark.parametrize("adapter_control", [True, False])
def test_piva_adapters_get_the_depth_only_on_the_controlnet_path(adapter_control, fused_call):
    model = ControlRecorder()
    inputs = make_inputs()
    inputs.control = torch.rand(SHAPE[0], 3, 4, 4)
    method = PIVA(PIVAConfig(**fixed_t(adapter_control=adapter_control, fused_call=fused_call)), model)
    method.step(inputs)
    B = SHAPE[0]
    d = adapter_control
    if fused_call == "fused":
        # one call: the base model's DDS rows (never controlled unless control_base), psi's and
        # phi's prediction rows, their training rows; the depth on the adapters' rows only
        assert model.with_control == [[False] * (4 * B) + [d] * (4 * B)]
    elif adapter_control:
        # call 1: the base model's DDS call of 4; call 2: psi and phi predictions in one call;
        # call 3: their training steps, one forward and backward
        assert model.with_control == [[False] * (4 * B), [True] * (2 * B), [True] * (2 * B)]
    else:
        # nobody takes the depth: base and adapter predictions share one call, then the training
        assert model.with_control == [[False] * (6 * B), [False] * (2 * B)]


def test_piva_warmup_brings_the_step0_regulariser_towards_zero():
    """Warmed up on the source render, psi (c_src) and phi (c_tgt) model the same images."""
    x_t = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    source = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    cold = PIVA(PIVAConfig(**fixed_t(lora_learning_rate=1e-2)), LinearPredictor())
    before = cold.regulariser(x_t, tt(), make_inputs(source=source)).norm()
    warm = PIVA(PIVAConfig(**fixed_t(lora_learning_rate=1e-2, adapter_warmup_steps=200)), LinearPredictor())
    assert not warm.warmed_up
    losses = warm.warm_up(make_inputs(source=source))
    assert warm.warmed_up and {"warmup_psi", "warmup_phi"} <= set(losses)
    after = warm.regulariser(x_t, tt(), make_inputs(source=source)).norm()
    # (the stand-in's prompt bias b_c * t / T is out of reach of its bias-free LoRA: not all of it goes)
    assert after < 0.7 * before, (float(before), float(after))
    # the first step warms up by itself, once; a checkpoint keeps that it happened
    fresh = PIVA(PIVAConfig(**fixed_t(adapter_warmup_steps=3, fused_call="separate")), model := LinearPredictor())
    fresh.step(make_inputs(source=source))
    # 3 batched warm-up steps (psi and phi together), the step's one call, its batched training step
    assert fresh.warmed_up and model.calls == [2 * SHAPE[0]] * 3 + [6 * SHAPE[0], 2 * SHAPE[0]]
    restored = PIVA(PIVAConfig(**fixed_t(adapter_warmup_steps=3)), LinearPredictor())
    restored.load_state_dict(fresh.state_dict())
    assert restored.warmed_up


def test_piva_negative_warmup_is_refused():
    with pytest.raises(ValueError, match="adapter_warmup_steps"):
        PIVA(PIVAConfig(adapter_warmup_steps=-1), LinearPredictor())
