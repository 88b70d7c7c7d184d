"""The latent-field mode (ED-NeRF): the fit, editing on latents without the VAE encoder, the export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.data.capture_dataset import load_capture
from backend.data.synthetic_capture import write_sphere_capture
from backend.field.latent_field import LatentField, LatentFieldConfig, is_latent_field, load_latent_field
from backend.field.latent_refiner import LatentRefiner, LatentRefinerConfig
from backend.field.latent_texture import DistillConfig
from backend.field.ngp_field import NGPFieldConfig, load_field
from backend.progress import JobCancelled, StageReporter
from backend.reconstruct.latent_trainer import CHECKPOINT_STEM, LatentTrainerConfig, fit_latent_field
from blender_piva import contract

CPU = torch.device("cpu")
SMALL_REFINER = LatentRefinerConfig(width=8, num_blocks=1, groups=4)


def tiny_config(refiner: bool = True) -> LatentTrainerConfig:
    return LatentTrainerConfig(
        field=NGPFieldConfig(num_levels=4, log2_table_size=10, max_resolution=64, hidden_dim=16),
        refiner=SMALL_REFINER if refiner else None,
        latent_hidden_dim=16,
        occupancy_resolution=8,
        warmup_steps=2,
        eval_views=1,
        distill=DistillConfig(views=2, steps=20, rays_per_view=256),
    )


def settings(**kw) -> contract.ReconstructSettings:
    base = dict(steps=30, rays_per_batch=72, samples_per_ray=16, checkpoint_every=10, preview_every=10**6, field="latent")
    base.update(kw)
    return contract.ReconstructSettings(**base)


@pytest.fixture(scope="module")
def model(tiny_model):
    from backend.diffusion.model import DiffusionModel
    from backend.stages.edit import resolve_controlnet

    return DiffusionModel.load(str(tiny_model), controlnet=resolve_controlnet(str(tiny_model), ""), device=CPU, dtype=torch.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("capture")
    write_sphere_capture(root, num_train=4, num_eval=1, resolution=12)
    return load_capture(root)


class Recorder(StageReporter):
    """Keeps every step's losses; asks to stop once ``stop_step`` was reported."""

    def __init__(self, stop_step: int = 10**9) -> None:
        super().__init__(stage="reconstruct")
        self.stop_step, self.seen, self.losses = stop_step, 0, []

    def progress(self, step, total, losses=None):
        self.seen = step
        self.losses.append(losses or {})

    def should_stop(self) -> bool:
        return self.seen >= self.stop_step


@pytest.fixture(scope="module")
def fitted(dataset, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    reporter = Recorder()
    metrics = fit_latent_field(dataset, settings(), out, model, device=CPU, seed=0, reporter=reporter, config=tiny_config())
    return out, metrics, reporter.losses


def test_refiner_starts_as_the_identity_and_mixes_neighbours_once_trained():
    refiner = LatentRefiner(SMALL_REFINER)
    z = torch.randn(2, 4, 6, 6)
    assert torch.equal(refiner(z), z)
    torch.nn.init.normal_(refiner.conv_out[-1].weight)
    z2 = z.clone()
    z2[:, :, 0, 0] += 1.0
    assert not torch.allclose(refiner(z)[:, :, 5, 5], refiner(z2)[:, :, 5, 5])  # attention reaches across the map
    with pytest.raises(ValueError, match=r"\[B, 4, h, w\]"):
        refiner(torch.zeros(1, 3, 4, 4))


def test_latent_fit_reduces_the_loss_and_saves_a_latent_and_an_rgb_field(fitted, dataset):
    out, metrics, losses = fitted
    first = np.mean([l["latent"] for l in losses[:3]])
    last = np.mean([l["latent"] for l in losses[-3:]])
    assert last < 0.7 * first, (first, last)
    assert {"heldout_psnr_db", "heldout_latent_mse", "depth_error_rel", "fit_seconds", "distill_psnr_db"} <= set(metrics)
    assert is_latent_field(out / "field")
    field_, refiner = load_latent_field(out / "field")
    assert field_.config.downsample == 2 and field_.config.channels == 4 and refiner is not None
    assert not torch.equal(field_.background, torch.zeros(4))  # the white image's latent
    rgb = load_field(out / "field")  # the exporter's view of it: the distilled RGB head
    assert rgb.config.num_levels == 4
    for key, value in rgb.state_dict().items():  # the same density; the colour head is the distilled one
        assert torch.equal(value, field_.ngp.state_dict()[key]), key


def test_latent_fit_cancelled_then_resumed_ends_where_an_uninterrupted_fit_ends(dataset, model, tmp_path):
    s = settings(steps=8, checkpoint_every=3)
    full, split = tmp_path / "full", tmp_path / "split"
    fit_latent_field(dataset, s, full, model, device=CPU, seed=1, reporter=StageReporter.silent("reconstruct"), config=tiny_config())
    with pytest.raises(JobCancelled):
        fit_latent_field(dataset, s, split, model, device=CPU, seed=1, reporter=Recorder(stop_step=5), config=tiny_config())
    assert (split / contract.CHECKPOINT_DIR / f"{CHECKPOINT_STEM}.json").is_file() and not (split / "field").exists()
    again = Recorder()
    fit_latent_field(dataset, s, split, model, device=CPU, seed=1, reporter=again, config=tiny_config())
    assert len(again.losses) == 3  # steps 6..8 only
    a = load_latent_field(full / "field")[0].state_dict()
    b = load_latent_field(split / "field")[0].state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    # A checkpoint of other settings is refused with the file to delete, not half loaded.
    from backend.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="other settings"):
        fit_latent_field(dataset, settings(steps=9, checkpoint_every=3, depth_weight=0.5), split, model, device=CPU, seed=1,
                         reporter=StageReporter.silent("reconstruct"), config=tiny_config())


