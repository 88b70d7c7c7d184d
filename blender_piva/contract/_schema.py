"""Validation helpers shared by every contract document: the error type, field checks, and the
dataclass <-> JSON conversion that names the offending field."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


class ContractError(ValueError):
    """A document does not follow the contract.

    ``field`` is the dotted path of the offending entry (``"edit.method"``), ``allowed`` a
    human-readable description of what would be accepted.
    """

    def __init__(self, field_path: str, problem: str, allowed: str = "") -> None:
        self.field = field_path
        self.problem = problem
        self.allowed = allowed
        text = f"{field_path}: {problem}"
        if allowed:
            text += f" (allowed: {allowed})"
        super().__init__(text)


def check_version(found: Any, name: str) -> None:
    """Refuse a document of another major version, naming what was found and what is spoken."""
    from .layout import CONTRACT_VERSION

    if found != CONTRACT_VERSION:
        raise ContractError(name, f"version {found!r} is not supported", str(CONTRACT_VERSION))



def to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def from_dict(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``, naming the field of every mismatch."""
    name = prefix.rstrip(".") or "job"
    if not isinstance(data, dict):
        raise ContractError(name, f"expected a JSON object, got {type(data).__name__}", "a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ContractError(f"{prefix}{unknown[0]}", "unknown field", ", ".join(sorted(fields)))
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = fields[key]
        nested = _nested_class(f)
        if nested is not None:
            kwargs[key] = from_dict(nested, value, f"{prefix}{key}.")
        elif isinstance(value, list) and f.name.endswith(("_deg", "distance")) and len(value) == 2:
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    missing = [f.name for f in fields.values() if f.name not in kwargs and _required(f)]
    if missing:
        raise ContractError(f"{prefix}{missing[0]}", "missing required field", "see blender_piva/contract/")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        raise ContractError(name, str(exc)) from None


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]


def _nested_class(f: dataclasses.Field) -> type | None:
    """The settings block a field holds (a dataclass built by its default factory), or None."""
    factory = f.default_factory  # type: ignore[misc]
    if isinstance(factory, type) and dataclasses.is_dataclass(factory):
        return factory
    return None


def check_int(value: Any, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(name, f"expected an integer, got {value!r}", f"integers {low}..{high}")
    if not low <= value <= high:
        raise ContractError(name, f"{value} is out of range", f"integers {low}..{high}")


def check_float(value: Any, name: str, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ContractError(name, f"expected a finite number, got {value!r}", f"numbers in [{low}, {high}]")
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ContractError(name, f"{value} is out of range", f"numbers in {bracket}{low}, {high}]")


def check_range(value: Any, name: str, low: float, high: float) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ContractError(name, f"expected [min, max], got {value!r}", f"two numbers in [{low}, {high}]")
    for v in value:
        check_float(v, name, low, high)
    if value[0] > value[1]:
        raise ContractError(name, f"min {value[0]} is greater than max {value[1]}", "min <= max")


def check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise ContractError(name, f"expected true or false, got {value!r}", "true, false")


def check_str(value: Any, name: str, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise ContractError(name, f"expected text, got {value!r}", "a string")
    if not allow_empty and not value.strip():
        raise ContractError(name, "is empty", "non-empty text")


def check_prompt(value: Any, name: str) -> None:
    check_str(value, name, allow_empty=False)
    if len(value) > 1000:
        raise ContractError(name, f"is {len(value)} characters long", "at most 1000 characters")