"""One source of defaults: a job that leaves a shared EditSettings field unset (None) runs every
method at the method config's own default; a value the user sets overrides it."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from backend.editing.registry import METHODS, SHARED_SETTINGS, build_config
from blender_piva import contract

USER_VALUES = {"guidance_scale": 12.5, "lambda_identity": 0.25, "lora_rank": 8, "lora_learning_rate": 3e-4}
"""A user value per shared field, different from every method's default."""

PAIRS = [(name, key) for name in METHODS for key in SHARED_SETTINGS]


def _defaults(name: str) -> dict:
    return {f.name: f.default for f in dataclasses.fields(METHODS[name].config_class)}


def _has(name: str, key: str) -> bool:
    return key in _defaults(name)


def test_every_shared_field_has_a_user_value_unlike_every_default():
    assert set(USER_VALUES) == set(SHARED_SETTINGS)
    for name, key in PAIRS:
        if _has(name, key):
            assert USER_VALUES[key] != _defaults(name)[key], (name, key)


def test_every_settings_field_named_like_a_config_field_is_shared():
    """A new EditSettings field that a config also has would otherwise be silently ignored."""
    settings_fields = {f.name for f in dataclasses.fields(contract.EditSettings)}
    config_fields = set().union(*(_defaults(name) for name in METHODS))
    assert settings_fields & config_fields == set(SHARED_SETTINGS)


def test_shared_settings_fields_default_to_none():
    settings = contract.EditSettings()
    assert {key: getattr(settings, key) for key in SHARED_SETTINGS} == dict.fromkeys(SHARED_SETTINGS)


@pytest.mark.parametrize("name", list(METHODS))
def test_default_settings_give_the_method_config_defaults(name):
    cls = METHODS[name].config_class
    assert build_config(name, contract.EditSettings(method=name)) == cls()
    assert build_config(name, contract.EditSettings()) == cls()  # method= does not matter here


@pytest.mark.parametrize(("name", "key"), PAIRS)
def test_unset_shared_field_keeps_the_method_default(name, key):
    config = build_config(name, contract.EditSettings(method=name))
    if _has(name, key):
        assert getattr(config, key) == _defaults(name)[key]
    else:
        assert not hasattr(config, key)


def test_guidance_defaults_are_the_papers():
    settings = contract.EditSettings()
    assert {name: build_config(name, settings).guidance_scale for name in ("sds", "dds", "pds", "piva")} == {
        "sds": 100.0, "dds": 7.5, "pds": 100.0, "piva": 7.5,
    }


@pytest.mark.parametrize(("name", "key"), PAIRS)
def test_user_value_overrides_the_method_default(name, key):
    config = build_config(name, contract.EditSettings(method=name, **{key: USER_VALUES[key]}))
    expected = {**_defaults(name), **({key: USER_VALUES[key]} if _has(name, key) else {})}
    assert dataclasses.asdict(config) == expected


def test_method_params_override_a_user_settings_value():
    settings = contract.EditSettings(method="sds", guidance_scale=12.5, method_params={"guidance_scale": 30.0})
    assert build_config("sds", settings).guidance_scale == 30.0


@pytest.mark.parametrize("name", list(METHODS))
def test_any_settings_like_object_works(name):
    """Missing attributes and None both mean "not given"; a set attribute is copied."""
    cls = METHODS[name].config_class
    assert build_config(name, SimpleNamespace()) == cls()
    assert build_config(name, SimpleNamespace(**dict.fromkeys(SHARED_SETTINGS), method_params=None)) == cls()
    set_all = build_config(name, SimpleNamespace(**USER_VALUES))
    for key in SHARED_SETTINGS:
        if _has(name, key):
            assert getattr(set_all, key) == USER_VALUES[key]


def test_the_paper_preset_sets_the_papers_values_below_what_the_job_sets():
    from backend.editing.piva import PAPER

    config = build_config("piva", contract.EditSettings(method_params={"preset": "paper"}))
    assert {key: getattr(config, key) for key in PAPER} == PAPER
    assert PAPER["use_source_latent"] is False and PAPER["lambda_identity"] == 0.4  # section 3.2, appendix A
    settings = contract.EditSettings(lambda_identity=0.25, method_params={"preset": "paper", "lora_rank": 8})
    config = build_config("piva", settings)
    assert (config.lambda_identity, config.lora_rank, config.guidance_scale) == (0.25, 8, 7.5)


def test_an_unknown_preset_names_the_known_ones():
    from backend.editing.registry import MethodConfigError

    with pytest.raises(MethodConfigError, match="no preset 'fast'; allowed: paper"):
        build_config("piva", contract.EditSettings(method_params={"preset": "fast"}))
    with pytest.raises(MethodConfigError, match="has no presets"):
        build_config("dds", contract.EditSettings(method_params={"preset": "paper"}))
