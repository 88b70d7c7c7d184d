"""The toy benchmarks' verdicts (backend/toy/judge.py): edit lists, success by the oracle's votes,
drift per kind, speckle against the source, bootstrap intervals."""

from __future__ import annotations

import json
import math

import pytest
import torch

from backend.toy import judge
from backend.toy.judge import DEFAULT_EDITS, KINDS, Edit, EditListError, bootstrap_mean, load_edits, score_run

COLORS = ("red", "green", "blue", "yellow", "cyan", "purple")
SHAPES = ("cube", "sphere", "cylinder", "cone", "torus")


class ScriptedOracle:
    """Stands in for the trained oracle: says what it is told per view (the verdict logic is under test)."""

    def __init__(self, seen: list[tuple[str, str]]):
        self.seen = seen

    def classify(self, rgb):
        assert rgb.shape[0] == len(self.seen)
        return [c for c, _ in self.seen], [s for _, s in self.seen]


def square(color: tuple[float, float, float], size: int = 16, lo: int = 4, hi: int = 12, views: int = 4):
    rgb = torch.ones(views, 3, size, size)
    mask = torch.zeros(views, size, size, dtype=torch.bool)
    mask[:, lo:hi, lo:hi] = True
    rgb[:, :, lo:hi, lo:hi] = torch.tensor(color)[None, :, None, None]
    return rgb, mask


def test_default_edits_cover_every_kind_colour_and_shape_at_least_sixteen_times():
    assert len(DEFAULT_EDITS) >= 16
    assert {e.kind for e in DEFAULT_EDITS} == set(KINDS)
    for kind in KINDS:
        assert sum(e.kind == kind for e in DEFAULT_EDITS) >= 5
    assert {e.source[0] for e in DEFAULT_EDITS} == set(COLORS) == {e.target[0] for e in DEFAULT_EDITS}
    assert {e.source[1] for e in DEFAULT_EDITS} == set(SHAPES) == {e.target[1] for e in DEFAULT_EDITS}
    # every default edit passes the file loader's own checks
    items = [{"kind": e.kind, "source": list(e.source), "target": list(e.target)} for e in DEFAULT_EDITS]
    assert load_edits_from(items) == list(DEFAULT_EDITS)


def load_edits_from(items, tmp=None):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "edits.json"
        path.write_text(json.dumps(items))
        return load_edits(path, COLORS, SHAPES)


@pytest.mark.parametrize(("items", "says"), [
    ({"kind": "shape"}, "non-empty JSON list"),
    ([], "non-empty JSON list"),
    ([{"kind": "colour", "source": ["red", "cube"], "target": ["blue", "cube"]}], "is not one of"),
    ([{"kind": "shape", "source": ["red", "cube"]}], "exactly the keys"),
    ([{"kind": "shape", "source": ["white", "cube"], "target": ["white", "cone"]}], "with a colour of"),
    ([{"kind": "shape", "source": ["red", "cube"], "target": ["red", "pyramid"]}], "a shape of"),
    ([{"kind": "appearance", "source": ["red", "cube"], "target": ["red", "cone"]}], "the colour only"),
    ([{"kind": "both", "source": ["red", "cube"], "target": ["blue", "cube"]}], "colour and shape"),
])
def test_bad_edit_lists_say_what_is_wrong(items, says):
    with pytest.raises(EditListError, match=says):
        load_edits_from(items)


def test_an_unreadable_edit_list_names_the_expected_form(tmp_path):
    path = tmp_path / "edits.json"
    path.write_text("[{")
    with pytest.raises(EditListError, match="JSON list like"):
        load_edits(path, COLORS, SHAPES)


def test_success_needs_the_target_on_three_of_four_views():
    edit = Edit("appearance", ("red", "cube"), ("blue", "cube"))
    rgb, mask = square((0.1, 0.2, 0.9))
    src, src_mask = square((0.9, 0.1, 0.1))
    three = ScriptedOracle([("blue", "cube")] * 3 + [("cyan", "cube")])
    two = ScriptedOracle([("blue", "cube")] * 2 + [("blue", "sphere"), ("cyan", "cube")])
    assert score_run(edit, three, rgb, mask, src, src_mask).success
    assert not score_run(edit, two, rgb, mask, src, src_mask).success


