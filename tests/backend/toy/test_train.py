"""Training of the toy model: both phases resume exactly from their checkpoints, which are never pickles."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from backend.checkpoint import CheckpointError
from backend.toy.components import ToyModelConfig, save_tokenizer
from backend.toy.train import (
    BASE_CHECKPOINT,
    CONTROLNET_CHECKPOINT,
    ToyDataset,
    TrainConfig,
    train_base,
    train_controlnet,
)

from ..planted import assert_payload_is_live, plant_json, plant_legacy, plant_stray_tensors, plant_tensors_with_record

TINY = ToyModelConfig(image_size=16, text_width=32, unet_channels=(8, 16), layers_per_block=1)
FAST = TrainConfig(steps=2, controlnet_steps=2, batch_size=2, warmup_steps=1, checkpoint_every=1, seed=0)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import CLIPTokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(folder, TINY)
    return CLIPTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def dataset() -> ToyDataset:
    g = torch.Generator().manual_seed(0)
    return ToyDataset(
        images=torch.rand((4, 3, 16, 16), generator=g) * 2 - 1,
        controls=torch.rand((4, 3, 16, 16), generator=g),
        prompts=["a red cube", "a blue sphere", "a green cone", "a white torus"],
    )


def train_both(dataset, tokenizer, work, config=FAST, log=lambda _: None):
    te, unet = train_base(dataset, tokenizer, TINY, config, work, log=log)
    controlnet = train_controlnet(dataset, tokenizer, te, unet, TINY, config, work, log=log)
    return te, unet, controlnet


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_both_phases_resume_to_the_uninterrupted_result(tmp_path, dataset, tokenizer):
    straight = train_both(dataset, tokenizer, tmp_path / "straight")
    # Each phase stopped after one step, then run again to the end from its checkpoint.
    work, logs = tmp_path / "resumed", []
    train_base(dataset, tokenizer, TINY, dataclasses.replace(FAST, steps=1), work, log=lambda _: None)
    te, unet = train_base(dataset, tokenizer, TINY, FAST, work, log=logs.append)
    one = dataclasses.replace(FAST, controlnet_steps=1)
    train_controlnet(dataset, tokenizer, te, unet, TINY, one, work, log=lambda _: None)
    controlnet = train_controlnet(dataset, tokenizer, te, unet, TINY, FAST, work, log=logs.append)
    assert "phase 1: resuming at step 1" in logs and "phase 2: resuming at step 1" in logs
    for a, b in zip(straight, (te, unet, controlnet)):
        assert_same_weights(a, b)
    names = sorted(p.name for p in work.iterdir())
    assert names == ["base.json", "base.safetensors", "controlnet.json", "controlnet.safetensors"]


def test_planted_pickles_under_every_old_name_are_ignored_and_never_run(tmp_path, dataset, tokenizer):
    assert_payload_is_live(tmp_path)
    marker = tmp_path / "PWNED"
    work = tmp_path / "work"
    plant_legacy(work, marker)  # base.pt, controlnet.pt, reconstruct.pt, edit.pt
    plant_stray_tensors(work, marker)  # STEM.safetensors without its JSON: no checkpoint
    logs: list[str] = []
    train_both(dataset, tokenizer, work, config=dataclasses.replace(FAST, steps=1, controlnet_steps=1), log=logs.append)
    assert not marker.exists()
    for old in ("base.pt", "controlnet.pt"):
        assert any(f"ignoring {work / old}" in m for m in logs), logs
    assert not any("resuming" in m for m in logs)


@pytest.mark.parametrize("stem", [BASE_CHECKPOINT, CONTROLNET_CHECKPOINT])
@pytest.mark.parametrize("plant", [plant_json, plant_tensors_with_record], ids=["json", "safetensors"])
def test_a_pickle_under_the_new_names_is_a_named_error_not_code(tmp_path, dataset, tokenizer, stem, plant):
    marker = tmp_path / "PWNED"
    config = dataclasses.replace(FAST, steps=1, controlnet_steps=1)
    if stem == CONTROLNET_CHECKPOINT:
        te, unet = train_base(dataset, tokenizer, TINY, config, tmp_path, log=lambda _: None)
    planted = plant(tmp_path, stem, marker)
    with pytest.raises(CheckpointError) as info:
        if stem == BASE_CHECKPOINT:
            train_base(dataset, tokenizer, TINY, config, tmp_path, log=lambda _: None)
        else:
            train_controlnet(dataset, tokenizer, te, unet, TINY, config, tmp_path, log=lambda _: None)
    assert str(planted) in info.value.what and "training stage from scratch" in info.value.hint
    assert not marker.exists()
