"""What every editing method shares: the model protocol, the inputs of a step, the gradient
injection convention, the weighting w(t), the batched guided pair and small diffusion helpers.

Each method file (sds, dds, pds, ssd, piva) imports only from this module and from ``schedule``,
never from a sibling method. The conventions, and the pitfalls of the reference code they avoid,
are written up in docs/methods.md ("Shared conventions"):

* Classifier-free guidance in the diffusers convention: ``CFG_s = e_u + s * (e_c - e_u)``; the
  unconditional branch ``e_u`` is conditioned on :attr:`MethodInputs.cond_uncond`: the negative
  prompt's embedding when the job has one, else the empty prompt's (``cond_null``).
* Source and target branches share the same noise ``eps`` and the same timestep ``t``.
* Noise predictions are taken under ``torch.no_grad`` (the U-Net Jacobian is dropped, as in SDS).
* Every gradient passes through ``nan_to_num`` before it is injected.
* **Gradient injection**: ``target = (x - grad).detach()``,
  ``loss = 0.5 * ((x - target) ** 2).sum() / B``, hence ``d loss / d x = grad / B``: exactly
  ``grad`` for a batch of one, the batch mean of per-sample sums otherwise. No mean over pixels, so
  the learning rate means the same thing at every resolution (the reference repositories mix sum
  and mean reductions, 16384x apart for 4x64x64 latents).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from backend.editing.schedule import sample_timesteps


class NoisePredictor(Protocol):
    """A frozen epsilon-prediction model (``DiffusionModel`` or the 2D toy model of bench/toy2d.py)."""

    alphas_cumprod: Tensor
    """[T] float32 alpha_bar_t, on the device of the inputs."""
    lora_target: torch.nn.Module
    """Module PIVA injects its LoRA adapters into."""
    lora_target_modules: tuple[str, ...]
    """Names of the sub-modules of ``lora_target`` that get LoRA."""

    def predict_noise(
        self, x_t: Tensor, t: Tensor, cond: Tensor, *, control: Tensor | None = None
    ) -> Tensor:  # x_t [B, ...], t [B], cond [B, ...] -> eps [B, ...] float32
        ...


@dataclass
class MethodInputs:
    """Everything one editing step needs. Embeddings have a leading batch dim of 1 or B."""

    x: Tensor
    """[B, C, h, w] current render (latents), differentiable w.r.t. the edited parameters."""
    cond_src: Tensor
    """[1 or B, L, D] embedding of the source prompt."""
    cond_tgt: Tensor
    """[1 or B, L, D] embedding of the target prompt."""
    cond_null: Tensor
    """[1 or B, L, D] embedding of the empty prompt: CFG's unconditional branch when there is no
    negative prompt, and always the condition PIVA's adapters are trained on when a sample's
    condition is dropped (unconditional training is with the empty prompt)."""
    step: int
    """0-based index of this step in the edit."""
    total_steps: int
    """Number of steps of the whole edit (timestep schedules are tied to it)."""
    source: Tensor | None = None
    """[B, C, h, w] the ORIGINAL render at the same camera, detached (DDS, PDS, SSD, PIVA's psi)."""
    control: Tensor | None = None
    """[B, 3, H, W] depth of the current render in [0, 1] for ControlNet paths, or None."""
    source_control: Tensor | None = None
    """[B, 3, H, W] depth of the source render (PIVA trains psi on it); None = ``control``."""
    generator: torch.Generator | None = None
    """Source of the step's noise and timesteps (on the device of ``x``); None = global RNG."""
    cond_negative: Tensor | None = None
    """[1 or B, L, D] embedding of the negative prompt, or None (no negative prompt: the empty one)."""

    @property
    def cond_uncond(self) -> Tensor:
        """[1 or B, L, D] the condition of CFG's unconditional branch: the negative prompt's
        embedding when given, else the empty prompt's (diffusers' ``negative_prompt`` semantics)."""
        return self.cond_negative if self.cond_negative is not None else self.cond_null


@dataclass
class StepResult:
    """What a method returns: backpropagate ``loss``; ``grad`` and ``losses`` are for logs and tests."""

    loss: Tensor
    """Scalar whose gradient w.r.t. ``inputs.x`` is ``grad / B`` (see the module docstring)."""
    grad: Tensor
    """[B, C, h, w] the injected gradient (finite, detached)."""
    losses: dict[str, float] = field(default_factory=dict)
    """Named scalars for progress events (gradient norm, timestep, LoRA losses...)."""


def injection_loss(x: Tensor, grad: Tensor) -> Tensor:
    """Scalar loss with d loss / d x == grad / B (the shared convention of all methods)."""
    target = (x - grad).detach()
    return 0.5 * ((x - target) ** 2).sum() / x.shape[0]


def expand(t: Tensor, batch: int) -> Tensor:
    """Repeat a [1, ...] conditioning tensor to [batch, ...]; a [batch, ...] one is returned as is."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] != 1:
        raise ValueError(f"conditioning has batch {t.shape[0]}, expected 1 or {batch}")
    return t.expand(batch, *t.shape[1:])


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """[B] -> [B, 1, ..., 1] broadcastable against ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def add_noise(x0: Tensor, eps: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """Forward process x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps (DDPM eq. 4)."""
    a = per_sample(alphas_cumprod[t], x0)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * eps


def cfg(e_uncond: Tensor, e_cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance, diffusers convention: e_u + s * (e_c - e_u)."""
    return e_uncond + scale * (e_cond - e_uncond)


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)


WEIGHTINGS = ("sigma2", "one")
"""Names of the per-timestep weightings w(t) accepted by :func:`weight`."""


def weight(kind: str, alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """[B] w(t): ``sigma2`` = 1 - alpha_bar_t (threestudio's SDS, PIVA), ``one`` = 1 (DDS, PDS)."""
    if kind == "sigma2":
        return 1.0 - alphas_cumprod[t]
    if kind == "one":
        return torch.ones_like(alphas_cumprod[t])
    raise ValueError(f"unknown weighting {kind!r}; allowed: {', '.join(WEIGHTINGS)}")


def guided_pair(
    model: NoisePredictor, x_t: Tensor, xs_t: Tensor, t: Tensor, inputs: MethodInputs, scale: float
) -> tuple[Tensor, Tensor]:  # x_t, xs_t [B, ...], t [B] -> (CFG_tgt, CFG_src), each [B, ...]
    """CFG_s(x_t, c_tgt) and CFG_s(xs_t, c_src) from ONE UNet call of 4 (DDS, PDS, PIVA with x_hat_t).

    The batch is ``[xs_t | uncond, xs_t | src, x_t | uncond, x_t | tgt]``, all at the same ``t``;
    ``uncond`` is :attr:`MethodInputs.cond_uncond` (the negative prompt, else the empty one).
    """
    B = x_t.shape[0]
    null, src, tgt = (expand(c, B) for c in (inputs.cond_uncond, inputs.cond_src, inputs.cond_tgt))
    with torch.no_grad():
        e = model.predict_noise(
            torch.cat([xs_t, xs_t, x_t, x_t]),
            torch.cat([t, t, t, t]),
            torch.cat([null, src, null, tgt]),
        )
    es_u, es_c, et_u, et_c = e.chunk(4)
    return cfg(et_u, et_c, scale), cfg(es_u, es_c, scale)


class EditMethod(ABC):
    """One editing loss. Subclasses implement :meth:`compute_gradient` (one paper equation)."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    """Named sets of config values (``method_params: {"preset": NAME}``), e.g. PIVA's ``paper``."""

    def __init__(self, config: Any, model: NoisePredictor) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.model = model

    @abstractmethod
    def compute_gradient(self, inputs: MethodInputs) -> tuple[Tensor, dict[str, float]]:
        """Return the gradient w.r.t. ``inputs.x`` ([B, C, h, w], no graph) and named scalars."""

    def after_step(self, inputs: MethodInputs) -> dict[str, float]:
        """Hook run after the gradient is computed (PIVA trains its adapters here)."""
        return {}

    def step(self, inputs: MethodInputs) -> StepResult:
        """Compute the gradient, make it finite, wrap it in the injection loss, run the hook."""
        grad, losses = self.compute_gradient(inputs)
        grad = torch.nan_to_num(grad.detach().float(), nan=0.0, posinf=0.0, neginf=0.0).to(inputs.x.dtype)
        loss = injection_loss(inputs.x, grad)
        losses = {"grad_norm": float(grad.norm()), **losses}
        losses.update(self.after_step(inputs))
        return StepResult(loss=loss, grad=grad, losses=losses)

    def timestep_and_noise(self, inputs: MethodInputs, x: Tensor) -> tuple[Tensor, Tensor]:
        """This step's timesteps t [B] from the config's schedule, then the noise eps (shaped like
        ``x``) that every branch of the method shares, both drawn from ``inputs.generator``."""
        T = self.model.alphas_cumprod.shape[0]
        t = sample_timesteps(self.config, inputs.step, inputs.total_steps, T, x.shape[0], generator=inputs.generator, device=x.device)
        return t, randn_like(x, inputs.generator)

    def close(self) -> None:
        """Undo what the method did to the model (PIVA removes its adapters)."""

    # checkpoints: methods with state (PIVA's adapters) override both
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name} has no state to load, got keys {sorted(state)}")

    def _need_source(self, inputs: MethodInputs) -> Tensor:
        if inputs.source is None:
            raise ValueError(f"{self.name} needs inputs.source (the original render at the same camera)")
        if inputs.source.shape != inputs.x.shape:
            raise ValueError(f"source shape {tuple(inputs.source.shape)} differs from x {tuple(inputs.x.shape)}")
        return inputs.source.detach().float()


def config_fields(config_class: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class)]
