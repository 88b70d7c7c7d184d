from __future__ import annotations

import dataclasses

import pytest

from backend.editing.registry import METHODS, MethodConfigError, build_config, method_class
from blender_piva import contract


def test_registry_covers_the_contract_methods():
    assert tuple(METHODS) == contract.METHODS
    for name, cls in METHODS.items():
        assert cls.name == name
        assert all(f.name for f in dataclasses.fields(cls.config_class))


def test_unknown_method_lists_the_allowed_ones():
    with pytest.raises(MethodConfigError, match="sds, dds, pds, ssd, piva"):
        method_class("vsd")


def test_settings_fields_are_copied_and_method_params_override():
    settings = contract.EditSettings(guidance_scale=12.0, lambda_identity=0.2, lora_rank=8,
                                     method_params={"t_max": 0.9, "lora_alpha": 16})
    cfg = build_config("piva", settings)
    assert (cfg.guidance_scale, cfg.lambda_identity, cfg.lora_rank, cfg.t_max, cfg.lora_alpha) == (12.0, 0.2, 8, 0.9, 16.0)
    assert build_config("ssd", settings, params={}).w_prompt == 3.75  # SSD has no guidance_scale field


def test_unknown_param_names_the_allowed_fields():
    with pytest.raises(MethodConfigError, match="allowed: .*guidance_scale"):
        build_config("dds", contract.EditSettings(method_params={"guidance": 3}))


def test_wrong_type_is_rejected():
    with pytest.raises(MethodConfigError, match="must be a bool"):
        build_config("piva", params={"train_adapters": 1})
    with pytest.raises(ValueError, match="allowed: uniform"):
        build_config("sds", params={"schedule": "cosine"})
