"""Queues on a Ray cluster: one actor per GPU (or per CPU slot), each holding a worker's model cache.

Ray is an optional extra of the backend's Python (``pip install -r requirements-ray.txt``); the
extension never imports it. The submitter and the cluster share no storage: each item's job
folder, capture and fit go to the actor as bytes (``bundle``), and everything the job writes comes
back while it runs (every ``poll``: events, checkpoints, previews, results). So when an actor dies
mid-item (its machine lost, killed, out of memory), the submitter still holds the item's last
checkpoint: a new actor takes its place and the item resumes from there, as ``backend run``
resumes a job folder.

The driver (:func:`run_jobs_on_ray`) runs on the submitter's machine, where the job folders are:
``python -m backend dispatch --executor ray [--address ADDR] JOB.json ...`` (``dispatch``).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from blender_piva import contract

from . import bundle
from .model_cache import ModelCache


class JobActor:
    """What runs on a Ray worker (wrapped by ``ray.remote`` in :func:`actor_class`): one job at a
    time in a thread, so :meth:`poll` and :meth:`cancel` answer while it runs."""

    def __init__(self, scratch: str = "") -> None:
        self.scratch = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="piva-ray-"))
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.cache = ModelCache()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._exit: int | None = None
        self._message = ""
        self._watch: bundle.FolderWatch | None = None
        self._job_dir: Path | None = None

    def pid(self) -> int:
        import os

        return os.getpid()

    def start(self, name: str, files: dict[str, bytes]) -> None:
        """Unpack ``files`` (a bundle) as a fresh local copy and start the job in a thread."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"this actor is still running {self._job_dir}")
        folder = self.scratch / name
        shutil.rmtree(folder, ignore_errors=True)  # the submitter's copy is the truth
        job_json = bundle.unpack_job(files, folder)
        self._watch = bundle.FolderWatch(bundle.local_roots(folder))
        self._watch.mark_all_seen()
        self._job_dir, self._exit, self._message = job_json.parent, None, ""
        self._thread = threading.Thread(target=self._run, args=(job_json,), name=f"piva-{name}", daemon=True)
        self._thread.start()

    def _run(self, job_json: Path) -> None:
        from ..runner import run_job

        try:
            code = run_job(job_json, models=self.cache, sigterm_cancels=False)
        except Exception as exc:  # the job folder could not even take its events
            code, self._message = contract.EXIT_ERROR, f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._exit = code

    def poll(self) -> dict[str, Any]:
        """What the job wrote since the last poll, and its exit code once it ended (None before)."""
        with self._lock:
            code = self._exit  # read first: once it is set every file is written, so this poll sends all
        files = self._watch.changes() if self._watch is not None else {}
        return {"files": files, "exit_code": code, "message": self._message}

    def cancel(self, reason: str = "user") -> None:
        if self._job_dir is not None:
            contract.request_cancel(self._job_dir, reason)

    def forget(self, name: str) -> None:
        """Remove the local copy of a finished job."""
        shutil.rmtree(self.scratch / name, ignore_errors=True)

    def release(self) -> bool:
        return self.cache.release()


def actor_class(ray: Any) -> Any:
    """``JobActor`` as a Ray actor class (threaded: poll and cancel run beside the job)."""
    return ray.remote(max_concurrency=4)(JobActor)


@dataclass
class RaySettings:
    """How the driver uses the cluster (``python -m backend dispatch --executor ray`` options)."""

    address: str = ""
    """Cluster to join (``ray start --head`` prints it, e.g. ``10.0.0.1:6379``); empty = start a
    local cluster in this process."""
    actors: int = 0
    """Actors to run; 0 = one per GPU of the cluster, or 2 on a cluster without GPUs."""
    cpus_per_actor: float = 1.0
    """CPUs each actor reserves (on a GPU cluster each actor also reserves one GPU)."""
    local_cpus: int = 2
    """CPUs of the local cluster started when ``address`` is empty."""
    poll_s: float = 0.5
    """How often the driver collects what the actors wrote (seconds)."""
    max_attempts: int = 3
    """Actors an item may lose before it is reported failed."""
    poll_timeout_s: float = 120.0
    """An actor that does not answer a poll for this long is treated as dead."""


@dataclass
class _Running:
    job: Path
    name: str
    attempt: int
    started: float
    cancel_sent: bool = False


