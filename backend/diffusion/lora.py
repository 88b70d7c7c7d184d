"""PIVA's two LoRA adapters on one frozen denoiser: psi (source model) and phi (target model).

Both are peft LoRA adapters on the attention projections (``to_k, to_q, to_v, to_out.0``) of the
SAME network, switched per call, so no extra copy of the UNet is loaded (methods.md point 10).
``init_lora_weights=True`` sets every LoRA ``B`` to zero: at step 0 both adapters ARE the
pretrained model. Their weights, optimizer state and loss are float32 while the UNet may run in
fp16/bf16 (peft casts the activations to the adapter's dtype).

Training (PIVA eq. 7 and 8, with w(t) = 1, as in ProlificDreamer's LoRA step): one AdamW step
(ProlificDreamer's: betas 0.9/0.99, eps 1e-15) of
``|| e_adapter(sqrt(a_t) x0 + sqrt(1 - a_t) eps, t, c) - eps ||^2`` on DETACHED images ``x0``:
psi on renders of the original field/image with the source prompt, phi on renders of the edited
one with the target prompt. t ~ U[t_min, t_max) (ProlificDreamer: U[0, T)). Each sample's
condition is replaced by the empty prompt's with probability ``condition_dropout`` (10%, as
ProlificDreamer drops its LoRA's camera condition), so the adapters also learn the unconditional
prediction.

3D (appendix D.1): pass ``control`` (a depth image) to evaluate and train the adapters on the
ControlNet path; the LoRA sits on the UNet, the ControlNet only adds its residuals.

Batching (``predict_rows``, ``train_steps``): peft's mixed-adapter batches (``adapter_names=``, one
adapter name per row, ``"__base__"`` for the pretrained model) let psi, phi and the base model share
ONE UNet call. Each LoRA layer adds an adapter's update only to that adapter's rows, and the rows
of a UNet batch never mix (per-sample GroupNorm and attention), so row i of a mixed call is the
single-adapter call on row i, and a loss on psi's rows gives no gradient to phi (and vice versa).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from torch import Tensor

from backend.checkpoint import check_optimizer_state

if TYPE_CHECKING:
    from backend.editing.base import NoisePredictor

SOURCE = "psi"
"""Adapter that models renders of the ORIGINAL field (trained with the source prompt)."""
TARGET = "phi"
"""Adapter that models renders of the EDITED field (trained with the target prompt)."""
BASE = None
"""Row name of the pretrained model (no adapter) in :meth:`LoraPair.predict_rows`."""
_PEFT_BASE = "__base__"
"""peft's name for a row without adapter in a mixed-adapter batch."""


@dataclass
class LoraSettings:
    """Shape and training of the two adapters."""

    rank: int = 4
    """LoRA rank r (ProlificDreamer/PIVA: 4)."""
    alpha: float = 4.0
    """LoRA alpha; the update is scaled by alpha / rank (alpha = rank: scale 1, as diffusers' old LoRA)."""
    learning_rate: float = 1e-4
    """Adam learning rate of both adapters (PIVA appendix A: 1e-4, separate from the field's)."""
    t_min: float = 0.0
    """Smallest training timestep as a fraction of T."""
    t_max: float = 1.0
    """Largest training timestep as a fraction of T (exclusive)."""
    seed: int = 0
    """Seed of the LoRA ``A`` initialisation (``B`` starts at zero), so edits are reproducible."""
    condition_dropout: float = 0.1
    """Probability that a training sample's condition is the empty prompt's (ProlificDreamer: 0.1)."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas of both adapters (ProlificDreamer/threestudio)."""
    eps: float = 1e-15
    """AdamW epsilon of both adapters (ProlificDreamer/threestudio)."""


@dataclass
class AdapterBatch:
    """The rows one adapter trains on in a batched diffusion-loss step (:meth:`LoraPair.train_steps`)."""

    name: str
    """Adapter: ``SOURCE`` (psi) or ``TARGET`` (phi)."""
    x0: Tensor
    """[B, ...] detached images/latents the adapter should model."""
    cond: Tensor
    """[B, ...] their conditioning."""
    control: Tensor | None = None
    """[B, 3, H, W] depth images for the ControlNet path, or None."""


