"""The toy benchmarks' shared options (bench/_toy.py): overrides, seeds, methods and edit lists are
checked before anything runs, with errors that say the fix."""

from __future__ import annotations

import argparse
import json

import pytest

from backend.editing.registry import build_config
from backend.toy.judge import DEFAULT_EDITS

from ..script_modules import ROOT, load_script

_BENCH = ROOT / "bench"


def _load(name: str):
    return load_script(f"bench/{name}.py", f"bench_{name}")


@pytest.fixture(scope="module")
def toy():
    return _load("_toy")


def parse(toy, argv: list[str]):
    parser = argparse.ArgumentParser(prog="bench")
    toy.benchmark_arguments(parser, steps=10)
    return toy.parse_benchmark(parser.parse_args(argv), parser)


def test_defaults_are_every_method_three_seeds_and_the_default_edits(toy):
    methods, seeds, edits, overrides = parse(toy, [])
    assert methods == ["sds", "dds", "pds", "ssd", "piva"]
    assert seeds == [0, 1, 2]
    assert edits == list(DEFAULT_EDITS) and overrides == {}


def test_overrides_are_parsed_as_json_per_method(toy):
    argv = ["--tag", "x", "--param", "piva.lambda_identity=1.5", "--param", "piva.use_source_latent=true",
            "--param", "pds.schedule=uniform"]
    _, _, _, parsed = parse(toy, argv)
    assert parsed == {"piva": {"lambda_identity": 1.5, "use_source_latent": True}, "pds": {"schedule": "uniform"}}
    config = build_config("piva", params=parsed["piva"])
    assert (config.lambda_identity, config.use_source_latent) == (1.5, True)


@pytest.mark.parametrize("bad", ["piva", "lambda_identity=1", "piva.=1"])
def test_malformed_override_says_the_expected_form(toy, bad, capsys):
    with pytest.raises(SystemExit):
        parse(toy, ["--tag", "x", "--param", bad])
    assert "METHOD.KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "says"), [
    (["--param", "piva.lambda_identity=1.0"], "--tag"),
    (["--methods", "dds,nerf"], "nerf"),
    (["--seeds", "0,x"], "comma-separated integers"),
    (["--seeds", ","], "at least one"),
])
def test_bad_options_are_refused_with_the_fix(toy, argv, says, capsys):
    with pytest.raises(SystemExit):
        parse(toy, argv)
    assert says in capsys.readouterr().err


def test_an_edit_list_file_replaces_the_default_edits(toy, tmp_path):
    path = tmp_path / "edits.json"
    path.write_text(json.dumps([{"kind": "both", "source": ["red", "cube"], "target": ["blue", "torus"]}]))
    _, _, edits, _ = parse(toy, ["--edits", str(path)])
    assert [(e.kind, e.source, e.target) for e in edits] == [("both", ("red", "cube"), ("blue", "torus"))]


def test_a_bad_edit_list_is_refused_before_anything_renders(toy, tmp_path, capsys):
    path = tmp_path / "edits.json"
    path.write_text(json.dumps([{"kind": "shape", "source": ["red", "cube"], "target": ["blue", "cube"]}]))
    with pytest.raises(SystemExit):
        parse(toy, ["--edits", str(path)])
    assert "must change the shape only" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["toy_edit", "toy_edit2d"])
def test_both_benchmarks_refuse_an_untagged_ablation(script, capsys):
    with pytest.raises(SystemExit):
        _load(script).main(["--param", "piva.lambda_identity=1.0"])
    assert "--tag" in capsys.readouterr().err


def arms(toy, argv: list[str]):
    parser = argparse.ArgumentParser(prog="bench")
    toy.benchmark_arguments(parser, steps=10)
    args = parser.parse_args(argv)
    methods, _, _, overrides = toy.parse_benchmark(args, parser)
    return toy.benchmark_arms(args, parser, methods, overrides)


def test_variants_add_columns_after_the_methods_with_their_own_params(toy, tmp_path):
    path = tmp_path / "variants.json"
    path.write_text(json.dumps([{"tag": "l75", "method": "piva", "params": {"lambda_identity": 7.5}},
                                {"tag": "cfg30", "method": "sds", "params": {"guidance_scale": 30}}]))
    columns = arms(toy, ["--methods", "dds", "--variants", str(path)])
    assert [(a.label, a.method, a.params) for a in columns] == [
        ("dds", "dds", {}), ("piva_l75", "piva", {"lambda_identity": 7.5}), ("sds_cfg30", "sds", {"guidance_scale": 30})]
    assert build_config("piva", params=columns[1].params).lambda_identity == 7.5


def test_tagged_methods_keep_their_labels_and_params(toy):
    columns = arms(toy, ["--methods", "dds,piva", "--tag", "w1", "--param", "piva.weighting=one"])
    assert [(a.label, a.params) for a in columns] == [("dds_w1", {}), ("piva_w1", {"weighting": "one"})]


@pytest.mark.parametrize("name", sorted(p.name for p in _BENCH.glob("*variants*.json")))
def test_the_shipped_variant_lists_are_valid(toy, name):
    columns = toy.load_variants(_BENCH / name)
    assert columns and len({a.label for a in columns}) == len(columns)
    assert any(a.method == "piva" for a in columns)


