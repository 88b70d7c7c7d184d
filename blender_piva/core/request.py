"""What the user asked for (from the panel, the command line or a queue), and how it can fail.

No bpy: the scene side (``scene/edit_job.py``) turns a request into a job.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .. import contract


class EditFailed(RuntimeError):
    """The edit could not run or did not finish: ``message`` what happened, ``hint`` the fix."""

    def __init__(self, message: str, hint: str = "", status: str = "error") -> None:
        super().__init__(message if not hint else f"{message} — {hint}")
        self.message = message
        self.hint = hint
        self.status = status


@dataclass
class EditRequest:
    """What the user asked for (from the panel or the command line)."""

    object_name: str
    """The source object."""
    source_prompt: str
    """What it is now."""
    target_prompt: str
    """What it should become."""
    negative_prompt: str = ""
    """What the edit should steer away from (CFG's unconditional prompt); empty = none."""
    method: str = "piva"
    """One of contract.METHODS."""
    steps: int | None = None
    """Edit steps; None = the preset's."""
    seed: int = 0
    """Seed of capture cameras, field initialisation and diffusion noise."""
    lambda_identity: float | None = None
    """PIVA's lambda; None = the preset's."""
    preset: str = "preview"
    """One of presets.PRESETS."""
    job_root: str = ""
    """Folder under which job folders are made; empty = the default job folder."""
    job_dir: str = ""
    """Explicit job folder (resume an earlier job); empty = a new folder under job_root."""
    model: contract.ModelSettings = field(default_factory=contract.ModelSettings)
    device: str = "auto"
    stages: list[str] = field(default_factory=lambda: list(contract.STAGES))
    overrides: dict = field(default_factory=dict)
    """Per-block field overrides, e.g. {"capture": {"resolution": 64}}."""
    use_cache: bool = True
    """Share the object's capture and fitted field with other jobs on the unchanged object (cache.py)."""
    slot: int = 0
    """Position of the result in the row beside the source (prompt variants take 0, 1, 2, ...)."""
    collection_name: str = ""
    """Collection of the result; empty = ``PIVA <object name>``."""


def make_request(
    object_name: str,
    source_prompt: str,
    target_prompt: str,
    choices: Any,
    *,
    model: contract.ModelSettings | None = None,
    device: str = "auto",
    job_root: str = "",
    job_dir: str = "",
    stages: list[str] | None = None,
    overrides: dict | None = None,
) -> EditRequest:
    """The one way a request is made. ``choices`` holds the user's edit choices under the names of
    the panel's settings (``method``, ``steps``, ``seed``, ``lambda_identity``, ``preset``,
    ``use_cache``, and when present ``negative_prompt``, ``memory``, the memory mode that goes
    into ``model.memory``, and ``field``, ``reconstruct.field``: rgb or latent): the panel's ``scene.piva`` or the command line's parsed arguments; a
    step count of 0 or None means the preset's."""
    model = model if model is not None else contract.ModelSettings()
    memory = getattr(choices, "memory", None)
    if memory:
        model = dataclasses.replace(model, memory=memory)
    overrides = {block: dict(values) for block, values in (overrides or {}).items()}
    field_kind = getattr(choices, "field", None)
    if field_kind and "field" not in overrides.get("reconstruct", {}):  # an explicit --set wins
        overrides.setdefault("reconstruct", {})["field"] = field_kind
    return EditRequest(
        object_name=object_name,
        source_prompt=source_prompt,
        target_prompt=target_prompt,
        negative_prompt=getattr(choices, "negative_prompt", "") or "",
        method=choices.method,
        steps=choices.steps or None,
        seed=choices.seed,
        lambda_identity=choices.lambda_identity,
        preset=choices.preset,
        use_cache=choices.use_cache,
        job_root=job_root,
        job_dir=job_dir,
        model=model,
        device=device,
        stages=list(contract.STAGES) if stages is None else list(stages),
        overrides=overrides,
    )


def new_job_id(object_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", object_name).strip("._") or "object"
    return f"{safe[:40]}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"