@dataclass
class RayOutcome:
    """Exit codes per job (``contract.EXIT_*``) and how many actors were lost on the way."""

    exit_codes: dict[Path, int] = field(default_factory=dict)
    actors_lost: int = 0
    actor_pids: dict[Path, list[int]] = field(default_factory=dict)
    """Process ids of the actors that ran each job (more than one when an actor was lost)."""


def _item_name(job: Path, index: int) -> str:
    return f"{index:03d}-{job.parent.name}"[:100]


def run_jobs_on_ray(
    jobs: list[Path],
    settings: RaySettings,
    log: Callable[[str], None] = print,
    on_started: Callable[[Path, Any], None] | None = None,
) -> RayOutcome:
    """Run every job on the cluster; returns each job's exit code. ``on_started(job, actor)`` is
    called when an item starts on an actor (the tests kill an actor from there)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    lost_errors: tuple[type[BaseException], ...] = (RayActorError, GetTimeoutError)
    try:
        from ray.exceptions import ActorUnavailableError

        lost_errors += (ActorUnavailableError,)
    except ImportError:  # older Ray
        pass

    started_here = not ray.is_initialized()
    if started_here:
        if settings.address:
            ray.init(address=settings.address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=settings.local_cpus, include_dashboard=False, log_to_driver=False)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = settings.actors or (gpus if gpus else 2)
        options: dict[str, Any] = {"num_cpus": settings.cpus_per_actor}
        if gpus:
            options["num_gpus"] = 1  # Ray pins the actor to its GPU (CUDA_VISIBLE_DEVICES)
        Actor = actor_class(ray).options(**options)
        idle = deque(Actor.remote() for _ in range(min(count, len(jobs)) or 1))
        log(f"{len(idle)} actors on a cluster with {gpus} GPUs")
        pending = deque((job, _item_name(job, i), 1) for i, job in enumerate(jobs))
        running: dict[Any, _Running] = {}
        outcome = RayOutcome()

        def lose(actor: Any, state: _Running, why: str) -> None:
            outcome.actors_lost += 1
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
            idle.append(Actor.remote())
            if state.attempt >= settings.max_attempts:
                message = f"lost {state.attempt} actors while running it (last: {why})"
                contract.EventWriter(state.job.parent / contract.EVENTS_FILE).emit(
                    "error", stage="dispatch", message=message,
                    hint="check the Ray cluster (ray status), then resume the queue: the item continues from its last checkpoint",
                )
                outcome.exit_codes[state.job] = contract.EXIT_ERROR
                log(f"{state.name}: failed, {message}")
            else:
                log(f"{state.name}: actor lost ({why}); resuming on a new actor from the last checkpoint")
                pending.appendleft((state.job, state.name, state.attempt + 1))

        while pending or running:
            while idle and pending:
                actor = idle.popleft()
                job, name, attempt = pending.popleft()
                state = _Running(job, name, attempt, time.time())
                try:
                    ray.get(actor.start.remote(name, bundle.pack_job(job)), timeout=settings.poll_timeout_s)
                    pid = ray.get(actor.pid.remote(), timeout=settings.poll_timeout_s)
                except lost_errors as exc:
                    lose(actor, state, type(exc).__name__)
                    continue
                outcome.actor_pids.setdefault(job, []).append(pid)
                running[actor] = state
                log(f"{name}: started on actor pid {pid} (attempt {attempt})")
                if on_started is not None:
                    on_started(job, actor)
            for actor, state in list(running.items()):
                if not state.cancel_sent and contract.cancel_requested(state.job.parent, since=state.started):
                    actor.cancel.remote()
                    state.cancel_sent = True
                try:
                    answer = ray.get(actor.poll.remote(), timeout=settings.poll_timeout_s)
                except lost_errors as exc:
                    del running[actor]
                    lose(actor, state, type(exc).__name__)
                    continue
                bundle.write_files(answer["files"], bundle.job_roots(state.job))
                if answer["exit_code"] is not None:
                    del running[actor]
                    outcome.exit_codes[state.job] = int(answer["exit_code"])
                    log(f"{state.name}: exit {answer['exit_code']}{' ' + answer['message'] if answer['message'] else ''}")
                    actor.forget.remote(state.name)
                    idle.append(actor)
            if running:
                time.sleep(settings.poll_s)
        for actor in idle:
            ray.kill(actor, no_restart=True)
        return outcome
    finally:
        if started_here:
            ray.shutdown()
