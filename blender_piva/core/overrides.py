"""The one parser of ``BLOCK.KEY=VALUE`` overrides (``--set`` on the command line, ``--param`` in
the benchmarks): the value is read as JSON, else kept as a string."""

from __future__ import annotations

import json


class OverrideError(ValueError):
    """An override is not of the form ``BLOCK.KEY=VALUE``; the message shows the expected form."""


def parse_overrides(
    items: list[str], flag: str = "--set", form: str = "BLOCK.KEY=VALUE", example: str = "capture.resolution=64"
) -> dict[str, dict[str, object]]:
    """``["capture.resolution=64", "edit.method_params={\"a\": 1}"]`` -> ``{"capture": {...}, "edit": {...}}``."""
    out: dict[str, dict[str, object]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        block, dot, key = name.partition(".")
        if not sep or not dot or not block or not key:
            raise OverrideError(f"{flag} {item!r}: expected {form}, e.g. {example}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(block, {})[key] = parsed
    return out
