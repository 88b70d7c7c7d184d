"""The extension's manifest declares what Blender asks of an extension that may download."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_manifest_declares_platforms_and_the_network_permission():
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text(encoding="utf-8"))
    assert manifest["platforms"] == ["linux-x64", "windows-x64", "macos-arm64", "macos-x64"]
    reason = manifest["permissions"]["network"]
    assert "Hugging Face" in reason
    # Blender's rules for a permission's reason (blender_ext.py): at most 64 characters, no trailing punctuation
    assert len(reason) <= 64 and reason[-1].isalnum()
    assert manifest["permissions"]["files"]
