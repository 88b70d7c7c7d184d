"""The worker's side of the inbox folder (``contract.worker_inbox`` names the files).

Claiming is one ``os.rename`` of ``NAME.json`` to ``NAME.claimed``: of two workers only one
succeeds. The claim then records the worker's pid, so that a later worker can tell a claim whose
worker died (SIGKILL, a crash, a power cut) and put the job back in the queue; the job then
resumes from its checkpoints, as a re-run of ``backend run`` does.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from blender_piva import contract
from blender_piva.contract import worker_inbox as wi


@dataclass
class Claimed:
    """A submission this worker claimed."""

    name: str
    """The submission's NAME."""
    job: str
    """Path of its job.json ('' when the submission was not a valid document)."""
    submitted_at: float = 0.0
    """When the submission was written (its file's mtime): cancel requests older than it are stale."""
    problem: str = ""
    """Why the submission cannot run ('' when it can)."""


class Inbox:
    """The inbox folder as one worker sees it."""

    def __init__(self, folder: Path, pid: int | None = None) -> None:
        self.folder = Path(folder)
        self.pid = os.getpid() if pid is None else pid
        self.folder.mkdir(parents=True, exist_ok=True)

    # -- submissions ----------------------------------------------------------------------------
    def pending(self) -> list[str]:
        """NAMEs of the submissions waiting, oldest first (then by name)."""
        found = []
        for entry in os.scandir(self.folder):
            name = entry.name
            if not name.endswith(wi.SUBMIT_SUFFIX) or name.endswith(wi.DONE_SUFFIX) or name in wi.CONTROL_FILES:
                continue
            if name.startswith("."):  # a temporary of an atomic write
                continue
            try:
                found.append((entry.stat().st_mtime, name[: -len(wi.SUBMIT_SUFFIX)]))
            except FileNotFoundError:  # claimed by another worker meanwhile
                continue
        return [name for _, name in sorted(found)]

    def claim(self, name: str) -> Claimed | None:
        """Claim submission ``name``; None when another worker got it first."""
        source = self.folder / f"{name}{wi.SUBMIT_SUFFIX}"
        target = wi.claimed_path(self.folder, name)
        try:
            os.rename(source, target)  # not os.replace: never take over another worker's claim
        except (FileNotFoundError, FileExistsError):
            return None
        submitted_at = target.stat().st_mtime  # a rename keeps it
        try:
            submission = wi.Submission.from_dict(json.loads(target.read_text(encoding="utf-8")), str(source))
        except (contract.ContractError, ValueError, UnicodeDecodeError) as exc:
            contract.write_json_atomic(target, {"job": "", "worker_pid": self.pid, "claimed_at": time.time()})
            return Claimed(name, "", submitted_at, problem=str(exc))
        claim = wi.Claim(job=submission.job, worker_pid=self.pid, claimed_at=time.time())
        contract.write_json_atomic(target, claim.to_dict())
        return Claimed(name, submission.job, submitted_at)

    def finish(self, claimed: Claimed, exit_code: int, message: str = "") -> Path:
        """Write ``NAME.done.json`` and remove the claim; return the done file."""
        done = wi.done_path(self.folder, claimed.name)
        report = wi.Done(job=claimed.job, exit_code=exit_code, worker_pid=self.pid, message=message)
        contract.write_json_atomic(done, report.to_dict())
        wi.claimed_path(self.folder, claimed.name).unlink(missing_ok=True)
        return done

    def requeue_orphans(self, now: float | None = None) -> list[str]:
        """Put back the claims whose worker is dead (``NAME.claimed`` -> ``NAME.json``); their NAMEs."""
        now = time.time() if now is None else now
        back = []
        for path in sorted(self.folder.glob(f"*{wi.CLAIMED_SUFFIX}")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                claim = wi.Claim.from_dict(data, str(path))
            except FileNotFoundError:
                continue
            except (contract.ContractError, ValueError, UnicodeDecodeError):
                claim = None
            if claim is not None and claim.worker_pid:
                if claim.worker_pid == self.pid or contract.pid_alive(claim.worker_pid) is not False:
                    continue
            elif now - path.stat().st_mtime < wi.CLAIM_GRACE_S:  # just claimed: its pid comes next
                continue
            name = path.name[: -len(wi.CLAIMED_SUFFIX)]
            job = claim.job if claim is not None else ""
            if not job:
                continue  # nothing to resume: leave it for a person to look at
            contract.write_json_atomic(path, wi.Submission(job=job).to_dict())  # the submission again
            try:
                os.rename(path, self.folder / f"{name}{wi.SUBMIT_SUFFIX}")
            except (FileNotFoundError, FileExistsError):
                continue
            back.append(name)
        return back

    # -- requests -------------------------------------------------------------------------------
    def take_request(self, file_name: str) -> bool:
        """True (and the request removed) when ``stop.json`` / ``release.json`` is there."""
        path = self.folder / file_name
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def clear_stale_requests(self, started: float) -> list[str]:
        """Remove stop and release requests written before ``started`` (left for an earlier worker)."""
        removed = []
        for file_name in wi.CONTROL_FILES:
            path = self.folder / file_name
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                at = float(data.get("requested_at", 0.0)) if isinstance(data, dict) else 0.0
            except FileNotFoundError:
                continue
            except (ValueError, TypeError, UnicodeDecodeError):
                at = path.stat().st_mtime
            if at < started:
                path.unlink(missing_ok=True)
                removed.append(file_name)
        return removed
