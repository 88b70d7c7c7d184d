"""A job as plain bytes, for executors that share no storage with the submitter (Ray).

A bundle is ``{"ROOT/relative/path": bytes}`` for three roots: ``job`` (the job folder: job.json,
checkpoints, events), ``capture`` and ``reconstruction`` (which may live outside the job folder,
in the extension's cache). :func:`unpack_job` writes a bundle under a local folder and points the
copied ``job.json`` at the local copies; :class:`FolderWatch` finds what a running job wrote since
the last look, so the results and every checkpoint come back while the job runs, and a job whose
machine dies resumes elsewhere from the last checkpoint that came back.

Nothing in a bundle is executed: paths are checked (no absolute paths, no ``..``, no links), and
the files are read by the same loaders as any job folder (JSON, safetensors, images).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from backend.checkpoint import is_checkpoint_json, read_complete, stem_of_slot
from blender_piva import contract

ROOTS = ("job", "capture", "reconstruction")
"""The folders of a bundle, in the order they are packed."""

OWNER_FILE = contract.ownership.OWNER_FILE
"""Each folder's owner marker travels with it: without it a folder holding a job's files is refused."""

SKIPPED_NAMES = (contract.CANCEL_FILE,)
"""Files never shipped: a cancel belongs to the run where it was written."""


class BundleError(ValueError):
    """A bundle that cannot be a job (a path outside its roots, an unknown root)."""


def job_roots(job_json: Path) -> dict[str, Path]:
    """The local folders of a job's bundle roots (``job``, ``capture``, ``reconstruction``)."""
    spec = contract.load_job(job_json)
    return {"job": spec.job_dir, "capture": spec.capture_path, "reconstruction": spec.reconstruction_path}


def _files_under(root: Path, skip: Path | None = None) -> list[Path]:
    """Regular files under ``root`` (the owner markers, not the temporaries of atomic writes nor
    links), sorted; ``skip``: a sub-folder left out."""
    found = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (skip is None or here / d != skip))
        for name in sorted(filenames):
            path = here / name
            if (name.startswith(".") and name != OWNER_FILE) or name in SKIPPED_NAMES or path.is_symlink() or not path.is_file():
                continue
            found.append(path)
    return found


def pack_job(job_json: Path) -> dict[str, bytes]:
    """Every file of the job (its folder, capture and fit) as ``{"ROOT/rel/path": bytes}``."""
    roots = job_roots(job_json)
    bundle: dict[str, bytes] = {}
    for name in ROOTS:
        root = roots[name]
        others = [roots[o] for o in ROOTS if o != name and roots[o] != root]
        for path in _files_under(root):
            if any(_is_within(path, other) and _is_within(other, root) for other in others):
                continue  # e.g. JOB/capture/... goes under "capture", not under "job"
            bundle[f"{name}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    return bundle


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return path != folder


def checked_relative(key: str) -> tuple[str, PurePosixPath]:
    """``(root, relative path)`` of a bundle key; BundleError for anything that could leave its root."""
    parts = PurePosixPath(key).parts
    if len(parts) < 2 or parts[0] not in ROOTS:
        raise BundleError(f"bundle entry {key!r}: not under one of {', '.join(ROOTS)}")
    rel = PurePosixPath(*parts[1:])
    if rel.is_absolute() or any(p in ("..", "") or "\\" in p or ":" in p for p in rel.parts):
        raise BundleError(f"bundle entry {key!r}: a path that leaves its folder")
    return parts[0], rel


def write_files(files: dict[str, bytes], roots: dict[str, Path]) -> list[Path]:
    """Write bundle entries under ``roots`` atomically (each file appears complete or not at all),
    JSON files last: a checkpoint's JSON lands after the tensors it names (``backend/checkpoint.py``)."""
    written = []
    for key, payload in sorted(files.items(), key=lambda item: (item[0].endswith(".json"), item[0])):
        root, rel = checked_relative(key)
        target = roots[root] / Path(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        contract.write_bytes_atomic(target, payload)
        written.append(target)
    return written


def unpack_job(files: dict[str, bytes], folder: Path) -> Path:
    """Write a bundle under ``folder`` (``folder/job``, ``folder/capture``, ``folder/reconstruction``)
    and point its job.json at them; returns the local job.json."""
    roots = local_roots(folder)
    for root in roots.values():
        root.mkdir(parents=True, exist_ok=True)
    write_files(files, roots)
    job_json = roots["job"] / contract.JOB_FILE
    spec = contract.load_job(job_json)
    spec.output_dir = str(roots["job"])
    spec.capture_dir, spec.reconstruction_dir = str(roots["capture"]), str(roots["reconstruction"])
    spec.write(job_json)
    return job_json


def local_roots(folder: Path) -> dict[str, Path]:
    return {name: Path(folder) / name for name in ROOTS}


@dataclass
class FolderWatch:
    """Which files under some roots changed since the last :meth:`changes` (size or mtime)."""

    roots: dict[str, Path]
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    skip: frozenset[str] = frozenset({contract.JOB_FILE})
    """Job-folder files never sent back (the local job.json names local paths)."""

    def mark_all_seen(self) -> None:
        """Treat what is there now as known (the submitter already has it)."""
        self.changes()

    def changes(self) -> dict[str, bytes]:
        """``{"ROOT/rel/path": bytes}`` of what changed since the last look.

        A checkpoint (``backend/checkpoint.py``) travels as a pair checked against each other: its
        JSON with the tensors slot it names, read together. A tensors slot never travels alone and
        a JSON whose slot does not match it yet (a save under way) waits for the next look, so
        the submitter's copy is always a checkpoint that loads, whenever the job's machine dies."""
        out: dict[str, bytes] = {}
        for name in ROOTS:
            root = self.roots[name]
            for path in _files_under(root):
                rel = path.relative_to(root).as_posix()
                key = f"{name}/{rel}"
                if (name == "job" and rel in self.skip) or stem_of_slot(path) is not None:
                    continue
                try:
                    stat = path.stat()
                    stamp = (stat.st_size, stat.st_mtime_ns)
                    if self.seen.get(key) == stamp:
                        continue
                    if path.name.endswith(".json") and (pair := read_complete(path)) is not None:
                        payload, slot, blob = pair
                        out[f"{name}/{slot.relative_to(root).as_posix()}"] = blob
                    elif path.name.endswith(".json") and is_checkpoint_json(path):
                        continue  # a checkpoint JSON whose tensors are being written: the next look
                    else:
                        payload = path.read_bytes()
                except FileNotFoundError:  # replaced meanwhile: the next look sends the new one
                    continue
                self.seen[key] = stamp
                out[key] = payload
        return out

