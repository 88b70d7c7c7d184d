"""Malicious checkpoints for the tests: pickles that write a marker file when anything unpickles them.

The payload references only the standard library (``pathlib.Path.write_text``), so any Python that
unpickled it (``torch.load(..., weights_only=False)``, ``pickle.load``) would write the marker,
whether or not it can import the tests. :func:`assert_payload_is_live` proves that it does.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import torch

LEGACY_NAMES = ("reconstruct.pt", "edit.pt", "base.pt", "controlnet.pt")
"""Every pickle checkpoint name the project ever wrote (reconstruct, edit, toy phases 1 and 2)."""
STEMS = ("reconstruct", "edit", "vae", "base", "controlnet", "oracle")
"""The stems of the current checkpoints: ``STEM.safetensors`` + ``STEM.json`` (reconstruct, edit,
toy phases 0, 1 and 2, toy oracle)."""


class Planted:
    """Unpickling this calls ``marker.write_text(...)``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from a planted checkpoint ran"))


def torch_pickle(marker: Path) -> bytes:
    """A ``torch.save`` file (what the old ``*.pt`` checkpoints were) whose loading writes ``marker``."""
    buffer = io.BytesIO()
    torch.save({"step": 5, "fingerprint": "x", "evil": Planted(marker)}, buffer)
    return buffer.getvalue()


def raw_pickle(marker: Path) -> bytes:
    """A plain pickle whose loading writes ``marker``."""
    return pickle.dumps({"step": 5, "evil": Planted(marker)})


def plant_legacy(folder: Path, marker: Path) -> list[Path]:
    """A live ``torch.save`` pickle under every old checkpoint name in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in LEGACY_NAMES]
    for path in paths:
        path.write_bytes(torch_pickle(marker))
    return paths


def plant_stray_tensors(folder: Path, marker: Path) -> None:
    """A pickle as ``STEM.safetensors`` with no JSON beside it (an uncommitted checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        (folder / f"{stem}.safetensors").write_bytes(torch_pickle(marker))


def plant_json(folder: Path, stem: str, marker: Path) -> Path:
    """A pickle as ``STEM.json`` (the file whose presence claims a checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    path.write_bytes(raw_pickle(marker))
    return path


def plant_tensors_with_record(folder: Path, stem: str, marker: Path) -> Path:
    """A pickle as ``STEM.safetensors`` and a well-formed ``STEM.json`` vouching for it (size and SHA-256
    match), as an attacker who knows the format would write: only the safetensors parser stands between."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = torch_pickle(marker)
    path = folder / f"{stem}.safetensors"
    path.write_bytes(blob)
    record = {"format": "piva-checkpoint", "version": 1, "tensors_file": path.name, "tensors_bytes": len(blob),
              "tensors_sha256": hashlib.sha256(blob).hexdigest(), "state": {"step": 5, "evil": {"__tensor__": "evil"}}}
    (folder / f"{stem}.json").write_text(json.dumps(record))
    return path


def assert_payload_is_live(tmp_path: Path) -> None:
    """The planted files would run code if unpickled: the tests that find no marker can fail."""
    control = tmp_path / "control_marker"
    torch.load(io.BytesIO(torch_pickle(control)), weights_only=False)
    assert control.is_file(), "the torch.save payload did not run when unpickled"
    control.unlink()
    pickle.loads(raw_pickle(control))
    assert control.is_file(), "the raw pickle payload did not run when unpickled"
    control.unlink()
