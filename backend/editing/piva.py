"""PIVA: Preserving Identity with Variational score (Le, Pham et al., 2024), eq. 9 and Algorithm 1:

    grad = w(t) * [ CFG_s(x_t, c_tgt) - CFG_s(x_t, c_src)                   DDS, x_t in place of x_hat_t
                    + lambda * (e_psi(x_t, c_src) - e_phi(x_t, c_tgt)) ]     regulariser, CFG 1

then (Algorithm 1, last line) one diffusion-loss step of each adapter: psi on the ORIGINAL render
with the source prompt (eq. 7), phi on the EDITED render with the target prompt (eq. 8).

Choices where the paper is ambiguous (docs/methods.md, section PIVA, gives the reasons):

* w(t) = 1 by default, as DDS (measured: with the paper's sigma_t^2 = 1 - alpha_bar_t, appendix A,
  and the annealed schedule the steps are 2-5 times DDS's and the edit stops short; the ``paper``
  preset keeps sigma_t^2).
* Eq. 9 as written, with x_hat_t in the DDS term (``use_source_latent=True``, the default; a call
  of 4, needs the source render). The paper's experiments plug x_t in instead (section 3.2, the
  ``paper`` preset): both guided terms then see the same x_t, the unconditional prediction cancels,
  and the DDS part is s * (e(x_t, c_tgt) - e(x_t, c_src)), a cross-prompt term that never vanishes.
* psi and phi are two peft LoRA adapters on the one UNet (``backend.diffusion.lora``), initialised
  with B = 0, so at step 0 both ARE the pretrained model. The regulariser is then
  e(x_t, c_src) - e(x_t, c_tgt), NOT zero for different prompts (it is zero for equal prompts): at
  step 0 PIVA is DDS with the conditional delta scaled by (s - lambda) instead of s.
* Timesteps: ProlificDreamer's annealed schedule (t_max 0.98 -> 0.5 at 20% of the run), appendix A.
* Adapter training: t ~ U[0, T), w = 1, AdamW (betas 0.9/0.99, eps 1e-15) lr 1e-4, 10% of the
  conditions dropped to the empty prompt, one step each per edit step (ProlificDreamer).
* Negative prompt: it is the unconditional branch of the DDS term's CFG (``inputs.cond_uncond``;
  with the ``paper`` preset's x_t shortcut the unconditional prediction cancels, so it has no
  effect there). The adapters' condition dropout always uses the EMPTY prompt
  (``inputs.cond_null``): it is unconditional training, not guidance.
* 3D (appendix D.1): with ``inputs.control`` (depth) the adapters run on the ControlNet path; the
  base model does not, unless ``control_base``.

Batching (so that a step costs its FLOPs, not its number of calls): the base model's predictions are
one call (4 rows with x_hat_t, 2 with the shortcut), psi's and phi's predictions one call of peft's
mixed-adapter rows (``LoraPair.predict_rows``), merged with the base rows into a single call when
both take the same control input (no depth, or ``control_base`` with the shortcut), and the two
adapters' diffusion-loss steps one forward and backward pass (``LoraPair.train_steps``). With
``fused_call`` (the default on the CPU for a full-size UNet) all of it is ONE forward and backward pass
(``LoraPair.predict_rows_and_train``: the predictions use the pre-step adapters, as in sequence; the
ControlNet runs on the controlled rows only). Rows of a UNet batch never mix, so each grouping is
the one-call-per-adapter computation of :class:`PIVAUnbatched` (kept as the tests' and the
benchmark's reference) up to float rounding, with the same random draws.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from backend.diffusion.lora import BASE, SOURCE, TARGET, AdapterBatch, LoraPair, LoraSettings
from backend.editing.base import (
    EditMethod,
    MethodInputs,
    NoisePredictor,
    add_noise,
    cfg,
    expand,
    guided_pair,
    per_sample,
    weight,
)
from backend.editing.schedule import ScheduleConfig


@dataclass
class PIVAConfig(ScheduleConfig):
    """PIVA hyperparameters (paper appendix A; names match contract.EditSettings where shared)."""

    schedule: str = "annealed"
    """Timestep schedule (ProlificDreamer's annealed max t)."""
    guidance_scale: float = 7.5
    """CFG scale s of the pretrained model's DDS term."""
    lambda_identity: float = 0.4
    """lambda, weight of the regulariser (0.4 objects, 0.2 real scenes)."""
    weighting: str = "one"
    """w(t): ``one`` (as DDS; the product's default, measured: docs/methods.md) or ``sigma2`` =
    1 - alpha_bar_t (the paper's omega(t), the ``paper`` preset). With the annealed schedule
    ``sigma2`` makes PIVA's steps 2-5 times smaller than DDS's, and in 200 steps it under-edits."""
    lora_rank: int = 4
    """Rank of both adapters."""
    lora_alpha: float = 0.0
    """LoRA alpha; 0 = equal to the rank (update scale 1)."""
    lora_learning_rate: float = 1e-4
    """Adam learning rate of the adapters (separate from the field's or image's)."""
    lora_t_min: float = 0.0
    """Smallest adapter-training timestep, fraction of T."""
    lora_t_max: float = 1.0
    """Largest adapter-training timestep, fraction of T (exclusive)."""
    lora_seed: int = 0
    """Seed of the adapters' LoRA A initialisation (reproducible edits)."""
    lora_condition_dropout: float = 0.1
    """Probability that an adapter-training sample gets the empty prompt (ProlificDreamer: 0.1)."""
    adapter_steps: int = 1
    """Diffusion-loss steps of EACH adapter per edit step (Algorithm 1: 1); more lets the adapters
    keep up with the edit (each draws its own t and noise)."""
    train_adapters: bool = True
    """Update psi and phi after every step (Algorithm 1); False freezes them at the base model."""
    use_source_latent: bool = True
    """Use x_hat_t (the noised source render, same eps and t) in the DDS term, as eq. 9 writes it:
    a UNet call of 4 that needs ``inputs.source``. The paper's experiments plug in x_t instead
    (section 3.2; the ``paper`` preset), which leaves a cross-prompt term s (e(x_t, c_tgt) -
    e(x_t, c_src)) that never vanishes and saturates colours (docs/methods.md, PIVA); with x_hat_t
    the DDS term vanishes once the render matches the target as the source matched its prompt."""
    control_base: bool = False
    """Also feed ``inputs.control`` (depth) to the base model's DDS predictions."""
    adapter_warmup_steps: int = 0
    """Diffusion-loss steps of BOTH adapters on the source render (psi with the source prompt, phi
    with the target prompt) before the first edit step. Not in the paper: there psi = phi = the
    base model at step 0, so the regulariser starts as the base model's prompt delta
    e(x_t, c_src) - e(x_t, c_tgt), not zero; warmed up, both model the source and the regulariser
    starts near zero and then measures how far the edit has moved from it. 0 = the paper."""
    adapter_control: bool = True
    """Feed ``inputs.control`` (the rendered depth) to psi and phi through the ControlNet, as in the
    paper's 3D experiments (appendix D.1); False = plain LoRA adapters, as in its 2D experiments."""
    fused_call: str = "auto"
    """How a step's model calls are grouped (the results are the same up to float rounding):
    ``separate``: three calls, the base rows, the adapters' prediction rows (no graph) and their
    training rows (forward and backward); ``fused``: one forward and backward pass holding all of
    them (``LoraPair.predict_rows_and_train``); ``auto``: fused on the CPU with a UNet of at least
    ``FUSED_MIN_PARAMETERS``, separate otherwise. Fused costs fewer calls but more FLOPs (the
    backward runs over every row: 1.30x the TFLOP of separate), so it pays only where a call costs
    its weights more than its rows. Measured on 2 CPU cores at 64 px (docs/RESULTS.md): with
    SD 2.1-base (865 M) fused is 1.66x faster; with the embedded toy UNet (3.2 M) it is 1.36x
    slower; on a GPU at 512 px the step is compute-bound and separate is cheaper."""


FUSED_CALLS = ("auto", "fused", "separate")
"""Values of :attr:`PIVAConfig.fused_call`."""
FUSED_MIN_PARAMETERS = 100_000_000
"""``fused_call="auto"`` fuses on the CPU from this many UNet parameters (SD 2.1-base: 865 M;
the toy model: 3.2 M, where separate is faster)."""


PAPER: dict[str, object] = {
    "schedule": "annealed",
    "guidance_scale": 7.5,
    "lambda_identity": 0.4,
    "weighting": "sigma2",
    "lora_rank": 4,
    "lora_learning_rate": 1e-4,
    "use_source_latent": False,
    "adapter_steps": 1,
    "adapter_warmup_steps": 0,
    "adapter_control": True,
}
"""The paper's settings (appendix A, Algorithm 1, section 3.2's x_t shortcut): the ``paper`` preset."""


class PIVA(EditMethod):
    name = "piva"
    config_class = PIVAConfig
    presets = {"paper": PAPER}

    def __init__(self, config: PIVAConfig, model: NoisePredictor) -> None:
        super().__init__(config, model)
        self.adapters = LoraPair(
            model,
            LoraSettings(
                rank=config.lora_rank,
                alpha=float(config.lora_alpha or config.lora_rank),
                learning_rate=config.lora_learning_rate,
                t_min=config.lora_t_min,
                t_max=config.lora_t_max,
                seed=config.lora_seed,
                condition_dropout=config.lora_condition_dropout,
            ),
        )
        if config.adapter_steps < 0:
            raise ValueError(f"adapter_steps must be >= 0 (1 = the paper), got {config.adapter_steps}")
        if config.adapter_warmup_steps < 0:
            raise ValueError(f"adapter_warmup_steps must be >= 0 (0 = no warm-up, as in the paper), got {config.adapter_warmup_steps}")
        if config.fused_call not in FUSED_CALLS:
            raise ValueError(f"fused_call must be one of {', '.join(FUSED_CALLS)}, got {config.fused_call!r}")
        self.warmed_up = config.adapter_warmup_steps == 0
        self._fused_losses: tuple[float, float] | None = None
        """(loss_psi, loss_phi) of the adapter step the fused call of this step already made."""
        self._unet_parameters: int | None = None
        """Frozen parameters of the model's UNet (``fused_call="auto"`` decides by it), counted once."""

    @classmethod
    def beside(cls, method: "PIVA", **config_changes: Any) -> "PIVA":
        """This class's path on ``method``'s own model and adapters, with ``config_changes`` (one pair
        of adapters, so two paths can alternate on one UNet, step by step: ``bench/edit_step.py
        --unbatched`` / ``--separate``). Only ``method`` may be closed."""
        view = cls.__new__(cls)
        EditMethod.__init__(view, dataclasses.replace(method.config, **config_changes), method.model)
        view.adapters = method.adapters
        view.warmed_up = method.warmed_up
        view._fused_losses = None
        view._unet_parameters = None
        return view

    def warm_up(self, inputs: MethodInputs) -> dict[str, float]:
        """``adapter_warmup_steps`` steps of psi and phi on the source render (see the config)."""
        source = self._need_source(inputs)
        B = source.shape[0]
        c = self.config
        control = (inputs.source_control if inputs.source_control is not None else inputs.control) if c.adapter_control else None
        loss_psi = loss_phi = 0.0
        for _ in range(c.adapter_warmup_steps):
            loss_psi, loss_phi = self._train_pair(
                AdapterBatch(SOURCE, source, expand(inputs.cond_src, B), control),
                AdapterBatch(TARGET, source, expand(inputs.cond_tgt, B), control),
                inputs,
            )
        self.warmed_up = True
        return {"warmup_psi": loss_psi, "warmup_phi": loss_phi}

    def regulariser(self, x_t: Tensor, t: Tensor, inputs: MethodInputs) -> Tensor:  # x_t [B, ...], t [B] -> [B, ...]
        """e_psi(x_t, c_src) - e_phi(x_t, c_tgt), both at CFG 1 (appendix A), in one call of 2B rows."""
        B = x_t.shape[0]
        control = inputs.control if self.config.adapter_control else None
        e = self.adapters.predict_rows(
            [SOURCE] * B + [TARGET] * B,
            torch.cat([x_t, x_t]),
            torch.cat([t, t]),
            torch.cat([expand(inputs.cond_src, B), expand(inputs.cond_tgt, B)]),
            control=None if control is None else torch.cat([control, control]),
        )
        e_psi, e_phi = e.chunk(2)
        return e_psi - e_phi

    def compute_gradient(self, inputs: MethodInputs) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        if not self.warmed_up:
            self.warm_up(inputs)
        x = inputs.x.detach().float()
        ac = self.model.alphas_cumprod
        # 1. t (annealed) and eps, x_t (and x_hat_t, same eps and t) by the forward process
        t, eps = self.timestep_and_noise(inputs, x)
        x_t = add_noise(x, eps, t, ac)
        xs_t = add_noise(self._need_source(inputs), eps, t, ac) if c.use_source_latent else None
        # 2-3. DDS term and regulariser of eq. 9 (with the fused call, also Algorithm 1's first adapter step)
        if self._fuses(x):
            dds, reg = self._fused_step(x_t, xs_t, t, inputs)
        else:
            dds, reg = self._dds_and_regulariser(x_t, xs_t, t, inputs)
        grad = per_sample(weight(c.weighting, ac, t), x) * (dds + c.lambda_identity * reg)
        return grad, {"t": float(t.float().mean()), "reg_norm": float(reg.norm()), "dds_norm": float(dds.norm())}

    def _fuses(self, x: Tensor) -> bool:
        """Whether this step makes its predictions and its first adapter step in one call."""
        c = self.config
        if not (c.train_adapters and c.adapter_steps >= 1):
            return False
        if c.fused_call != "auto":
            return c.fused_call == "fused"
        if x.device.type != "cpu":
            return False
        if self._unet_parameters is None:
            self._unet_parameters = sum(p.numel() for p in self.model.lora_target.parameters() if not p.requires_grad)
        return self._unet_parameters >= FUSED_MIN_PARAMETERS

    def _base_rows(
        self, x_t: Tensor, xs_t: Tensor | None, inputs: MethodInputs
    ) -> tuple[list[Tensor], list[Tensor], Tensor | None]:  # -> (latents, conditions, control [kB, 3, H, W] or None)
        """The base model's rows of eq. 9: ``[xs_t | uncond, xs_t | src, x_t | uncond, x_t | tgt]``
        (as written, never controlled, as :func:`guided_pair`) or ``[x_t | src, x_t | tgt]`` (the
        shortcut, controlled with ``control_base``)."""
        B = x_t.shape[0]
        uncond, src, tgt = (expand(v, B) for v in (inputs.cond_uncond, inputs.cond_src, inputs.cond_tgt))
        if xs_t is not None:
            return [xs_t, xs_t, x_t, x_t], [uncond, src, uncond, tgt], None
        control = torch.cat([inputs.control] * 2) if self.config.control_base and inputs.control is not None else None
        return [x_t, x_t], [src, tgt], control

    def _dds_from_base(self, e_base: Tensor, shortcut: bool) -> Tensor:  # [kB, ...] -> [B, ...]
        s = self.config.guidance_scale
        if not shortcut:
            es_u, es_c, et_u, et_c = e_base.chunk(4)
            return cfg(et_u, et_c, s) - cfg(es_u, es_c, s)
        # same x_t in both branches: CFG_tgt - CFG_src = s (e_tgt - e_src), the uncond cancels
        e_src, e_tgt = e_base.chunk(2)
        return s * (e_tgt - e_src)

    def _fused_step(
        self, x_t: Tensor, xs_t: Tensor | None, t: Tensor, inputs: MethodInputs
    ) -> tuple[Tensor, Tensor]:  # as _dds_and_regulariser
        """The base rows, the adapters' prediction rows and Algorithm 1's first adapter step (the
        batches of :meth:`after_step`, same draws) in ONE forward and backward pass; the step's
        adapter losses are kept for :meth:`after_step`. Depth goes to the rows that take it only."""
        c = self.config
        B = x_t.shape[0]
        base_x, base_c, base_control = self._base_rows(x_t, xs_t, inputs)
        k = len(base_x)
        src, tgt = expand(inputs.cond_src, B), expand(inputs.cond_tgt, B)
        adapter_control = torch.cat([inputs.control] * 2) if c.adapter_control and inputs.control is not None else None
        controls = [v for v in (base_control, adapter_control) if v is not None]
        controlled = torch.tensor([base_control is not None] * (k * B) + [adapter_control is not None] * (2 * B))
        psi, phi = self._training_batches(inputs)
        e, losses = self.adapters.predict_rows_and_train(
            [BASE] * (k * B) + [SOURCE] * B + [TARGET] * B,
            torch.cat(base_x + [x_t, x_t]),
            t.repeat(k + 2),
            torch.cat(base_c + [src, tgt]),
            [psi, phi],
            control=torch.cat(controls) if controls else None,
            controlled=controlled,
            null_cond=inputs.cond_null,
            generator=inputs.generator,
        )
        self._fused_losses = (losses[SOURCE], losses[TARGET])
        e_psi, e_phi = e[k * B :].chunk(2)
        return self._dds_from_base(e[: k * B], xs_t is None), e_psi - e_phi

    def _dds_and_regulariser(
        self, x_t: Tensor, xs_t: Tensor | None, t: Tensor, inputs: MethodInputs
    ) -> tuple[Tensor, Tensor]:  # x_t, xs_t [B, ...] (xs_t None: the x_t shortcut), t [B] -> (DDS, reg) [B, ...]
        """The DDS term (base model, CFG s) and the regulariser (adapters, CFG 1) of eq. 9.

        Base rows: ``[xs_t | uncond, xs_t | src, x_t | uncond, x_t | tgt]`` (eq. 9 as written, never
        controlled, as :func:`guided_pair`) or ``[x_t | src, x_t | tgt]`` (the shortcut, controlled
        with ``control_base``); adapter rows ``[x_t | src]`` through psi, ``[x_t | tgt]`` through phi.
        One call when base and adapter rows take the same kind of control input, else two (the
        ControlNet runs on a whole batch or not at all)."""
        c = self.config
        B = x_t.shape[0]
        src, tgt = expand(inputs.cond_src, B), expand(inputs.cond_tgt, B)
        base_x, base_c, base_control = self._base_rows(x_t, xs_t, inputs)
        k = len(base_x)
        adapter_control = torch.cat([inputs.control] * 2) if c.adapter_control and inputs.control is not None else None
        adapter_rows = [SOURCE] * B + [TARGET] * B
        if (base_control is None) == (adapter_control is None):
            controls = None if base_control is None else torch.cat([base_control, adapter_control])
            e = self.adapters.predict_rows(
                [BASE] * (k * B) + adapter_rows,
                torch.cat(base_x + [x_t, x_t]),
                t.repeat(k + 2),
                torch.cat(base_c + [src, tgt]),
                control=controls,
            )
            e_base, e_adapters = e[: k * B], e[k * B :]
        else:
            with torch.no_grad():  # the adapters are off outside LoraPair's calls: the pretrained model
                e_base = self.model.predict_noise(torch.cat(base_x), t.repeat(k), torch.cat(base_c), control=base_control)
            e_adapters = self.adapters.predict_rows(
                adapter_rows, torch.cat([x_t, x_t]), t.repeat(2), torch.cat([src, tgt]), control=adapter_control
            )
        e_psi, e_phi = e_adapters.chunk(2)
        return self._dds_from_base(e_base, xs_t is None), e_psi - e_phi

    def after_step(self, inputs: MethodInputs) -> dict[str, float]:
        """Algorithm 1, last line: psi on the original render (eq. 7), phi on the edited one (eq. 8)."""
        if not self.config.train_adapters:
            return {}
        steps = self.config.adapter_steps
        loss_psi = loss_phi = 0.0
        if self._fused_losses is not None:  # the fused call made this step's first adapter step
            (loss_psi, loss_phi), self._fused_losses = self._fused_losses, None
            steps -= 1
        for _ in range(steps):
            loss_psi, loss_phi = self._train_pair(*self._training_batches(inputs), inputs)
        return {"lora_psi": loss_psi, "lora_phi": loss_phi}

    def _training_batches(self, inputs: MethodInputs) -> tuple[AdapterBatch, AdapterBatch]:
        """Algorithm 1's adapter batches: psi on the original render with the source prompt and its
        depth, phi on the edited render with the target prompt and its depth (no depth without
        ``adapter_control``)."""
        source = self._need_source(inputs)
        B = source.shape[0]
        use_control = self.config.adapter_control
        source_control = inputs.source_control if inputs.source_control is not None else inputs.control
        return (
            AdapterBatch(SOURCE, source, expand(inputs.cond_src, B), source_control if use_control else None),
            AdapterBatch(TARGET, inputs.x.detach(), expand(inputs.cond_tgt, B), inputs.control if use_control else None),
        )

    def _train_pair(self, psi: AdapterBatch, phi: AdapterBatch, inputs: MethodInputs) -> tuple[float, float]:
        """One diffusion-loss step of psi and of phi (random draws: psi's, then phi's); (loss_psi, loss_phi)."""
        kw: dict[str, Any] = {"null_cond": inputs.cond_null, "generator": inputs.generator}
        if (psi.control is None) != (phi.control is None):
            # a source depth without a render depth: the ControlNet cannot run on half a batch
            return (
                self.adapters.train_step(psi.name, psi.x0, psi.cond, control=psi.control, **kw),
                self.adapters.train_step(phi.name, phi.x0, phi.cond, control=phi.control, **kw),
            )
        losses = self.adapters.train_steps([psi, phi], **kw)
        return losses[SOURCE], losses[TARGET]

    def state_dict(self) -> dict[str, Any]:
        return {"adapters": self.adapters.state_dict(), "warmed_up": self.warmed_up}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adapters.load_state_dict(state["adapters"])
        self.warmed_up = bool(state.get("warmed_up", True))  # checkpoints from before the option were past step 0

    def close(self) -> None:
        """Remove the adapters from the model (the model is the pretrained one again)."""
        self.adapters.remove()


class PIVAUnbatched(PIVA):
    """PIVA with one model call per adapter, as it was before the batching: the REFERENCE the tests
    hold :class:`PIVA` to and ``bench/edit_step.py --unbatched`` measures it against. Not registered.

    The base model's pair (one call), psi's and phi's predictions (one call each), psi's and phi's
    training steps (one forward and backward each)."""

    name = "piva_unbatched"

    def _fuses(self, x: Tensor) -> bool:
        return False  # the reference never fuses

    def regulariser(self, x_t: Tensor, t: Tensor, inputs: MethodInputs) -> Tensor:
        B = x_t.shape[0]
        control = inputs.control if self.config.adapter_control else None
        e_psi = self.adapters.predict(SOURCE, x_t, t, expand(inputs.cond_src, B), control=control)
        e_phi = self.adapters.predict(TARGET, x_t, t, expand(inputs.cond_tgt, B), control=control)
        return e_psi - e_phi

    def _dds_and_regulariser(
        self, x_t: Tensor, xs_t: Tensor | None, t: Tensor, inputs: MethodInputs
    ) -> tuple[Tensor, Tensor]:
        c = self.config
        B = x_t.shape[0]
        if xs_t is not None:
            e_tgt, e_src = guided_pair(self.model, x_t, xs_t, t, inputs, c.guidance_scale)
            dds = e_tgt - e_src
        else:
            control = inputs.control if c.control_base else None
            with torch.no_grad():
                e = self.model.predict_noise(
                    torch.cat([x_t, x_t]),
                    torch.cat([t, t]),
                    torch.cat([expand(inputs.cond_src, B), expand(inputs.cond_tgt, B)]),
                    control=None if control is None else torch.cat([control, control]),
                )
            e_src, e_tgt = e.chunk(2)
            dds = c.guidance_scale * (e_tgt - e_src)
        return dds, self.regulariser(x_t, t, inputs)

    def _train_pair(self, psi: AdapterBatch, phi: AdapterBatch, inputs: MethodInputs) -> tuple[float, float]:
        kw: dict[str, Any] = {"null_cond": inputs.cond_null, "generator": inputs.generator}
        return (
            self.adapters.train_step(psi.name, psi.x0, psi.cond, control=psi.control, **kw),
            self.adapters.train_step(phi.name, phi.x0, phi.cond, control=phi.control, **kw),
        )
