"""One loaded diffusion model, kept between the jobs of a worker.

The edit stage asks its :class:`~backend.stages.context.ModelProvider` for the model of a
:class:`~backend.stages.context.ModelKey` (model, ControlNet, device, dtype, memory mode). The
cache returns the model it holds when the key is equal, and otherwise frees it and loads anew.
Every load is a ``log`` event ``loaded model ... (load N of this worker)``.

A method must give the model back as it found it: PIVA removes its LoRA adapters in ``close()``,
SSD's FreeU is a context manager. Before handing a cached model to the next job the cache checks
that (:func:`model_changes`); a model that was left changed is loaded again, never reused.
"""

from __future__ import annotations

import gc
from typing import Any, Callable

from blender_piva import contract

from ..stages.context import ModelKey

LOAD_MESSAGE = "loaded model {model} (controlnet {controlnet}, {device}, {dtype}, memory {memory}) (load {n} of this worker)"
"""The ``log`` event of every load; tests count loads by ``(load N of this worker)``."""


def model_changes(model: Any) -> list[str]:
    """What a job left changed on ``model`` (a DiffusionModel); [] when it is as loaded.

    Checks every network it holds for LoRA (peft) parameters or configs, parameters that require
    gradients, dropout or batch norm in training mode, and (UNet) FreeU left enabled."""
    found: list[str] = []
    for part in ("unet", "controlnet", "text_encoder", "vae"):
        net = getattr(model, part, None)
        if net is None:
            continue
        names = [name for name, _ in net.named_parameters() if "lora_" in name]
        if names:
            found.append(f"{part}: {len(names)} LoRA parameters (e.g. {names[0]})")
        if getattr(net, "peft_config", None):
            found.append(f"{part}: peft adapters {sorted(net.peft_config)}")
        grads = [name for name, p in net.named_parameters() if p.requires_grad]
        if grads:
            found.append(f"{part}: {len(grads)} parameters require gradients (e.g. {grads[0]})")
        training = [name for name, m in net.named_modules() if m.training and _acts_differently_in_training(m)]
        if training:
            found.append(f"{part}: {len(training)} modules in training mode (e.g. {training[0]})")
        for block in getattr(net, "up_blocks", ()) if part == "unet" else ():
            if getattr(block, "b1", None) is not None:
                found.append("unet: FreeU is enabled")
                break
    return found


def _acts_differently_in_training(module: Any) -> bool:
    """Dropout and batch norm; peft leaves empty containers (``lora_A`` after ``delete_adapter``)
    in training mode, which changes nothing."""
    import torch

    return isinstance(module, (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm))


def to_eval(model: Any) -> None:
    """Every network of ``model`` in eval mode, as ``DiffusionModel.load`` leaves them."""
    for part in ("unet", "controlnet", "text_encoder", "vae"):
        net = getattr(model, part, None)
        if net is not None:
            net.eval()


class ModelCache:
    """Keeps the last loaded model (:class:`ModelProvider` of the worker)."""

    def __init__(self) -> None:
        self.key: ModelKey | None = None
        """The key of the model held; None when none is."""
        self.model: Any = None
        self.applied: list[str] = []
        """What the memory mode did when it was loaded (logged again by every job)."""
        self.loads = 0
        """Models loaded by this worker so far."""

    def get(
        self, key: ModelKey, load: Callable[[], tuple[Any, list[str]]], events: contract.EventWriter
    ) -> tuple[Any, list[str]]:
        if self.model is not None and self.key == key:
            to_eval(self.model)  # a method that trained something may leave modules in training mode
            changes = model_changes(self.model)
            if not changes:
                events.emit("log", stage="edit", message=f"reusing the loaded model {key.model} (load {self.loads} of this worker)")
                return self.model, self.applied
            events.emit(
                "log", stage="edit",
                message=f"the loaded model was left changed by an earlier job ({'; '.join(changes)}): loading it again",
            )
        self.release()
        model, applied = load()
        self.loads += 1
        self.key, self.model, self.applied = key, model, list(applied)
        events.emit("log", stage="edit", message=LOAD_MESSAGE.format(n=self.loads, **vars(key)))
        return model, applied

    def release(self) -> bool:
        """Free the model held (and CUDA's cached memory); True when there was one."""
        had = self.model is not None
        device = self.key.device if self.key is not None else ""
        self.key, self.model, self.applied = None, None, []
        if had:
            gc.collect()
            if device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
        return had
