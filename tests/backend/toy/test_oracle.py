"""The toy oracle: it saves and loads through safetensors only, names labels, takes any image size,
refuses what is not an RGB batch; its augmentations keep the white background and the colour; its
training resumes exactly from its checkpoint (never a pickle) and learns a separable problem."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from backend.checkpoint import CheckpointError
from backend.toy import oracle_train
from backend.toy.oracle import (
    CONFIG_FILE,
    DEFAULT_ORACLE,
    WEIGHTS_FILE,
    OracleConfig,
    ToyOracle,
    load_oracle,
    save_oracle,
)
from backend.toy.oracle_train import ORACLE_CHECKPOINT, LabelledImages, OracleTrainConfig, accuracy, augment, train_oracle

from ..planted import assert_payload_is_live, plant_json, plant_tensors_with_record

COLORS = {"red": (0.85, 0.10, 0.10), "green": (0.12, 0.70, 0.15), "blue": (0.10, 0.22, 0.88), "yellow": (0.92, 0.80, 0.10)}
"""Four of the toy world's colours (toy_world.COLORS, which needs bpy to import)."""
TINY = OracleConfig(colors=tuple(COLORS), shapes=("cube", "torus"), image_size=16, channels=(8, 8))
FAST = OracleTrainConfig(steps=4, batch_size=8, checkpoint_every=2, seed=0)


def quiet(_: str) -> None:
    pass


