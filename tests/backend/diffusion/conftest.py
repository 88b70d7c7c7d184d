from __future__ import annotations

import pytest
import torch

from backend.diffusion.model import DiffusionModel
from backend.diffusion.tiny import save_tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    return DiffusionModel.load(str(tiny_dir), controlnet=str(tiny_dir / "controlnet"), device=torch.device("cpu"), dtype=torch.float32)
