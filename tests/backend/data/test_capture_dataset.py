import json

import pytest
import torch

from backend.data.capture_dataset import CaptureError, load_capture
from backend.data.synthetic_capture import write_sphere_capture


@pytest.fixture()
def capture(tmp_path):
    write_sphere_capture(tmp_path / "capture", num_train=3, num_eval=1, resolution=16)
    return tmp_path / "capture"


def test_loads_splits_and_values(capture):
    ds = load_capture(capture)
    assert ds.train.rgb.shape == (3, 16, 16, 3) and ds.eval.rgb.shape == (1, 16, 16, 3)
    assert ds.train.alpha.shape == (3, 16, 16) and ds.train.c2w.shape == (3, 4, 4)
    # Background pixels are white, transparent and have no depth.
    bg = ds.train.alpha == 0
    assert bool(bg.any()) and bool((ds.train.rgb[bg] == 1.0).all()) and bool((ds.train.depth[bg] == 0).all())
    # Depth on the sphere: between camera distance - radius and distance, in normalised units.
    fg = ds.train.alpha == 1
    assert float(ds.train.depth[fg].min()) > 3.0 - 0.6 - 1e-3 and float(ds.train.depth[fg].max()) < 4.0
    # The ray through a covered pixel, followed for its planar depth, lands on the sphere.
    v, j, i = [int(k) for k in torch.nonzero(fg)[0]]
    o, d = ds.train.rays(v)
    p = o[j, i] + d[j, i] * ds.train.depth[v, j, i]
    assert abs(float(p.norm()) - 0.6) < 1e-3


def test_missing_transforms(tmp_path):
    with pytest.raises(CaptureError, match="transforms.json does not exist"):
        load_capture(tmp_path)


def test_malformed_transforms(capture):
    (capture / "transforms.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CaptureError, match="not valid JSON"):
        load_capture(capture)


def test_frame_without_required_keys(capture):
    meta = json.loads((capture / "transforms.json").read_text())
    del meta["frames"][1]["fl_x"]
    (capture / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(CaptureError, match=r"frames\[1\] lacks fl_x"):
        load_capture(capture)


def test_missing_image_names_the_file(capture):
    (capture / "images" / "train_0001.png").unlink()
    with pytest.raises(CaptureError, match="train_0001.png .*is missing; capture the object again"):
        load_capture(capture)


def test_missing_depth_names_the_file(capture):
    (capture / "depth" / "eval_0000.png").unlink()
    with pytest.raises(CaptureError, match="depth/eval_0000.png"):
        load_capture(capture)


@pytest.mark.parametrize("folder", ["images", "depth"])
def test_truncated_png_names_the_file_and_the_folder_to_delete(capture, folder):
    png = capture / folder / "train_0001.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    with pytest.raises(CaptureError) as info:
        load_capture(capture)
    message = str(info.value)
    assert f"{folder}/train_0001.png" in message and "damaged or truncated" in message
    assert message.endswith(f"re-run the capture: delete {capture} and run the edit again")


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda m: m["frames"].__setitem__(0, "images/eval_0000.png"), "frames[0] is str, not an object"),
        (lambda m: m["frames"][1].update(fl_x="wide"), "frames[1].fl_x is 'wide', not a number"),
        (lambda m: m["frames"][2].update(transform_matrix=[[1, 0], [0]]), "frames[2].transform_matrix is not a 4x4"),
        (lambda m: m["frames"][0].update(file_path=7), "frames[0].file_path is 7, not a file name"),
        (lambda m: m.update(aabb="big"), "'aabb' or 'background' is not a list of numbers"),
    ],
)
def test_malformed_transforms_entries_name_the_entry_and_the_fix(capture, mutate, problem):
    meta = json.loads((capture / "transforms.json").read_text())
    mutate(meta)
    (capture / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(CaptureError) as info:
        load_capture(capture)
    assert problem in str(info.value) and f"delete {capture}" in str(info.value)
