"""Training of the toy model: all three phases (VAE, base, ControlNet) resume exactly from their
checkpoints, which are never pickles; the VAE's latents are what phases 1 and 2 train on."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import pytest
import torch

from backend.checkpoint import CheckpointError, checkpoint_paths
from backend.toy.components import ToyModelConfig, build_text_encoder, build_unet, save_tokenizer
from backend.toy.train import (
    BASE_CHECKPOINT,
    CONTROLNET_CHECKPOINT,
    VAE_CHECKPOINT,
    LatentDataset,
    ToyDataset,
    TrainConfig,
    encode_dataset,
    sample_images,
    train_base,
    train_controlnet,
    train_vae,
)

from ..planted import (
    assert_payload_is_live,
    plant_json,
    plant_legacy,
    plant_stray_tensors,
    plant_tensors_with_record,
    torch_pickle,
)

# Channels are multiples of 16: the components' GroupNorms have 16 groups.
TINY = ToyModelConfig(image_size=16, vae_channels=(16, 16), text_width=32, unet_channels=(16, 32), layers_per_block=1)
FAST = TrainConfig(vae_steps=2, vae_batch_size=2, steps=2, controlnet_steps=2, batch_size=2, warmup_steps=1,
                   checkpoint_every=1, seed=0)
ONE_STEP = dataclasses.replace(FAST, vae_steps=1, steps=1, controlnet_steps=1)
Log = Callable[[str], None]


def quiet(_: str) -> None:
    pass


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
        prompts=["a red cube", "a blue sphere", "a green cone", "a cyan torus"],
    )


@pytest.fixture(scope="module")
def vae(dataset, tmp_path_factory):
    return train_vae(dataset, TINY, ONE_STEP, tmp_path_factory.mktemp("vae"), log=quiet)


@pytest.fixture(scope="module")
def latents(vae, dataset) -> LatentDataset:
    return encode_dataset(vae, dataset)


def train_all(dataset: ToyDataset, tokenizer, work: Path, config: TrainConfig = FAST, log: Log = quiet):
    vae = train_vae(dataset, TINY, config, work, log=log)
    encoded = encode_dataset(vae, dataset)
    te, unet = train_base(encoded, tokenizer, TINY, config, work, log=log)
    controlnet = train_controlnet(encoded, tokenizer, te, unet, TINY, config, work, log=log)
    return vae, te, unet, controlnet


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_every_phase_resumes_to_the_uninterrupted_result(tmp_path, dataset, tokenizer):
    straight = train_all(dataset, tokenizer, tmp_path / "straight")
    # Each phase stopped after one step, then run again to the end from its checkpoint.
    work, logs = tmp_path / "resumed", []
    train_vae(dataset, TINY, dataclasses.replace(FAST, vae_steps=1), work, log=quiet)
    vae = train_vae(dataset, TINY, FAST, work, log=logs.append)
    encoded = encode_dataset(vae, dataset)
    train_base(encoded, tokenizer, TINY, dataclasses.replace(FAST, steps=1), work, log=quiet)
    te, unet = train_base(encoded, tokenizer, TINY, FAST, work, log=logs.append)
    train_controlnet(encoded, tokenizer, te, unet, TINY, dataclasses.replace(FAST, controlnet_steps=1), work, log=quiet)
    controlnet = train_controlnet(encoded, tokenizer, te, unet, TINY, FAST, work, log=logs.append)
    for phase in (0, 1, 2):
        assert f"phase {phase}: resuming at step 1" in logs, logs
    for a, b in zip(straight, (vae, te, unet, controlnet)):
        assert_same_weights(a, b)
    assert vae.config.scaling_factor == straight[0].config.scaling_factor
    names = sorted(p.name for p in work.iterdir())  # per phase its JSON and the tensors slot it names
    assert names == sorted(p.name for phase in ("base", "controlnet", "vae") for p in checkpoint_paths(work / phase))


def test_a_phase_trained_on_other_inputs_starts_over_instead_of_resuming(tmp_path, latents, tokenizer):
    work, logs = tmp_path / "work", []
    te, unet = train_base(latents, tokenizer, TINY, ONE_STEP, work, log=quiet)
    train_controlnet(latents, tokenizer, te, unet, TINY, ONE_STEP, work, log=quiet)
    # a longer phase 1 changes the UNet: phase 2's checkpoint belongs to the old one
    te2, unet2 = train_base(latents, tokenizer, TINY, FAST, work, log=logs.append)
    train_controlnet(latents, tokenizer, te2, unet2, TINY, FAST, work, log=logs.append)
    assert "phase 1: resuming at step 1" in logs
    assert any(line.startswith("toy phase-2 training: starting over") for line in logs), logs
    assert "phase 2: resuming at step 1" not in logs
    # other latents (a re-trained autoencoder): phase 1 starts over too
    shifted = LatentDataset(latents.latents + 1.0, latents.mirrored, latents.controls, latents.prompts)
    logs.clear()
    train_base(shifted, tokenizer, TINY, FAST, work, log=logs.append)
    assert any(line.startswith("toy phase-1 training: starting over") for line in logs), logs


def test_fine_tuning_starts_from_the_given_weights_and_never_resumes_a_from_scratch_checkpoint(
        tmp_path, latents, tokenizer):
    start_te, start_unet = train_base(latents, tokenizer, TINY, ONE_STEP, tmp_path / "start", log=quiet)
    start_cn = train_controlnet(latents, tokenizer, start_te, start_unet, TINY, ONE_STEP, tmp_path / "start", log=quiet)
    no_steps = dataclasses.replace(ONE_STEP, steps=0, controlnet_steps=0)
    # zero steps from the given weights give those weights back: they were loaded, not a fresh init
    work, logs = tmp_path / "tune", []
    te, unet = train_base(latents, tokenizer, TINY, no_steps, work, log=quiet, init=(start_te, start_unet))
    cn = train_controlnet(latents, tokenizer, te, unet, TINY, no_steps, work, log=quiet, init=start_cn)
    for a, b in ((te, start_te), (unet, start_unet), (cn, start_cn)):
        assert_same_weights(a, b)
    # a from-scratch phase in the same work folder is not resumed into the fine-tune
    scratch = tmp_path / "shared"
    train_base(latents, tokenizer, TINY, ONE_STEP, scratch, log=quiet)
    train_base(latents, tokenizer, TINY, FAST, scratch, log=logs.append, init=(start_te, start_unet))
    assert any(line.startswith("toy phase-1 training: starting over") for line in logs), logs
    assert "phase 1: resuming at step 1" not in logs


def test_vae_sets_the_scale_that_gives_its_latents_unit_std(vae, latents):
    scale = float(vae.config.scaling_factor)
    assert scale > 0 and scale != 1.0  # 1 would be diffusers' default: phase 0 did not set it
    # the scaled latents of the training images have unit standard deviation (SD's convention)
    assert latents.latents.std().item() == pytest.approx(1.0, rel=1e-4)
    assert not any(p.requires_grad for p in vae.parameters()) and not vae.training


def test_encoded_dataset_holds_the_latents_of_the_images_and_of_their_mirrors(latents, dataset):
    n, shape = len(dataset.prompts), (TINY.latent_channels, TINY.latent_size, TINY.latent_size)
    assert latents.latents.shape == (n, *shape) and latents.mirrored.shape == (n, *shape)
    # a mirrored image's latent is encoded, not the flipped latent of the original
    assert not torch.allclose(latents.mirrored, latents.latents.flip(-1))
    assert torch.equal(latents.controls, dataset.controls) and latents.prompts == dataset.prompts


def test_samples_are_decoded_images(vae, tokenizer):
    torch.manual_seed(0)
    te, unet = build_text_encoder(TINY).eval(), build_unet(TINY).eval()
    images = sample_images(vae, unet, te, tokenizer, ["a red cube", "a cyan torus"], TINY, steps=2)
    assert images.shape == (2, 3, TINY.image_size, TINY.image_size)
    assert torch.isfinite(images).all() and 0.0 <= images.min() and images.max() <= 1.0


def test_planted_pickles_under_every_old_name_are_ignored_and_never_run(tmp_path, dataset, tokenizer):
    assert_payload_is_live(tmp_path)
    marker = tmp_path / "PWNED"
    work = tmp_path / "work"
    plant_legacy(work, marker)  # base.pt, controlnet.pt, reconstruct.pt, edit.pt
    # No version wrote vae.pt, but phase 0 looks for one as the others do: only reported.
    (work / "vae.pt").write_bytes(torch_pickle(marker))
    plant_stray_tensors(work, marker)  # STEM.safetensors (vae included) without its JSON: no checkpoint
    logs: list[str] = []
    train_all(dataset, tokenizer, work, config=ONE_STEP, log=logs.append)
    assert not marker.exists()
    for old in ("vae.pt", "base.pt", "controlnet.pt"):
        assert any(f"ignoring {work / old}" in m for m in logs), logs
    assert not any("resuming" in m for m in logs)


@pytest.mark.parametrize("stem", [VAE_CHECKPOINT, BASE_CHECKPOINT, CONTROLNET_CHECKPOINT])
@pytest.mark.parametrize("plant", [plant_json, plant_tensors_with_record], ids=["json", "safetensors"])
def test_a_pickle_under_the_new_names_is_a_named_error_not_code(tmp_path, dataset, latents, tokenizer, stem, plant):
    marker = tmp_path / "PWNED"
    if stem == CONTROLNET_CHECKPOINT:
        te, unet = train_base(latents, tokenizer, TINY, ONE_STEP, tmp_path, log=quiet)
    planted = plant(tmp_path, stem, marker)
    with pytest.raises(CheckpointError) as info:
        if stem == VAE_CHECKPOINT:
            train_vae(dataset, TINY, ONE_STEP, tmp_path, log=quiet)
        elif stem == BASE_CHECKPOINT:
            train_base(latents, tokenizer, TINY, ONE_STEP, tmp_path, log=quiet)
        else:
            train_controlnet(latents, tokenizer, te, unet, TINY, ONE_STEP, tmp_path, log=quiet)
    assert str(planted) in info.value.what and "training stage from scratch" in info.value.hint
    assert not marker.exists()