def test_latent_fit_without_a_vae_says_to_use_the_rgb_field(dataset, tmp_path):
    class PixelModel:
        vae = None

    with pytest.raises(ValueError, match="reconstruct.field = rgb"):
        fit_latent_field(dataset, settings(), tmp_path, PixelModel(), device=CPU, seed=0,
                         reporter=StageReporter.silent("reconstruct"), config=tiny_config())


def _edit_spec(tmp_path, method: str, resolution: int = 12) -> contract.JobSpec:
    spec = contract.JobSpec(job_id="j", object_name="o", source_prompt="a red ball", target_prompt="a blue ball",
                            output_dir=str(tmp_path), device="cpu")
    spec.edit.method, spec.edit.steps, spec.edit.render_resolution = method, 3, resolution
    return spec


@pytest.mark.parametrize("method", contract.METHODS)
def test_every_method_edits_rendered_latents_without_the_vae_encoder(fitted, model, method, tmp_path):
    from backend.editing.registry import build_method
    from backend.stages.latent_edit import latent_step, setup_latent_edit

    field_, refiner = load_latent_field(fitted[0] / "field")
    spec = _edit_spec(tmp_path, method)
    calls = {"encode_images": 0, "vae.encode": 0}
    encode_images, vae_encode = model.encode_images, model.vae.encode

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    method_ = build_method(method, model, spec.edit)
    try:
        model.encode_images, model.vae.encode = count("encode_images", encode_images), count("vae.encode", vae_encode)
        state, source = setup_latent_edit(field_, refiner, model, method_, spec, CPU)
        before = [p.detach().clone() for p in state.field.latent_mlp.parameters()]
        for _ in range(2):
            losses = latent_step(state, source, refiner, model, spec, CPU)
    finally:
        model.encode_images, model.vae.encode = encode_images, vae_encode
        method_.close()
    assert calls == {"encode_images": 0, "vae.encode": 0}
    assert state.step == 2 and all(np.isfinite(v) for v in losses.values())
    after = list(state.field.latent_mlp.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # the method's gradient reached the field


def test_latent_edit_refuses_a_resolution_the_vae_does_not_divide(fitted, model, tmp_path):
    from backend.editing.registry import build_method
    from backend.stages.latent_edit import edit_latent_field

    field_, refiner = load_latent_field(fitted[0] / "field")
    spec = _edit_spec(tmp_path, "dds", resolution=13)
    from backend.stages.context import StageError

    method_ = build_method("dds", model, spec.edit)
    with pytest.raises(StageError, match="multiple of 2"):
        edit_latent_field(field_, refiner, model, method_, spec, tmp_path / "edit", device=CPU, reporter=StageReporter.silent("edit"))
    method_.close()


def test_latent_edit_refuses_field_averaging_it_does_not_have(fitted, model, tmp_path):
    from backend.editing.registry import build_method
    from backend.stages.context import StageError
    from backend.stages.latent_edit import edit_latent_field

    field_, refiner = load_latent_field(fitted[0] / "field")
    spec = _edit_spec(tmp_path, "dds")
    spec.edit.field_average_decay = 0.9
    method_ = build_method("dds", model, spec.edit)
    try:
        with pytest.raises(StageError, match="field_average_decay") as info:
            edit_latent_field(field_, refiner, model, method_, spec, tmp_path / "edit", device=CPU, reporter=StageReporter.silent("edit"))
    finally:
        method_.close()
    assert "set edit.field_average_decay to 0" in info.value.hint and not (tmp_path / "edit" / "field").exists()


def test_export_of_a_latent_field_is_a_textured_mesh(fitted, tmp_path):
    from backend.export.pipeline import export_field

    field_ = load_field(fitted[0] / "field")
    out = export_field(
        field_, contract.ExportSettings(grid_resolution=32, face_budget=400, texture_size=32, iso_density=0.2),
        np.eye(4), tmp_path, reporter=StageReporter.silent("export"),
    )
    assert (tmp_path / out["files"]["mesh"]).stat().st_size > 0 and (tmp_path / out["files"]["texture"]).is_file()
    from PIL import Image

    texture = np.asarray(Image.open(tmp_path / out["files"]["texture"]).convert("RGB"), dtype=np.float32)
    assert texture.std() > 0.0  # colours came from the distilled head, not one flat value


def test_latent_field_config_round_trips_without_a_refiner(tmp_path):
    from backend.field.latent_field import save_latent_field

    field_ = LatentField(NGPFieldConfig(num_levels=2, log2_table_size=8, max_resolution=16, hidden_dim=8),
                         LatentFieldConfig(downsample=4, refiner=None))
    save_latent_field(tmp_path, field_, None)
    loaded, refiner = load_latent_field(tmp_path)
    assert refiner is None and loaded.config.downsample == 4
    assert json.loads((tmp_path / "latent_config.json").read_text())["refiner"] is None
    with pytest.raises(FileNotFoundError, match="reconstruct.field = latent"):
        load_latent_field(tmp_path / "nothing")
