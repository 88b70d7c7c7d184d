"""The results manifest (``results/manifest.json``): what the backend produced, written last."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ._schema import ContractError, check_str, check_version, from_dict, to_jsonable
from .atomic import write_json_atomic
from .layout import CONTRACT_VERSION, MANIFEST_FILE

@dataclass
class ResultsManifest:
    """``results/manifest.json``: what the backend produced, relative to the results folder."""

    job_id: str
    status: str = "finished"
    """``finished`` (all requested stages ran)."""
    files: dict[str, str] = field(default_factory=dict)
    """Role -> file name inside ``results/``: ``mesh`` (GLB), ``texture`` (PNG), ``field`` ...;
    ``report`` (``report.html``), ``report_image`` (``report.png``) and ``views``
    (``views/views.json``, the held-out views of source and result) when the backend drew them
    (readers must not expect them: older manifests lack them)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Figures measured by the stages, e.g. ``heldout_psnr_db``, ``depth_error_rel``."""
    normalization: list[list[float]] = field(default_factory=list)
    """4x4 matrix mapping the object's local frame to the normalised capture frame (from
    ``transforms.json``); the mesh in ``files["mesh"]`` is already in the object's local frame."""
    source_prompt: str = ""
    target_prompt: str = ""
    method: str = ""
    seed: int = 0
    contract: int = CONTRACT_VERSION

    def validate(self, results_dir: str | os.PathLike | None = None) -> "ResultsManifest":
        check_version(self.contract, "manifest.contract")
        check_str(self.job_id, "manifest.job_id", allow_empty=False)
        if self.status != "finished":
            raise ContractError("manifest.status", f"unexpected status {self.status!r}", "finished")
        for role, name in self.files.items():
            if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in Path(name).parts:
                raise ContractError(f"manifest.files.{role}", f"{name!r} is not a relative file name", "a file inside results/")
            if results_dir is not None and not (Path(results_dir) / name).is_file():
                raise ContractError(
                    f"manifest.files.{role}",
                    f"{name!r} is missing from {results_dir}",
                    "re-run the job's export stage (the results folder is incomplete)",
                )
        return self

    def write(self, results_dir: str | os.PathLike) -> Path:
        self.validate(results_dir)
        path = Path(results_dir) / MANIFEST_FILE
        write_json_atomic(path, to_jsonable(dataclasses.asdict(self)))
        return path


def load_manifest(results_dir: str | os.PathLike) -> ResultsManifest:
    """Read and check a results manifest, including that every listed file exists."""
    path = Path(results_dir) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(str(path), "results manifest does not exist", "run the job to completion first") from None
    except json.JSONDecodeError as exc:
        raise ContractError(str(path), f"malformed JSON: {exc.msg}", "a manifest written by the backend") from None
    return from_dict(ResultsManifest, data, "manifest.").validate(results_dir)

