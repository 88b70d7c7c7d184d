"""scripts/train_toy_model.py: fine-tuning reads its starting model through the product's loader."""

from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file

from ..script_modules import ROOT, load_script

SHIPPED = ROOT / "backend" / "models" / "toy"


def _script():
    return load_script("scripts/train_toy_model.py", "train_toy_model")


def test_finetune_from_loads_the_shipped_models_weights():
    parts = _script().load_trained(SHIPPED)
    assert set(parts) == {"vae", "text_encoder", "unet", "controlnet"}
    for name, file in (("unet", "unet/diffusion_pytorch_model.safetensors"),
                       ("controlnet", "controlnet/diffusion_pytorch_model.safetensors")):
        saved, loaded = load_file(SHIPPED / file), parts[name].state_dict()
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[k], loaded[k]) for k in saved), name


def test_finetune_from_a_folder_that_is_no_model_names_the_fix(tmp_path):
    with pytest.raises(SystemExit, match="not a model folder.*backend/models/toy"):
        _script().load_trained(tmp_path)
    (tmp_path / "model_index.json").write_text("{}")  # a model index without its parts
    with pytest.raises(SystemExit, match=f"--finetune-from {tmp_path}"):
        _script().load_trained(tmp_path)
