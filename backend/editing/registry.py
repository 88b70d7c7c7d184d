"""The editing methods by name, and how a job's EditSettings become a method config.

An explicit dict (no import-time registration). ``build_config`` fills the config from the job,
with ONE source of defaults: the method config class. EditSettings fields whose names the config
shares (``guidance_scale``, ``lambda_identity``, ``lora_rank``, ``lora_learning_rate``) are copied
only when they are set (not None; None means "not given by the user"), so a default job runs every
method at its own defaults (SDS and PDS at CFG 100, DDS and PIVA at 7.5; docs/methods.md lists
them with their sources). Then ``method_params`` override any config field; an unknown key or a
value of the wrong type is an error naming the allowed fields. ``method_params`` may name a
``preset`` of the method (PIVA's ``paper``: the paper's settings where the product's defaults
differ); its values sit between the class defaults and everything the job sets explicitly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from backend.editing.base import EditMethod, NoisePredictor
from backend.editing.dds import DDS
from backend.editing.pds import PDS
from backend.editing.piva import PIVA
from backend.editing.sds import SDS
from backend.editing.ssd import SSD

METHODS: dict[str, type[EditMethod]] = {"sds": SDS, "dds": DDS, "pds": PDS, "ssd": SSD, "piva": PIVA}
"""Name -> method class (the names of blender_piva.contract.METHODS)."""

SHARED_SETTINGS = ("guidance_scale", "lambda_identity", "lora_rank", "lora_learning_rate")
"""EditSettings fields copied into a method config that has a field of the same name (when not None)."""


class MethodConfigError(ValueError):
    """A method name or parameter from the job is not accepted; the message lists what is."""


def method_class(name: str) -> type[EditMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise MethodConfigError(f"unknown editing method {name!r}; allowed: {', '.join(METHODS)}") from None


def build_config(name: str, settings: Any = None, params: dict[str, Any] | None = None) -> Any:
    """Config of method ``name`` from an EditSettings-like object and/or a params dict.

    Precedence, lowest first: the config class's defaults; the named ``preset`` (a key of
    ``params``); the shared settings fields that are present and not None; the rest of ``params``,
    which defaults to ``settings.method_params``.
    """
    method = method_class(name)
    cls = method.config_class
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if params is None and settings is not None:
        params = dict(getattr(settings, "method_params", {}) or {})
    params = dict(params or {})
    preset = params.pop("preset", None)
    if preset is not None:
        if preset not in method.presets:
            allowed = ", ".join(method.presets) or "none (this method has no presets)"
            raise MethodConfigError(f"method {name!r} has no preset {preset!r}; allowed: {allowed}")
        values.update(method.presets[preset])
    if settings is not None:
        for key in SHARED_SETTINGS:
            value = getattr(settings, key, None)
            if key in fields and value is not None:  # None = not given: the method's default stays
                values[key] = value
    for key, value in params.items():
        if key not in fields:
            raise MethodConfigError(
                f"method {name!r} has no parameter {key!r}; allowed: {', '.join(sorted(fields))}"
            )
        values[key] = _coerce(name, key, value, fields[key])
    config = cls(**values)
    config.check_schedule()
    return config


def build_method(name: str, model: NoisePredictor, settings: Any = None, params: dict[str, Any] | None = None) -> EditMethod:
    """Instantiate method ``name`` on ``model`` (PIVA adds its adapters to the model here)."""
    return method_class(name)(build_config(name, settings, params), model)


def _coerce(method: str, key: str, value: Any, f: dataclasses.Field) -> Any:
    default = f.default
    kind = type(default)
    ok = (
        (kind is bool and isinstance(value, bool))
        or (kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (kind is str and isinstance(value, str))
    )
    if not ok:
        raise MethodConfigError(
            f"method {method!r} parameter {key!r} must be a {kind.__name__} (default {default!r}), got {value!r}"
        )
    return float(value) if kind is float else value