def test_a_variant_sets_edit_settings_on_the_job_of_each_of_its_runs(toy, tmp_path):
    from blender_piva.contract import EditSettings

    path = tmp_path / "variants.json"
    path.write_text(json.dumps([{"tag": "coarse", "method": "piva", "edit": {"fine_level_limit": 0.5}}]))
    (column,) = arms(toy, ["--methods", "dds", "--variants", str(path)])[1:]
    assert column.edit == {"fine_level_limit": 0.5} and column.params == {}
    settings = toy.apply_edit_settings(EditSettings(), column.edit)
    assert settings.fine_level_limit == 0.5 and settings.field_learning_rate == EditSettings().field_learning_rate


@pytest.mark.parametrize(("edit", "says"), [
    ({"fine_levels": 0.5}, "fine_levels unknown or set by the benchmark; choose from"),
    ({"steps": 10}, "steps unknown or set by the benchmark"),  # --steps sets it, for every column alike
    ({"fine_level_limit": -1.0}, "edit.fine_level_limit"),
    ({"field_learning_rate": "fast"}, "edit.field_learning_rate"),
    ([0.5], "edit must be an object of edit settings"),
])
def test_bad_edit_settings_of_a_variant_are_refused_with_the_fix(toy, tmp_path, edit, says, capsys):
    path = tmp_path / "variants.json"
    path.write_text(json.dumps([{"tag": "x", "method": "piva", "edit": edit}]))
    with pytest.raises(SystemExit):
        arms(toy, ["--methods", "dds", "--variants", str(path)])
    err = capsys.readouterr().err
    assert says in err and "entry 0" in err


def test_the_2d_benchmark_refuses_a_variant_with_edit_settings(tmp_path, capsys):
    path = tmp_path / "variants.json"
    path.write_text(json.dumps([{"tag": "coarse", "method": "piva", "edit": {"fine_level_limit": 0.5}}]))
    with pytest.raises(SystemExit):
        _load("toy_edit2d").main(["--methods", "dds", "--variants", str(path)])
    err = capsys.readouterr().err
    assert "piva_coarse set edit settings" in err and "bench/toy_edit.py" in err


@pytest.mark.parametrize(("entries", "says"), [
    ([{"tag": "x", "method": "nerf"}], "method 'nerf' is not one of"),
    ([{"tag": "Bad Tag", "method": "piva"}], "lower-case letters"),
    ([{"tag": "x", "method": "piva", "params": {"lambda": 1}}], "has no parameter 'lambda'"),
    ([{"tag": "x", "method": "piva", "param": {}}], 'optional "params"'),
    ([], "non-empty JSON list"),
    ([{"tag": "x", "method": "piva"}, {"tag": "x", "method": "piva"}], "both labelled piva_x"),
])
def test_a_bad_variant_list_is_refused_with_where_and_the_fix(toy, tmp_path, entries, says, capsys):
    path = tmp_path / "variants.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(SystemExit):
        arms(toy, ["--methods", "dds", "--variants", str(path)])
    err = capsys.readouterr().err
    assert says in err
    if "labelled" not in says:  # a file's own mistakes name the file (and the entry, where there is one)
        assert str(path) in err and ("entry 0" in err or not entries)


def test_a_variant_list_that_is_not_json_says_so(toy, tmp_path, capsys):
    path = tmp_path / "variants.json"
    path.write_text("[{tag: x}]")
    with pytest.raises(SystemExit):
        arms(toy, ["--variants", str(path)])
    assert "cannot read the variant list" in capsys.readouterr().err


def test_the_model_tag_follows_the_weights_so_a_retrained_model_is_not_rescored(toy, tmp_path):
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"first weights")
    (model / "model_index.json").write_text("{}")
    first = toy.model_tag(str(model))
    (model / "model_index.json").write_text('{"edited": true}')  # not weights: the same tag
    assert toy.model_tag(str(model)) == first and first.startswith("model-")
    weights.write_bytes(b"retrained weights")
    assert toy.model_tag(str(model)) != first
    assert toy.model_tag("stabilityai/stable-diffusion-2-1-base") == "stabilityai-stable-diffusion-2-1-base"


def test_a_2d_run_cache_round_trips_and_a_torn_or_pickled_file_reads_as_not_finished(toy, tmp_path):
    import numpy as np

    images = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    path = tmp_path / "edits2d" / "model-x" / "dds_run.npy"
    assert toy.load_cached_images(path) is None
    toy.save_cached_images(path, images)
    assert np.array_equal(toy.load_cached_images(path), images)
    assert [p.name for p in path.parent.iterdir()] == ["dds_run.npy"]  # no temporary left behind
    path.write_bytes(path.read_bytes()[:100])  # torn: computed again
    assert toy.load_cached_images(path) is None
    np.save(path, np.array([{"planted": "object"}], dtype=object), allow_pickle=True)
    assert toy.load_cached_images(path) is None  # never unpickled
    np.save(path, np.zeros((4, 8, 8), dtype=np.float32))  # not a run's [B, H, W, 3] images
    assert toy.load_cached_images(path) is None
