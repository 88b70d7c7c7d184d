"""The 2D path: every method edits an image through the real tiny model on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.diffusion.model import DiffusionModel
from backend.diffusion.tiny import save_tiny_model
from backend.edit2d import edit_image, main_edit2d
from backend.progress import JobCancelled, StageReporter
from blender_piva.contract import METHODS, EditSettings, EventReader, EventWriter


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def model(tiny_dir):
    return DiffusionModel.load(str(tiny_dir), device=torch.device("cpu"), dtype=torch.float32)


def image():
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    return np.stack([xx, yy, 0.5 * np.ones_like(xx)], -1).astype(np.float32)


@pytest.fixture(scope="module")
def unchanged(model):
    """The input after the VAE round trip: what an edit of 0 steps returns."""
    return edit_image(image(), "a red cube", "a blue cube", "dds", EditSettings(method="dds"), model, steps=0)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_changes_the_image(model, unchanged, method):
    img = image()
    settings = EditSettings(method=method, steps=2, field_learning_rate=0.5, guidance_scale=7.5)
    edited = edit_image(img, "a red cube", "a blue cube", method, settings, model, seed=1)
    assert edited.shape == img.shape and np.isfinite(edited).all()
    assert np.abs(edited - unchanged).max() > 1e-3
    if method == "piva":  # seeded LoRA init and noise: reproducible, and the adapters were removed
        again = edit_image(img, "a red cube", "a blue cube", method, settings, model, seed=1)
        np.testing.assert_allclose(again, edited, atol=1e-6)


def test_progress_previews_and_cancel(model, tmp_path):
    writer = EventWriter(tmp_path / "events.jsonl")
    stops = iter([False, True])
    reporter = StageReporter(stage="edit", events=writer, preview_dir=tmp_path, cancel_check=lambda: next(stops))
    with pytest.raises(JobCancelled):
        edit_image(image(), "a", "b", "dds", EditSettings(method="dds", steps=5, preview_every=1), model, reporter=reporter)
    events = EventReader(tmp_path / "events.jsonl").poll()
    kinds = [e.type for e in events]
    assert kinds.count("progress") == 2 and kinds.count("preview") == 2 and "grad_norm" in events[1].losses


def test_cli_writes_the_edited_png(tiny_dir, tmp_path):
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray((image() * 255).astype(np.uint8)).resize((80, 64)).save(src)
    out = tmp_path / "out.png"
    code = main_edit2d([str(src), str(out), "--source", "a cat", "--target", "a dog", "--method", "piva",
                        "--model", str(tiny_dir), "--steps", "2", "--size", "64", "--param", "t_max=0.9"])
    assert code == 0
    assert Image.open(out).size == (64, 64)


@pytest.mark.parametrize(
    "setup, argv_change, message",
    [
        (lambda p: p.write_text("not an image"), {}, "as an image (not an image file); pass a PNG or JPEG file"),
        (lambda p: p.write_bytes(_png_bytes()[:60]), {}, "as an image ("),
        (None, {"--source": " "}, "--source is empty"),
        (None, {"--target": ""}, "--target is empty"),
        (None, {"--steps": "-3"}, "--steps must be >= 0"),
    ],
)
def test_cli_refuses_bad_input_in_one_line_before_loading_a_model(tmp_path, capsys, setup, argv_change, message):
    src = tmp_path / "in.png"
    src.write_bytes(_png_bytes())
    if setup is not None:
        setup(src)
    options = {"--source": "a cat", "--target": "a dog", "--model": str(tmp_path / "no_model_here"), "--steps": "2"}
    options.update(argv_change)
    argv = [str(src), str(tmp_path / "out.png"), *[x for kv in options.items() for x in kv]]
    assert main_edit2d(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out.png").exists()


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((image() * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
