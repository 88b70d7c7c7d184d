"""Where an object's capture and fitted field are cached, so a second prompt goes straight to editing.

A job needs a capture (Cycles renders) and a fitted field before it can edit; both depend only on
what the object looks like and on the capture and fit settings, never on the prompts or the edit's
seed. They are kept under the job folder root, keyed on exactly those inputs:

    JOB_ROOT/cache/OBJECT_KEY/capture/                     the capture (transforms.json, views)
    JOB_ROOT/cache/OBJECT_KEY/reconstruction-FIT_KEY/      the fitted field and its checkpoints

``OBJECT_KEY`` hashes the object's fingerprint (``fingerprint.py``: mesh in the normalised frame,
UVs, colour attributes, materials, images) with the capture settings; ``FIT_KEY`` hashes the fit
settings that change the field. A changed mesh, material or setting gives a new key: stale data is
never reused, it is only left behind (``clear_cache`` removes it). No bpy here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import contract

CACHE_DIR = "cache"
"""Folder under the job root that holds the cache entries."""

CACHE_FORMAT = 2
"""Bumped when the layout or the meaning of a cached file changes: old entries stop matching.
2: entries carry owner markers (``contract.ownership``); entries of format 1 have none, and the
backend would refuse them as folders it did not write."""

FIT_SETTINGS_IGNORED = ("checkpoint_every", "preview_every")
"""ReconstructSettings fields that do not change the fitted field (left out of FIT_KEY)."""

KEY_LENGTH = 16
"""Hex digits of a key kept in folder names (64 bits: collisions are not a practical concern)."""


@dataclass(frozen=True)
class CacheEntry:
    """The cached capture and fit of one object under given settings."""

    object_key: str
    """Hash of the object's fingerprint and the capture settings."""
    capture_dir: Path
    """Folder of the capture (complete when it holds transforms.json: captures are written atomically)."""
    reconstruction_dir: Path
    """Folder of the fitted field (complete when it holds metrics.json and field/)."""

    @property
    def has_capture(self) -> bool:
        return (self.capture_dir / contract.TRANSFORMS_FILE).is_file()

    @property
    def has_reconstruction(self) -> bool:
        return (self.reconstruction_dir / "metrics.json").is_file() and (self.reconstruction_dir / "field").is_dir()


def _digest(payload: object) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def object_key(object_fingerprint: str, capture: contract.CaptureSettings) -> str:
    """Key of the capture: what the object looks like and how it is rendered."""
    return _digest({"format": CACHE_FORMAT, "object": object_fingerprint, "capture": dataclasses.asdict(capture)})


def fit_key(reconstruct: contract.ReconstructSettings, model: str = "") -> str:
    """Key of the fit within one capture: the settings that change the fitted field, and for a
    latent field (``reconstruct.field = latent``) the model, whose VAE made its latents. An RGB
    field keys as before the setting existed (its cached fits stay valid)."""
    settings = {k: v for k, v in dataclasses.asdict(reconstruct).items() if k not in FIT_SETTINGS_IGNORED}
    if settings.get("field") == "rgb":
        del settings["field"]
    payload: dict = {"format": CACHE_FORMAT, "reconstruct": settings}
    if reconstruct.field == "latent":
        payload["model"] = model
    return _digest(payload)


def cache_entry(
    job_root: str | Path,
    object_fingerprint: str,
    capture: contract.CaptureSettings,
    reconstruct: contract.ReconstructSettings,
    model: str = "",
) -> CacheEntry:
    """The entry (existing or not) for an object under these settings (``model``: the job's
    model, which a latent field's key includes)."""
    key = object_key(object_fingerprint, capture)
    base = Path(job_root) / CACHE_DIR / key
    return CacheEntry(
        object_key=key,
        capture_dir=base / contract.CAPTURE_DIR,
        reconstruction_dir=base / f"reconstruction-{fit_key(reconstruct, model)}",
    )


def clear_cache(job_root: str | Path, object_key_: str | None = None) -> int:
    """Remove one object's entry (or all entries); returns how many entries were removed."""
    root = Path(job_root) / CACHE_DIR
    if not root.is_dir():
        return 0
    entries = [root / object_key_] if object_key_ else [p for p in root.iterdir() if p.is_dir()]
    removed = 0
    for entry in entries:
        if entry.is_dir():
            shutil.rmtree(entry)
            removed += 1
    return removed