def _adapter_names_hook(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], *, adapter_names: list[str]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Forward pre-hook giving a LoRA layer peft's per-row ``adapter_names`` (as ``PeftModel`` does;
    a diffusers UNet with ``add_adapter`` has no such argument of its own)."""
    return args, {**kwargs, "adapter_names": adapter_names}


class LoraPair:
    """Two named LoRA adapters on ``model.lora_target`` with one Adam optimizer each."""

    def __init__(self, model: "NoisePredictor", settings: LoraSettings) -> None:
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.tuners_utils import BaseTunerLayer

        if settings.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {settings.rank}")
        if not 0.0 <= settings.condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout is a probability in [0, 1], got {settings.condition_dropout}")
        self.model = model
        self.settings = settings
        net = model.lora_target
        for name in (SOURCE, TARGET):
            config = LoraConfig(
                r=settings.rank,
                lora_alpha=settings.alpha,
                target_modules=list(model.lora_target_modules),
                init_lora_weights=True,
            )
            with warnings.catch_warnings():
                # two adapters on one model is the point here, not a mistake
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                if _is_diffusers_model(net):
                    net.add_adapter(config, adapter_name=name)  # diffusers ModelMixin
                else:
                    inject_adapter_in_model(config, net, adapter_name=name)
        self._layers = [m for m in net.modules() if isinstance(m, BaseTunerLayer)]
        if not self._layers:
            raise ValueError(
                f"no module of {type(net).__name__} matches LoRA targets {model.lora_target_modules}; "
                f"set lora_target_modules to names of its Linear layers"
            )
        self.params: dict[str, list[torch.nn.Parameter]] = {SOURCE: [], TARGET: []}
        for pname, p in net.named_parameters():
            if "lora_" not in pname:
                continue
            p.data = p.data.float()  # adapters train in fp32 whatever the UNet runs in
            for name in (SOURCE, TARGET):
                if f".{name}." in pname or pname.endswith(f".{name}"):
                    self.params[name].append(p)
        self._init_a(settings.seed)
        self.optimizers = {
            name: torch.optim.AdamW(
                self.params[name], lr=settings.learning_rate, betas=settings.betas, eps=settings.eps, fused=True
            )  # fused: one kernel for all of an adapter's tensors, not a handful of ops per tensor
            for name in (SOURCE, TARGET)
        }
        self._select(None)

    def _init_a(self, seed: int) -> None:
        """Re-draw every LoRA A from a seeded CPU generator (peft draws from the global RNG)."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name in (SOURCE, TARGET):
                for p in self.params[name]:
                    if p.dim() == 2 and not torch.all(p == 0):  # A (B is zero at init)
                        fresh = torch.empty(p.shape, dtype=torch.float32)
                        torch.nn.init.kaiming_uniform_(fresh, a=5**0.5, generator=generator)
                        p.copy_(fresh)

    # -- switching ----------------------------------------------------------------------------
    def _select(self, name: str | None) -> None:
        """Route calls through adapter ``name`` (None = the pretrained model alone)."""
        for layer in self._layers:
            if name is None:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(name)

    @contextmanager
    def active(self, name: str | None) -> Iterator[None]:
        """Within the block the model's predictions use adapter ``name``; afterwards the base model."""
        if name not in (SOURCE, TARGET, None):
            raise ValueError(f"unknown adapter {name!r}; allowed: {SOURCE!r}, {TARGET!r} or None")
        self._select(name)
        try:
            yield
        finally:
            self._select(None)

    @contextmanager
    def rows(self, names: Sequence[str | None]) -> Iterator[None]:
        """Within the block, row i of every model call goes through adapter ``names[i]`` (``BASE`` =
        None: the pretrained model); a call's batch must have ``len(names)`` rows (peft checks it in
        every layer). Both adapters are trainable inside (a mixed training step needs both)."""
        unknown = {n for n in names if n not in (SOURCE, TARGET, BASE)}
        if unknown:
            raise ValueError(f"unknown adapter(s) {sorted(map(str, unknown))}; allowed: {SOURCE!r}, {TARGET!r} or None (base)")
        adapter_names = [_PEFT_BASE if n is BASE else n for n in names]
        hook = partial(_adapter_names_hook, adapter_names=adapter_names)
        handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in self._layers]
        try:
            for layer in self._layers:
                layer.enable_adapters(True)
                layer.set_adapter([SOURCE, TARGET])  # active = trainable; the rows choose per sample
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._select(None)

    def predict(
        self, name: str, x_t: Tensor, t: Tensor, cond: Tensor, *, control: Tensor | None = None
    ) -> Tensor:  # [B, ...] float32 epsilon, no graph
        with torch.no_grad(), self.active(name):
            return self.model.predict_noise(x_t, t, cond, control=control)

    def predict_rows(
        self,
        names: Sequence[str | None],  # [N] adapter of each row (None = the pretrained model)
        x_t: Tensor,  # [N, ...]
        t: Tensor,  # [N]
        cond: Tensor,  # [N, ...]
        *,
        control: Tensor | None = None,  # [N, 3, H, W] (or [Nc, ...] with ``controlled``) or None
        controlled: Tensor | None = None,  # [N] bool: the rows that take ``control``; None = all
    ) -> Tensor:  # [N, ...] float32 epsilon, no graph
        """One model call whose rows go through different adapters (peft's mixed-adapter batch)."""
        if len(names) != x_t.shape[0]:
            raise ValueError(f"{len(names)} adapter names for a batch of {x_t.shape[0]} rows")
        kw = {} if controlled is None else {"controlled": controlled}
        with torch.no_grad(), self.rows(names):
            return self.model.predict_noise(x_t, t, cond, control=control, **kw)

    # -- training (eq. 7 and 8) ---------------------------------------------------------------
    def train_step(
        self,
        name: str,
        x0: Tensor,  # [B, ...] detached images/latents the adapter should model
        cond: Tensor,  # [B, ...] conditioning
        *,
        control: Tensor | None = None,
        null_cond: Tensor | None = None,  # [1 or B, ...] the empty prompt's conditioning, for dropout
        generator: torch.Generator | None = None,
    ) -> float:
        """One AdamW step of the diffusion loss of adapter ``name``; returns the loss value.

        With ``null_cond`` each sample's ``cond`` is replaced by it with probability
        ``condition_dropout``; without it there is no dropout."""
        x_t, t, eps, cond = self._noised(x0, cond, null_cond, generator)
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        with self.active(name):
            pred = self.model.predict_noise(x_t, t, cond, control=control)
            loss = torch.nn.functional.mse_loss(pred.float(), eps)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def train_steps(
        self,
        batches: Sequence[AdapterBatch],
        *,
        null_cond: Tensor | None = None,  # [1 or B, ...] the empty prompt's conditioning, for dropout
        generator: torch.Generator | None = None,
    ) -> dict[str, float]:
        """One AdamW step of each listed adapter from ONE forward and backward pass; returns each loss.

        The same as :meth:`train_step` for each batch in order (the same random draws from
        ``generator``, the same losses and updates): the loss is the sum of the adapters' mean
        losses, and each adapter's parameters get the gradient of its own rows only (see the
        module docstring). Each adapter at most once (two steps of one adapter are sequential);
        controls all given or all None (the ControlNet runs on the whole batch or not at all)."""
        if not batches:
            return {}
        if len({b.control is None for b in batches}) > 1:
            raise ValueError("train_steps needs a control for every adapter or for none; use train_step per adapter")
        empty = batches[0].x0[:0]
        _, losses = self.predict_rows_and_train(
            [], empty, torch.zeros(0, dtype=torch.long, device=empty.device), batches[0].cond[:0], batches,
            null_cond=null_cond, generator=generator,
        )
        return losses

    def predict_rows_and_train(
        self,
        names: Sequence[str | None],  # [N] adapter of each prediction row (None = the pretrained model)
        x_t: Tensor,  # [N, ...]
        t: Tensor,  # [N]
        cond: Tensor,  # [N, ...]
        batches: Sequence[AdapterBatch],
        *,
        control: Tensor | None = None,  # [Nc, 3, H, W]: the depth of the controlled prediction rows, or None
        controlled: Tensor | None = None,  # [N] bool: which prediction rows take ``control``; None = all (if given)
        null_cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, float]]:  # ([N, ...] float32 epsilon, no graph; loss per trained adapter)
        """:meth:`predict_rows` and then :meth:`train_steps` on ``batches``, in ONE forward and backward
        pass: the predictions use the weights before the update, as the two calls in sequence do,
        and the random draws are :meth:`train_steps`' (so the results are the same up to float
        rounding). Rows with and without depth may mix (the ControlNet runs on the controlled rows
        only: ``DiffusionModel.predict_noise(controlled=)``).

        Fewer calls, more FLOPs: the backward pass runs over every row of the batch (a dense
        kernel's backward does not skip rows whose gradient is zero), so N + 2B rows go forward and
        back instead of N forward and 2B forward and back. It pays where a call costs its weights
        more than its rows (the CPU, small renders); see ``PIVAConfig.fused_call``."""
        if len(names) != x_t.shape[0]:
            raise ValueError(f"{len(names)} adapter names for a batch of {x_t.shape[0]} rows")
        train_names = [b.name for b in batches]
        if len(set(train_names)) != len(train_names) or not set(train_names) <= {SOURCE, TARGET}:
            raise ValueError(f"one call trains each of {SOURCE!r}, {TARGET!r} at most once, got {train_names}")
        n = x_t.shape[0]
        if controlled is None:
            controlled = torch.full((n,), control is not None, dtype=torch.bool)
        elif control is None and bool(controlled.any()):
            raise ValueError("controlled rows were given but no control images")
        drawn = [self._noised(b.x0, b.cond, null_cond, generator) for b in batches]  # train_steps' order
        sizes = [d[0].shape[0] for d in drawn]
        rows = list(names) + [b.name for b, size in zip(batches, sizes) for _ in range(size)]
        mask = torch.cat([controlled.cpu()] + [torch.full((size,), b.control is not None) for b, size in zip(batches, sizes)])
        controls = ([control] if control is not None else []) + [b.control for b in batches if b.control is not None]
        kw: dict[str, Any] = {}
        if controls:
            kw["control"] = torch.cat(controls)
            if not bool(mask.all()):
                kw["controlled"] = mask
        for name in train_names:
            self.optimizers[name].zero_grad(set_to_none=True)
        with self.rows(rows):
            pred = self.model.predict_noise(
                torch.cat([x_t.detach()] + [d[0] for d in drawn]),
                torch.cat([t] + [d[1] for d in drawn]),
                torch.cat([cond.detach()] + [d[3] for d in drawn]),
                **kw,
            ).float()
            losses = [
                torch.nn.functional.mse_loss(p, eps) for p, (_, _, eps, _) in zip(pred[n:].split(sizes), drawn)
            ]
            if losses:
                torch.stack(losses).sum().backward()
        for name in train_names:
            self.optimizers[name].step()
            self.optimizers[name].zero_grad(set_to_none=True)
        return pred[:n].detach(), {name: float(loss.detach()) for name, loss in zip(train_names, losses)}

    def _noised(
        self, x0: Tensor, cond: Tensor, null_cond: Tensor | None, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # -> x_t [B, ...], t [B], eps [B, ...], cond [B, ...]
        """A training sample of the diffusion loss: t, eps, the dropped conditions, in this order
        from ``generator`` (checkpointed runs and the batched step depend on the order)."""
        x0 = x0.detach().float()
        T = self.model.alphas_cumprod.shape[0]
        lo = int(self.settings.t_min * T)
        hi = max(int(self.settings.t_max * T), lo + 1)
        t = torch.randint(lo, min(hi, T), (x0.shape[0],), generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=torch.float32)
        cond = cond.detach()
        if null_cond is not None and self.settings.condition_dropout > 0.0:
            drop = torch.rand((x0.shape[0],), generator=generator, device=x0.device) < self.settings.condition_dropout
            null = null_cond.detach().to(cond.dtype).expand(cond.shape)
            cond = torch.where(drop.view(-1, *([1] * (cond.dim() - 1))), null, cond)
        a = self.model.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
        x_t = a.sqrt() * x0 + (1.0 - a).sqrt() * eps
        return x_t, t, eps, cond

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": {n: [p.detach().clone() for p in ps] for n, ps in self.params.items()},
            "optimizers": {n: opt.state_dict() for n, opt in self.optimizers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, tensors in state["weights"].items():
            if len(tensors) != len(self.params[name]):
                raise ValueError(f"adapter {name!r}: checkpoint has {len(tensors)} tensors, model {len(self.params[name])}")
            with torch.no_grad():
                for i, (p, value) in enumerate(zip(self.params[name], tensors)):
                    if value.shape != p.shape:  # copy_ would broadcast a wrong shape silently
                        raise ValueError(
                            f"adapter {name!r} tensor {i}: checkpoint shape {tuple(value.shape)}, model {tuple(p.shape)}"
                        )
                    p.copy_(value)
        for name, opt_state in state["optimizers"].items():
            self.optimizers[name].load_state_dict(opt_state)
            check_optimizer_state(self.optimizers[name])

    def remove(self) -> None:
        """Delete both adapters: the model is the pretrained one again."""
        self._select(None)
        for layer in self._layers:
            for name in (SOURCE, TARGET):
                layer.delete_adapter(name)
        net = self.model.lora_target
        config = getattr(net, "peft_config", None)
        if isinstance(config, dict):
            for name in (SOURCE, TARGET):
                config.pop(name, None)
            if not config and hasattr(net, "_hf_peft_config_loaded"):
                net._hf_peft_config_loaded = False
        self._layers = []
        self.params = {SOURCE: [], TARGET: []}
        net.eval()  # peft leaves its emptied containers in training mode; the frozen model is eval


def _is_diffusers_model(net: torch.nn.Module) -> bool:
    try:
        from diffusers.loaders.peft import PeftAdapterMixin
    except ImportError:  # pragma: no cover - diffusers is a hard dependency of the backend
        return False
    return isinstance(net, PeftAdapterMixin)