def squares(n: int, seed: int) -> LabelledImages:
    """Coloured 8x8 squares on white at 16x16, a little noise; colours in turn, shape label 0."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(COLORS)
    images = torch.ones(n, 3, 16, 16)
    images[:, :, 4:12, 4:12] = torch.tensor(list(COLORS.values()))[labels][:, :, None, None]
    images = (images + 0.03 * torch.randn(images.shape, generator=g)).clamp(0.0, 1.0)
    return LabelledImages(images, labels, torch.zeros(n, dtype=torch.long))


def tiny_oracle(config: OracleConfig = TINY) -> ToyOracle:
    torch.manual_seed(0)
    return ToyOracle(config).eval()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_save_and_load_give_the_same_logits_through_safetensors_only(tmp_path):
    oracle = tiny_oracle()
    folder = save_oracle(oracle, tmp_path / "oracle")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    loaded = load_oracle(folder)
    assert loaded.config == TINY and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        for a, b in zip(oracle(x), loaded(x)):
            assert torch.equal(a, b)
    assert json.loads((folder / CONFIG_FILE).read_text())["colors"] == list(COLORS)


def test_a_missing_oracle_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no toy oracle in .*scripts/train_toy_model\.py"):
        load_oracle(tmp_path / "nowhere")
    folder = save_oracle(tiny_oracle(), tmp_path / "half")
    (folder / WEIGHTS_FILE).unlink()  # a config without its weights is no oracle either
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_oracle(folder)


def test_the_shipped_oracle_loads_and_takes_64x64_renders():
    oracle = load_oracle()
    assert DEFAULT_ORACLE == Path(__file__).resolve().parents[3] / "backend" / "models" / "toy_oracle"
    assert oracle.config.image_size == 64 and "cyan" in oracle.config.colors and "white" not in oracle.config.colors
    colors, shapes = oracle.classify(torch.rand(2, 3, 64, 64))
    assert len(colors) == len(shapes) == 2
    assert set(colors) <= set(oracle.config.colors) and set(shapes) <= set(oracle.config.shapes)


def test_the_shipped_oracles_labels_are_the_toy_worlds():
    pytest.importorskip("bpy")  # toy_world builds its objects with bpy
    import toy_world

    config = load_oracle().config
    assert config.colors == tuple(toy_world.COLORS) and config.shapes == tuple(toy_world.SHAPES)


def test_classify_names_the_labels_of_the_largest_logits():
    oracle = tiny_oracle()
    with torch.no_grad():
        for head, winner in ((oracle.color_head, 2), (oracle.shape_head, 1)):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[winner] = 1.0
    colors, shapes = oracle.classify(torch.rand(2, 3, 16, 16))
    assert colors == ["blue", "blue"] and shapes == ["torus", "torus"]


def test_other_sizes_are_resized_to_the_oracles_own():
    oracle = tiny_oracle(dataclasses.replace(TINY, image_size=64))
    assert oracle.prepare(torch.rand(2, 3, 32, 48)).shape == (2, 3, 64, 64)
    # a flat image stays flat whatever its size: the logits do not depend on the input size
    grey = torch.full((1, 3, 64, 64), 0.4)
    with torch.no_grad():
        for small, large in zip(oracle(grey[..., :20, :20]), oracle(grey)):
            torch.testing.assert_close(small, large)
        assert all(torch.isfinite(logits).all() for logits in oracle(torch.rand(1, 3, 100, 37)))


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 1, 16, 16), (1, 4, 16, 16), (1, 16, 16, 3)],
                         ids=["no-batch", "grey", "rgba", "channels-last"])
def test_what_is_not_an_rgb_batch_is_refused(shape):
    with pytest.raises(ValueError, match=r"RGB images \[B, 3, H, W\]"):
        tiny_oracle()(torch.rand(shape))


def test_augment_keeps_shape_range_white_background_and_colour():
    g = torch.Generator().manual_seed(0)
    data = squares(16, seed=0)
    out = augment(data.images, g)
    assert out.shape == data.images.shape and 0.0 <= out.min() and out.max() <= 1.0
    assert not torch.allclose(out, data.images, atol=0.05)  # it does augment
    white = augment(torch.ones(16, 3, 16, 16), g)
    assert white.mean() > 0.97 and (white > 0.8).float().mean() > 0.99  # a blank render stays white
    # what shifts or zooms in from outside the image is white (the background), not black
    black = augment(torch.zeros(64, 3, 16, 16), g)
    assert (black.min(dim=1).values > 0.9).any()
    # hues are never jittered: the square's dominant channel is still its colour's
    centre = out[:, :, 6:10, 6:10].mean(dim=(2, 3))
    dominant = torch.tensor([0, 1, 2, 0])[data.colors]  # red, green, blue, yellow (red > green)
    assert torch.equal(centre.argmax(dim=1), dominant)
    assert torch.equal(augment(data.images, torch.Generator().manual_seed(3)),
                       augment(data.images, torch.Generator().manual_seed(3)))  # seeded: reproducible


class Interrupted(Exception):
    """Stands for the process being killed right after a checkpoint was written."""


def test_training_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    data = squares(16, seed=0)
    straight = train_oracle(data, TINY, FAST, tmp_path / "straight", log=quiet)
    real_save = oracle_train.save_state

    def save_then_die(stem: Path, state: dict) -> None:
        real_save(stem, state)
        raise Interrupted

    work = tmp_path / "resumed"
    monkeypatch.setattr(oracle_train, "save_state", save_then_die)
    with pytest.raises(Interrupted):
        train_oracle(data, TINY, FAST, work, log=quiet)  # stops after the checkpoint of step 2
    monkeypatch.setattr(oracle_train, "save_state", real_save)
    logs: list[str] = []
    resumed = train_oracle(data, TINY, FAST, work, log=logs.append)
    assert "oracle: resuming at step 2" in logs
    assert_same_weights(straight, resumed)
    kept = sorted(p.name for p in work.iterdir())  # one checkpoint: its JSON and the tensors slot it names
    assert len(kept) == 2 and f"{ORACLE_CHECKPOINT}.json" in kept and all(n.startswith(ORACLE_CHECKPOINT) for n in kept)


@pytest.mark.parametrize("plant", [plant_json, plant_tensors_with_record], ids=["json", "safetensors"])
def test_a_pickle_as_the_oracle_checkpoint_is_a_named_error_not_code(tmp_path, plant):
    assert_payload_is_live(tmp_path)
    marker = tmp_path / "PWNED"
    planted = plant(tmp_path, ORACLE_CHECKPOINT, marker)
    with pytest.raises(CheckpointError) as info:
        train_oracle(squares(8, seed=0), TINY, FAST, tmp_path, log=quiet)
    assert str(planted) in info.value.what and "toy oracle training stage from scratch" in info.value.hint
    assert not marker.exists()


def test_it_learns_the_colour_of_squares_on_white(tmp_path):
    config = OracleTrainConfig(steps=150, batch_size=16, learning_rate=1e-2, checkpoint_every=1000, seed=0)
    oracle = train_oracle(squares(32, seed=0), TINY, config, tmp_path, log=quiet)
    color_ok, _ = accuracy(oracle, squares(64, seed=1))  # other noise than training saw
    assert color_ok >= 0.95