def test_drift_is_silhouette_change_for_colour_edits_and_colour_change_for_shape_edits():
    src, src_mask = square((0.9, 0.1, 0.1))
    moved, moved_mask = square((0.9, 0.1, 0.1), lo=6, hi=14)  # 6x6 overlap of two 8x8 squares
    oracle = ScriptedOracle([("red", "cube")] * 4)
    colour_edit = Edit("appearance", ("red", "cube"), ("blue", "cube"))
    iou = 36 / (64 + 64 - 36)
    assert score_run(colour_edit, oracle, moved, moved_mask, src, src_mask).drift == pytest.approx(1 - iou)
    shape_edit = Edit("shape", ("red", "cube"), ("red", "sphere"))
    recoloured, _ = square((0.9, 0.1, 0.4))
    assert score_run(shape_edit, oracle, recoloured, src_mask, src, src_mask).drift == pytest.approx(0.3, abs=1e-5)
    both = Edit("both", ("red", "cube"), ("blue", "sphere"))
    assert math.isnan(score_run(both, oracle, moved, moved_mask, src, src_mask).drift)


def test_speckle_is_one_for_the_source_and_grows_with_mottling():
    g = torch.Generator().manual_seed(0)
    src, mask = square((0.9, 0.1, 0.1), size=32, lo=4, hi=28)
    src = src + 0.01 * torch.randn(src.shape, generator=g)  # a render is never perfectly flat
    oracle = ScriptedOracle([("red", "cube")] * 4)
    edit = Edit("appearance", ("red", "cube"), ("blue", "cube"))
    assert score_run(edit, oracle, src, mask, src, mask).speckle == pytest.approx(1.0)
    mottled = src + 0.1 * torch.randn(src.shape, generator=g)
    assert score_run(edit, oracle, mottled, mask, src, mask).speckle > 5.0
    # a smooth shading gradient is not speckle
    ramp = src.clone()
    ramp[:, :, 4:28, 4:28] *= torch.linspace(0.6, 1.0, 24)[None, None, None, :]
    assert score_run(edit, oracle, ramp, mask, src, mask).speckle < 1.5


def test_white_distance_mask_finds_the_object_on_white():
    rgb, mask = square((0.9, 0.8, 0.1))
    assert torch.equal(judge.white_distance_mask(rgb), mask)


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_runs():
    few = [0.0, 1.0] * 3
    many = [0.0, 1.0] * 60
    mean, lo, hi = bootstrap_mean(few)
    assert mean == 0.5 and lo <= mean <= hi
    _, lo_many, hi_many = bootstrap_mean(many)
    assert hi_many - lo_many < hi - lo
    assert bootstrap_mean([1.0, float("nan"), 3.0])[0] == 2.0
    assert all(math.isnan(v) for v in bootstrap_mean([float("nan")]))


def test_cluster_bootstrap_counts_agreeing_seeds_of_an_edit_as_one_draw():
    # 6 edits x 3 seeds whose seeds agree: the information of 6 runs, not 18
    per_edit = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    values = [v for v in per_edit for _ in range(3)]
    edits = [i for i in range(6) for _ in range(3)]
    mean, lo, hi = bootstrap_mean(values, edits)
    _, lo_iid, hi_iid = bootstrap_mean(values)
    _, lo_six, hi_six = bootstrap_mean(per_edit)
    assert mean == 0.5
    assert hi - lo > 1.3 * (hi_iid - lo_iid)  # about sqrt(3) wider than pretending 18 independent runs
    assert abs((hi - lo) - (hi_six - lo_six)) < 0.1  # and as wide as the 6 edits' own means
    # one key per value is the i.i.d. bootstrap exactly; NaNs drop out of their cluster
    assert bootstrap_mean(values, list(range(18))) == bootstrap_mean(values)
    assert bootstrap_mean([1.0, float("nan"), 3.0, 5.0], ["a", "a", "b", "b"])[0] == 3.0
    with pytest.raises(ValueError, match="one key per value"):
        bootstrap_mean(values, edits[:-1])


def test_summary_prints_every_figure_with_its_interval():
    score = judge.RunScore(True, 0.1, 1.2, ["blue cube"] * 4)
    lines = judge.summary_lines("dds", [score, score])
    names = [line.split(":")[0] for line in lines]
    assert names == ["toy_success_dds", "toy_success_dds_ci95", "toy_drift_dds", "toy_drift_dds_ci95",
                     "toy_speckle_dds", "toy_speckle_dds_ci95"]
    assert lines[0] == "toy_success_dds: 1.000"
