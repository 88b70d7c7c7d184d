"""The diffusion model (``model``), PIVA's LoRA adapters (``lora``) and a tiny offline test model (``tiny``)."""
