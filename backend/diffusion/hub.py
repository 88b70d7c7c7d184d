"""Hub ids of the models the paper uses (standard library only: the edit stage reads them before torch loads)."""

SD21_BASE = "stabilityai/stable-diffusion-2-1-base"
"""The paper's base model (epsilon prediction, 512x512)."""
SD21_DEPTH_CONTROLNET = "thibaud/controlnet-sd21-depth-diffusers"
"""Depth ControlNet for SD 2.x (PIVA appendix D.1 puts its LoRA adapters on this path in 3D)."""

DEFAULT_CONTROLNETS = {SD21_BASE: SD21_DEPTH_CONTROLNET}
"""Hub model -> the depth ControlNet used with it when the job names none (PIVA appendix D.1)."""
