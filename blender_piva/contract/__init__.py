"""The job contract between the Blender extension and the backend (standard library only).

The extension ships this package in its zip; the backend imports it without bpy
(``from blender_piva import contract``) and imports nothing else of ``blender_piva``. The two
sides talk only through the documents of a job folder, one module each:

* ``job``       the job spec (``job.json``), written by the extension, read by the backend,
                made of the blocks in ``settings``;
* ``events``    events, one JSON object per line in ``events.jsonl``, appended by the backend,
                and the cancel request (``cancel.json``), written by the extension;
* ``manifest``  the results manifest (``results/manifest.json``), written by the backend last;
* ``capture``   ``transforms.json`` and its light rig, with the camera conventions in ``cameras``;
* ``atomic``    how every one of them is written (readers never see a partial file);
* ``ownership`` the owner marker (``.piva-owner.json``): which job made a folder, for which inputs;
* ``leftovers`` temporaries of dead processes, removed by the next run;
* ``layout``    the folder's file names, the contract version, stages and exit codes;
* ``disk``      what a job folder needs on disk, and the message when the disk is full.

Every document carries ``"contract": CONTRACT_VERSION``. A reader refuses a document of another
major version with an error that says which version it found and which it speaks. Importing this
package has no side effect.
"""

from ._schema import ContractError
from .atomic import temp_path, write_bytes_atomic, write_json_atomic
from .events import (
    CancelRequest,
    Event,
    EventReader,
    EventWriter,
    cancel_requested,
    cancel_time,
    clear_cancel,
    clear_stale_cancel,
    request_cancel,
)
from .job import JobSpec, load_job
from .layout import (
    CANCEL_FILE,
    CAPTURE_DIR,
    CHECKPOINT_DIR,
    CONTRACT_VERSION,
    DEVICES,
    EVENT_TYPES,
    EVENTS_FILE,
    EXIT_BAD_JOB,
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_OK,
    FIELDS,
    JOB_FILE,
    LOG_FILE,
    MANIFEST_FILE,
    MEMORY_MODES,
    METHODS,
    PRECISIONS,
    PREVIEW_DIR,
    RESULTS_DIR,
    STAGES,
    TRANSFORMS_FILE,
)
from .leftovers import pid_alive, remove_dead_leftovers
from .manifest import ResultsManifest, load_manifest
from .ownership import (
    OWNER_FILE,
    FolderNotOurs,
    FolderOwner,
    check_owner,
    claim_folder,
    content_settings,
    describe_differences,
    fingerprint_of,
    read_owner,
    set_state,
)
from .settings import CaptureSettings, EditSettings, ExportSettings, ModelSettings, ReconstructSettings

__all__ = [
    "CANCEL_FILE", "CAPTURE_DIR", "CHECKPOINT_DIR", "CONTRACT_VERSION", "DEVICES", "EVENT_TYPES",
    "EVENTS_FILE", "EXIT_BAD_JOB", "EXIT_CANCELLED", "EXIT_ERROR", "EXIT_OK", "FIELDS", "JOB_FILE", "LOG_FILE",
    "MANIFEST_FILE", "MEMORY_MODES", "METHODS", "OWNER_FILE", "PRECISIONS", "PREVIEW_DIR", "RESULTS_DIR", "STAGES",
    "TRANSFORMS_FILE",
    "CancelRequest", "CaptureSettings", "ContractError", "EditSettings", "Event", "EventReader",
    "EventWriter", "ExportSettings", "FolderNotOurs", "FolderOwner", "JobSpec", "ModelSettings",
    "ReconstructSettings", "ResultsManifest",
    "cancel_requested", "cancel_time", "check_owner", "claim_folder", "clear_cancel", "clear_stale_cancel",
    "content_settings", "describe_differences", "fingerprint_of", "load_job", "load_manifest", "pid_alive",
    "read_owner", "remove_dead_leftovers", "request_cancel", "set_state", "temp_path",
    "write_bytes_atomic", "write_json_atomic",
]
