"""bench/toy_edit.py: its ablation overrides reach the method configs they name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from backend.editing.registry import build_config

_PATH = Path(__file__).resolve().parents[2] / "bench" / "toy_edit.py"


@pytest.fixture(scope="module")
def toy_edit():
    spec = importlib.util.spec_from_file_location("bench_toy_edit", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overrides_are_parsed_as_json_per_method(toy_edit):
    parsed = toy_edit.parse_overrides(
        ["piva.lambda_identity=1.5", "piva.use_source_latent=true", "pds.schedule=uniform"]
    )
    assert parsed == {"piva": {"lambda_identity": 1.5, "use_source_latent": True}, "pds": {"schedule": "uniform"}}
    config = build_config("piva", params=parsed["piva"])
    assert (config.lambda_identity, config.use_source_latent) == (1.5, True)


@pytest.mark.parametrize("bad", ["piva", "lambda_identity=1", "piva.=1"])
def test_malformed_override_says_the_expected_form(toy_edit, bad):
    with pytest.raises(SystemExit, match="METHOD.KEY=VALUE"):
        toy_edit.parse_overrides([bad])


def test_ablation_without_a_tag_is_refused(toy_edit, capsys):
    with pytest.raises(SystemExit):
        toy_edit.main(["--param", "piva.lambda_identity=1.0"])
    assert "--tag" in capsys.readouterr().err
