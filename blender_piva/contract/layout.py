"""The job folder's layout and the contract's vocabulary: versions, names, stages, exit codes.

Layout of a job folder::

    JOB/
      .piva-owner.json      which job made the folder (ownership.FolderOwner); so does every
                            capture, reconstruction, edit/ and export/ folder
      job.json              the spec (job.JobSpec)
      capture/              written by the extension: transforms.json, images/, depth/ (capture.py)
      events.jsonl          appended by the backend, one events.Event per line
      cancel.json           present = please stop the run going on (events.CancelRequest; older = stale)
      backend.log           the backend's stderr
      checkpoints/          resumable state of every stage
      previews/             preview renders referenced by events
      results/manifest.json manifest.ResultsManifest, written last and atomically
"""

from __future__ import annotations

CONTRACT_VERSION = 1
"""Major version of every document below. Bump it on any incompatible change."""

METHODS = ("sds", "dds", "pds", "ssd", "piva")
"""Editing losses the backend implements (see backend/editing/)."""

DEVICES = ("auto", "cpu", "cuda")
"""Where the backend runs. ``auto`` means CUDA when available, else the CPU."""

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
"""Numeric precision of the diffusion model. ``auto``: fp32 on the CPU, fp16 on CUDA."""

STAGES = ("reconstruct", "edit", "export")
"""Backend stages, in order. Capture (before) and import (after) happen in Blender."""

MEMORY_SETTINGS = {
    "reconstruct": "reconstruct.rays_per_batch",
    "edit": "edit.render_resolution",
    "export": "export.grid_resolution",
}
"""Stage -> the setting that drives its peak memory: what an out-of-memory error says to lower."""

EVENT_TYPES = ("started", "stage", "progress", "preview", "log", "finished", "cancelled", "error")
"""Kinds of event a backend may emit (see :class:`Event`)."""

JOB_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
CANCEL_FILE = "cancel.json"
LOG_FILE = "backend.log"
CAPTURE_DIR = "capture"
CHECKPOINT_DIR = "checkpoints"
PREVIEW_DIR = "previews"
RESULTS_DIR = "results"
MANIFEST_FILE = "manifest.json"
TRANSFORMS_FILE = "transforms.json"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_JOB = 2
EXIT_CANCELLED = 3
"""Backend process exit codes."""
