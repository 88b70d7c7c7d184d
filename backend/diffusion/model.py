"""The diffusion model the editing losses query: a thin wrapper over diffusers components.

:class:`DiffusionModel` loads a Stable-Diffusion-style folder or hub id (safetensors only), encodes
prompts (cached) and images, and returns **epsilon** predictions whatever the checkpoint predicts
(``v_prediction`` is converted with eps = sqrt(a) * v + sqrt(1 - a) * x_t, a = alpha_bar_t).

Every editing method sees the model only through the :class:`NoisePredictor` protocol of
``backend.editing.base`` (``predict_noise``, ``alphas_cumprod``, ``lora_target``), so the 2D toy
benchmark can pass a point-cloud model through the same code.

Pixel-space mode: a folder without ``vae/`` is a pixel-space model; ``encode_images`` then maps
[0, 1] to [-1, 1] and the UNet works on images directly (the project's toy model uses this).

Precision: the caller picks ``dtype`` (fp16/bf16 on CUDA, fp32 on the CPU); predictions and
latents come back in float32 so losses and LoRA training stay in fp32.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from .hub import SD21_DEPTH_CONTROLNET

_WEIGHTED = ("unet", "vae", "text_encoder")
_REQUIRED = ("unet", "text_encoder", "tokenizer", "scheduler")


class ModelLoadError(RuntimeError):
    """The model folder or hub id cannot be used; the message says how to fix it."""


@dataclass
class DiffusionModel:
    """Frozen Stable-Diffusion components on one device and dtype (build with :meth:`load`)."""

    unet: Any
    """diffusers UNet2DConditionModel, frozen (PIVA's LoRA adapters are added onto it)."""
    text_encoder: Any
    """transformers CLIPTextModel, frozen."""
    tokenizer: Any
    """transformers CLIPTokenizer."""
    alphas_cumprod: Tensor
    """[T] float32 on ``device``: alpha_bar_t of the training noise schedule."""
    prediction_type: str
    """What the UNet predicts: ``epsilon`` or ``v_prediction`` (converted to epsilon on output)."""
    device: torch.device
    dtype: torch.dtype
    vae: Any = None
    """diffusers AutoencoderKL, or None for a pixel-space model."""
    controlnet: Any = None
    """diffusers ControlNetModel (depth), or None."""
    scaling_factor: float = 1.0
    """VAE latent scaling (0.18215 for SD); 1 in pixel-space mode."""
    _prompt_cache: dict[str, Tensor] = field(default_factory=dict, repr=False)

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def load(
        cls, model: str, *, controlnet: str = "", device: torch.device, dtype: torch.dtype
    ) -> "DiffusionModel":
        """Load ``model`` (local diffusers folder or hub id) and optionally a depth ControlNet.

        Only safetensors weights are accepted (``.bin`` pickles can run code when loaded).
        """
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        device = torch.device(device)
        if device.type == "cpu" and dtype in (torch.float16,):
            raise ModelLoadError("float16 is not supported on the CPU; use torch.float32 (or bfloat16) there")
        local = Path(model).expanduser()
        is_local = local.exists()
        if is_local:
            _check_folder(local, _REQUIRED)
            has_vae = (local / "vae").is_dir()
            source: str = str(local)
        else:
            if model.startswith((".", "/", "~")) or "\\" in model:
                raise ModelLoadError(f"model folder {model!r} does not exist; pass an existing diffusers folder or a hub id")
            has_vae = True
            source = model

        def fetch(what: str, loader: Any, **kw: Any) -> Any:
            try:
                return loader.from_pretrained(source, subfolder=what, **kw)
            except (OSError, ValueError, EnvironmentError) as exc:
                raise ModelLoadError(
                    f"cannot load {what!r} of {model!r}: {exc}. Fix: download the model (safetensors) to a local "
                    f"folder in the diffusers layout and pass that folder, or check the hub id and your network"
                ) from exc

        unet = fetch("unet", UNet2DConditionModel, use_safetensors=True, torch_dtype=dtype)
        text_encoder = fetch("text_encoder", CLIPTextModel, use_safetensors=True, dtype=dtype)
        tokenizer = fetch("tokenizer", CLIPTokenizer)
        scheduler = fetch("scheduler", DDPMScheduler)
        vae = None
        scaling = 1.0
        if has_vae:
            from diffusers import AutoencoderKL

            vae = fetch("vae", AutoencoderKL, use_safetensors=True, torch_dtype=dtype)
            scaling = float(vae.config.scaling_factor)
        cnet = None
        if controlnet:
            cnet = _load_controlnet(controlnet, dtype)

        prediction_type = scheduler.config.prediction_type
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ModelLoadError(
                f"{model!r} predicts {prediction_type!r}; only 'epsilon' and 'v_prediction' models are supported"
            )
        for module in (unet, text_encoder, vae, cnet):
            if module is not None:
                module.requires_grad_(False)
                module.eval()
                module.to(device)
        return cls(
            unet=unet,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            alphas_cumprod=scheduler.alphas_cumprod.to(device=device, dtype=torch.float32),
            prediction_type=prediction_type,
            device=device,
            dtype=dtype,
            vae=vae,
            controlnet=cnet,
            scaling_factor=scaling,
        )

    # -- NoisePredictor protocol --------------------------------------------------------------
    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def lora_target(self) -> torch.nn.Module:
        """The module PIVA's LoRA adapters are injected into."""
        return self.unet

    lora_target_modules: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")
    """Attention projections that receive LoRA (diffusers naming, as in ProlificDreamer/PIVA)."""

    def null_condition(self) -> Tensor:
        """[1, L, D] embedding of the empty prompt (the unconditional branch of CFG)."""
        return self.encode_prompt("")

    def encode_prompt(self, text: str) -> Tensor:
        """[1, L, D] CLIP token embeddings of ``text`` in the model dtype, cached per text."""
        cached = self._prompt_cache.get(text)
        if cached is not None:
            return cached
        ids = self.tokenizer(
            [text],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        with torch.no_grad():
            emb = self.text_encoder(ids)[0].to(self.dtype)
        self._prompt_cache[text] = emb
        return emb

    def encode_images(self, rgb: Tensor) -> Tensor:  # [B, 3, H, W] in [0, 1] -> [B, C, h, w] float32
        """Differentiable VAE encoding (posterior mean, times ``scaling_factor``)."""
        x = rgb * 2.0 - 1.0
        if self.vae is None:
            return x.float()
        # the posterior mean, not a sample: a deterministic map keeps the injected gradient clean
        latents = self.vae.encode(x.to(self.dtype)).latent_dist.mean
        return latents.float() * self.scaling_factor

    def decode_latents(self, latents: Tensor) -> Tensor:  # [B, C, h, w] -> [B, 3, H, W] in [0, 1]
        if self.vae is None:
            return ((latents + 1.0) / 2.0).clamp(0.0, 1.0).float()
        image = self.vae.decode((latents / self.scaling_factor).to(self.dtype)).sample
        return ((image.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    @contextmanager
    def freeu(self, *, b1: float, b2: float, s1: float, s2: float) -> Iterator[None]:
        """Within the block the UNet runs with FreeU (Si et al., 2024: backbone features of the first
        two up-blocks scaled by b1, b2, their skip features' low frequencies by s1, s2), via
        diffusers' ``enable_freeu``; afterwards the plain UNet again. Used by SSD (its reference)."""
        self.unet.enable_freeu(b1=b1, b2=b2, s1=s1, s2=s2)
        try:
            yield
        finally:
            self.unet.disable_freeu()

    def predict_noise(
        self,
        x_t: Tensor,  # [B, C, h, w]
        t: Tensor,  # [B] integer timesteps
        cond: Tensor,  # [B, L, D] text embeddings
        *,
        control: Tensor | None = None,  # [B, 3, H, W] (or [Nc, 3, H, W] with ``controlled``) depth in [0, 1], or None
        control_scale: float = 1.0,
        controlled: Tensor | None = None,  # [B] bool: the rows that take ``control``; None = all
    ) -> Tensor:  # [B, C, h, w] float32 epsilon
        """One batched UNet call (plus the ControlNet when ``control`` is given); returns epsilon.

        With ``controlled``, the ControlNet runs on those rows only (``control`` holds their depth
        images, in row order) and the other rows get no residual: each row is what a call of its
        own kind would give (the residuals are added, so a zero residual is exactly no control).
        This lets one call hold rows with and without depth (PIVA's base and adapter rows)."""
        sample = x_t.to(self.dtype)
        cond = cond.to(self.dtype)
        extra: dict[str, Any] = {}
        if control is not None:
            if self.controlnet is None:
                raise ValueError("a control image was given but no ControlNet is loaded; pass controlnet= to load()")
            rows = None
            if controlled is not None:
                if controlled.shape != (sample.shape[0],) or controlled.dtype != torch.bool:
                    raise ValueError(f"controlled must be a [{sample.shape[0]}] bool mask, got {controlled.dtype} {tuple(controlled.shape)}")
                rows = controlled.nonzero().squeeze(1).to(sample.device)
                if rows.numel() != control.shape[0]:
                    raise ValueError(f"{rows.numel()} controlled rows but {control.shape[0]} control images")
            down, mid = self.controlnet(
                sample if rows is None else sample[rows],
                t if rows is None else t[rows],
                encoder_hidden_states=cond if rows is None else cond[rows],
                controlnet_cond=control.to(self.dtype),
                conditioning_scale=control_scale,
                return_dict=False,
            )
            if rows is not None:
                down = tuple(_scatter_rows(r, rows, sample.shape[0]) for r in down)
                mid = _scatter_rows(mid, rows, sample.shape[0])
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        out = self.unet(sample, t, encoder_hidden_states=cond, return_dict=False, **extra)[0].float()
        if self.prediction_type == "v_prediction":
            out = v_to_epsilon(out, x_t.float(), t, self.alphas_cumprod)
        return out


def _scatter_rows(residual: Tensor, rows: Tensor, batch: int) -> Tensor:  # [Nc, ...] -> [batch, ...]
    """A ControlNet residual of the controlled ``rows`` placed in a zero residual of the whole batch."""
    full = residual.new_zeros((batch, *residual.shape[1:]))
    return full.index_copy(0, rows, residual)


def v_to_epsilon(v: Tensor, x_t: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """eps = sqrt(a) v + sqrt(1 - a) x_t for v = sqrt(a) eps - sqrt(1 - a) x_0 (Salimans & Ho 2022)."""
    a = alphas_cumprod[t].view(-1, *([1] * (x_t.dim() - 1)))
    return a.sqrt() * v + (1.0 - a).sqrt() * x_t


def _check_folder(folder: Path, required: tuple[str, ...]) -> None:
    """Fail early, with the fix, on a folder missing a component or holding only pickle weights
    (the layout check the extension's "Check model" button runs too: ``contract.model_layout``)."""
    from blender_piva.contract.model_layout import check_model_folder

    report = check_model_folder(folder, required)
    if not report.ok:
        raise ModelLoadError(report.message)


def _check_safetensors(sub: Path) -> None:
    """Fail, with the fix, unless ``sub`` holds safetensors weights (pickles are never loaded)."""
    from blender_piva.contract.model_layout import no_weights_message, pickle_only_message, weights_kind

    kind = weights_kind(sub)
    if kind == "pickle":
        raise ModelLoadError(pickle_only_message(sub))
    if kind == "none":
        raise ModelLoadError(no_weights_message(sub))


def _load_controlnet(controlnet: str, dtype: torch.dtype) -> Any:
    from diffusers import ControlNetModel

    local = Path(controlnet).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"ControlNet folder {local} has no config.json; pass the folder holding it")
        _check_safetensors(local)
    try:
        return ControlNetModel.from_pretrained(str(local) if local.exists() else controlnet, use_safetensors=True, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load the ControlNet {controlnet!r}: {exc}. Fix: pass a local diffusers ControlNet folder "
            f"(safetensors) or a valid hub id such as {SD21_DEPTH_CONTROLNET!r}"
        ) from exc
