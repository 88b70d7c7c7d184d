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
      capture.log           Blender's own output during the capture's renders (headless command)
      checkpoints/          resumable state of every stage
      previews/             preview renders referenced by events
      results/manifest.json manifest.ResultsManifest, written last and atomically
      results/report.html   the job report (loss curves, previews, before/after, metrics), one page
"""

from __future__ import annotations

CONTRACT_VERSION = 1
"""Major version of every document below. Bump it on any incompatible change."""

METHODS = ("sds", "dds", "pds", "ssd", "piva")
"""Editing losses the backend implements (see backend/editing/)."""

DEVICES = ("auto", "cpu", "cuda", "mps")
"""Where the backend runs. ``auto`` means CUDA when available, else MPS, else the CPU; ``mps`` is
Apple silicon's GPU (Metal), where this Python's torch offers it (``python -m backend check``
lists the devices it can use under ``"devices"``)."""

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
"""Numeric precision of the diffusion model. ``auto``: fp32 on the CPU, fp16 on CUDA."""

MEMORY_MODES = ("fast", "balanced", "low")
"""How the diffusion model trades speed for GPU memory (diffusers' own tools, backend/diffusion/memory.py):

* ``fast``: SDPA attention (``AttnProcessor2_0`` on every attention layer), nothing traded;
* ``balanced``: SDPA plus VAE slicing (batches encoded and decoded one image at a time);
  attention slicing is not added, SDPA's fused kernels already avoid the full attention matrix;
* ``low``: attention slicing (``SlicedAttnProcessor``: attention a slice of heads at a time, in
  place of SDPA), VAE slicing and tiling, and model CPU offload on CUDA (accelerate's
  ``cpu_offload_with_hook``: the text encoder sits on the GPU only while it encodes the prompts);
  on the CPU and MPS the offload is a no-op. Slower, never a different edit (VAE tiling applies
  only to renders larger than the VAE's tile, 512+ pixels for Stable Diffusion)."""

FIELDS = ("rgb", "latent")
"""What the fitted field renders (``reconstruct.field``): ``rgb`` colours (Instant-NGP, the VAE
encodes every edit render), or ``latent`` the diffusion model's VAE latents directly (ED-NeRF,
arXiv 2310.02712: a refinement network after the volume rendering, no VAE encoder in the edit
loop, a render 1/8 of the side for Stable Diffusion; needs a latent model)."""

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
CAPTURE_LOG_FILE = "capture.log"
"""Blender's own output (Cycles' per-view lines, warnings) during the capture, kept out of the terminal."""
CAPTURE_DIR = "capture"
CHECKPOINT_DIR = "checkpoints"
PREVIEW_DIR = "previews"
RESULTS_DIR = "results"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.html"
"""The job report inside ``results/``: self-contained HTML written by the backend at the end of a job."""
REPORT_IMAGE_FILE = "report.png"
"""The same report as one picture, beside it (what Blender's Image Editor shows)."""
TRANSFORMS_FILE = "transforms.json"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_JOB = 2
EXIT_CANCELLED = 3
"""Backend process exit codes."""
