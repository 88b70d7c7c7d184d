"""The main job's check: the oracle's verdict on folders of rendered views (``python -m backend judge``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend.toy.judge_views import ViewsError, judge_views, main_judge
from backend.toy.oracle import save_oracle

from .test_oracle import TINY, tiny_oracle


def write_views(folder, images):  # images [V, H, W, 3] in [0, 1]
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).save(folder / f"view_{i}.png")
    return folder


def blue_squares(n=4, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    images = np.ones((n, 16, 16, 3))
    images[:, 4:12, 4:12] = (0.10, 0.22, 0.88)
    images[:, 4:12, 4:12] += noise * rng.standard_normal((n, 8, 8, 3))
    return images


def test_agreement_is_the_fraction_of_views_seen_as_the_target(tmp_path):
    oracle = tiny_oracle()
    source = write_views(tmp_path / "source", blue_squares())
    verdict = judge_views(source, source, "blue", "cube", oracle)
    colors, shapes = oracle.classify(torch.from_numpy(blue_squares()).permute(0, 3, 1, 2).float())
    expected = sum(c == "blue" and s == "cube" for c, s in zip(colors, shapes)) / 4
    assert verdict.agree == pytest.approx(expected)
    assert verdict.seen == [f"{c} {s}" for c, s in zip(colors, shapes)]
    assert verdict.speckle_ratio == pytest.approx(1.0)  # the source against itself


def test_a_mottled_result_has_a_speckle_ratio_above_one(tmp_path):
    source = write_views(tmp_path / "source", blue_squares(noise=0.02))
    result = write_views(tmp_path / "result", blue_squares(noise=0.2, seed=1))
    assert judge_views(result, source, "blue", "cube", tiny_oracle()).speckle_ratio > 3.0


def test_folders_that_cannot_be_judged_say_why(tmp_path):
    source = write_views(tmp_path / "source", blue_squares())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ViewsError, match="no PNG views"):
        judge_views(tmp_path / "empty", source, "blue", "cube", tiny_oracle())
    other = write_views(tmp_path / "other", blue_squares(n=3))
    with pytest.raises(ViewsError, match="same view names"):
        judge_views(other, source, "blue", "cube", tiny_oracle())
    with pytest.raises(ViewsError, match="knows colours"):
        judge_views(source, source, "mauve", "cube", tiny_oracle())


def test_the_command_prints_one_json_verdict(tmp_path, capsys):
    folder = save_oracle(tiny_oracle(), tmp_path / "oracle")
    source = write_views(tmp_path / "source", blue_squares())
    code = main_judge([str(source), str(source), "--color", "blue", "--shape", "cube", "--oracle", str(folder), "--json"])
    assert code == 0
    verdict = json.loads(capsys.readouterr().out)
    assert set(verdict) == {"agree", "speckle_ratio", "seen"} and len(verdict["seen"]) == 4
    assert main_judge([str(tmp_path / "nowhere"), str(source), "--color", "blue", "--shape", "cube", "--oracle", str(folder)]) == 1
