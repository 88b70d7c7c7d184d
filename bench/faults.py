"""Fault injection: bad inputs, corrupt and planted files, kills at every stage, cancel then resume,
a full disk and a memory limit, each run through the real command line or the real backend process.

    .venv/bin/python bench/faults.py [--work DIR] [--only NAME,NAME] [--list]

Every case ends in one of three outcomes:

* ``completed``    the job finished (for kill and cancel cases: after a resume);
* ``clear_error``  it stopped with exit code != 0 and a message for the user (a ``PIVA:`` or
                   ``error`` line, or an ``error`` event with a message), and no Python traceback
                   on the terminal;
* ``bad``          anything else (a traceback, exit 0 on a wrong result, a hang, code that ran).

Prints one line per case, then ``faults_tried``, ``faults_clear_error`` (clear error or completed),
``faults_resumed_identical`` (killed or cancelled runs whose resumed result equals the
uninterrupted reference: the same mesh and texture bytes), ``faults_resume_cases`` and
``source_changed`` (cases after which the source .blend's bytes differ, or the source object in a
saved result differs from the original; must be 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

TINY = {
    "capture": {"num_views": 10, "num_eval_views": 2, "resolution": 32, "samples": 4},
    "reconstruct": {"steps": 100, "rays_per_batch": 512, "samples_per_ray": 24, "checkpoint_every": 20, "preview_every": 50},
    "edit": {"steps": 12, "render_resolution": 32, "checkpoint_every": 4, "preview_every": 6},
    "export": {"grid_resolution": 48, "texture_size": 64, "face_budget": 2000, "iso_density": 10.0},
}
"""Settings small enough for dozens of jobs on two cores (the embedded toy model sees 32 px)."""

ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
"""One thread everywhere: a resumed run then computes exactly what an uninterrupted one does."""


@dataclasses.dataclass
class Outcome:
    kind: str
    """completed, clear_error or bad."""
    detail: str
    """The message the user saw (first line), or why the outcome is bad."""
    resumed_identical: bool | None = None
    """For kill/cancel cases: did the resumed result equal the reference?"""


@dataclasses.dataclass
class Case:
    name: str
    group: str
    run: Callable[["Bench"], Outcome]


def sets(overrides: dict) -> list[str]:
    return [f"--set={b}.{k}={json.dumps(v)}" for b, vals in overrides.items() for k, v in vals.items()]


def first_message(text: str) -> str:
    for line in text.splitlines():
        if line.startswith(("PIVA:", "error", "usage:")) or ": error:" in line:
            return line.strip()[:200]
    lines = [l for l in text.splitlines() if l.strip()]
    return (lines[-1] if lines else "").strip()[:200]


def judge(proc: subprocess.CompletedProcess, expect_success: bool = False) -> Outcome:
    """The outcome of a finished command: see the module docstring."""
    out = (proc.stdout or "") + (proc.stderr or "")
    if "Traceback (most recent call last)" in out:
        return Outcome("bad", "traceback: " + first_message(proc.stderr or proc.stdout))
    if proc.returncode == 0:
        return Outcome("completed" if expect_success else "bad", "exit 0" + ("" if expect_success else " on bad input"))
    message = first_message(proc.stderr) or first_message(proc.stdout)
    return Outcome("clear_error" if message else "bad", message or f"exit {proc.returncode} without a message")


def judge_backend(proc: subprocess.CompletedProcess, job_dir: Path) -> Outcome:
    """``python -m backend run``: the error must reach the user as an error event with a message."""
    out = (proc.stdout or "") + (proc.stderr or "")
    if "Traceback (most recent call last)" in out:
        return Outcome("bad", "traceback on the terminal")
    events = []
    path = job_dir / "events.jsonl"
    if path.is_file():
        events = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    errors = [e for e in events if e.get("type") == "error"]
    if proc.returncode == 0:
        return Outcome("bad", "exit 0 on bad input")
    if errors and errors[-1].get("message"):
        hint = errors[-1].get("hint", "")
        return Outcome("clear_error", (errors[-1]["message"] + (f" | hint: {hint}" if hint else ""))[:200])
    message = first_message(proc.stderr or "")
    return Outcome("clear_error" if message else "bad", message or "no error event")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.scene = work / "scene.blend"
        self.source_changed = 0
        self._reference: dict[str, str] | None = None
        self._counter = 0

    # -- fixtures ------------------------------------------------------------------------------
    def make_scene(self) -> None:
        script = (
            "import bpy, sys; sys.path.insert(0, {root!r}); import toy_world;"
            "bpy.ops.wm.read_factory_settings(use_empty=True);"
            "toy_world.add_object('red', 'cube', name='Cube');"
            "cam = bpy.data.objects.new('Cam', bpy.data.cameras.new('Cam')); bpy.context.scene.collection.objects.link(cam);"
            "m = bpy.data.meshes.new('Flat'); m.from_pydata([(0,0,0),(1,0,0),(2,0,0)], [], [(0,1,2)]);"
            "o = bpy.data.objects.new('Flat', m); bpy.context.scene.collection.objects.link(o);"
            "p = bpy.data.meshes.new('Points'); p.from_pydata([(0,0,0),(1,1,1)], [], []);"
            "q = bpy.data.objects.new('Points', p); bpy.context.scene.collection.objects.link(q);"
            "bpy.ops.wm.save_as_mainfile(filepath={path!r})"
        ).format(root=str(ROOT), path=str(self.scene))
        subprocess.run([PY, "-c", script], check=True, capture_output=True, timeout=300, env=ENV)
        self.scene_digest = digest(self.scene)

    def fresh(self, label: str) -> Path:
        self._counter += 1
        folder = self.work / f"{self._counter:02d}-{label}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def cli(self, *args: str, scene: Path | None = None, timeout: float = 900, extra_env: dict | None = None,
            command: str = "edit", jobs: Path | None = None, overrides: bool = True) -> subprocess.CompletedProcess:
        base = [PY, "-m", "blender_piva.cli", command, str(scene or self.scene)]
        defaults = ["--object", "Cube", "--source", "a red cube", "--target", "a blue cube", "--preset", "test",
                    "--device", "cpu", "--method", "dds"]
        given = set(a.split("=")[0] for a in args if a.startswith("--"))
        chosen: list[str] = []
        i = 0
        while i < len(defaults):
            if defaults[i] not in given:
                chosen += defaults[i:i + 2]
            i += 2
        if jobs is not None and "--jobs" not in given:
            chosen += ["--jobs", str(jobs)]
        cmd = base + chosen + (sets(TINY) if overrides else []) + list(args)  # the case's own --set wins
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                  env={**ENV, **(extra_env or {})}, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            proc = subprocess.CompletedProcess(cmd, 124, exc.stdout or "", (exc.stderr or "") + "\nTIMEOUT")
        self.check_source()
        return proc

    def check_source(self) -> None:
        if digest(self.scene) != self.scene_digest:
            self.source_changed += 1
            self.make_scene()

    def prepared_job(self, label: str) -> Path:
        """A job folder with its capture (the CLI with no backend stage), ready for ``backend run``."""
        jobs = self.fresh(label)
        proc = self.cli("--stages", "", "--no-cache", jobs=jobs)
        if proc.returncode != 0:
            raise RuntimeError(f"could not prepare a job: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        job = next(p for p in jobs.iterdir() if (p / "job.json").is_file())
        spec = json.loads((job / "job.json").read_text())
        spec["stages"] = ["reconstruct", "edit", "export"]
        (job / "job.json").write_text(json.dumps(spec, indent=2))
        return job

    def backend(self, job: Path, timeout: float = 900, python: str = PY, preexec=None) -> subprocess.CompletedProcess:
        cmd = [python, "-m", "backend", "run", str(job / "job.json")]
        try:
            return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=ENV,
                                  preexec_fn=preexec, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(cmd, 124, exc.stdout or "", (exc.stderr or "") + "\nTIMEOUT")

    def results(self, job: Path) -> dict[str, str]:
        res = job / "results"
        return {name: digest(res / name) for name in ("mesh.glb", "texture.png")}

    def reference(self) -> dict[str, str]:
        """The uninterrupted run every resumed run is compared with."""
        if self._reference is None:
            job = self.prepared_job("reference")
            proc = self.backend(job)
            if proc.returncode != 0:
                raise RuntimeError(f"the reference run failed: {proc.stderr[-2000:]}")
            self._reference = self.results(job)
        return self._reference

    def kill_at(self, job: Path, stage: str, step: int, sig: int = signal.SIGKILL) -> bool:
        """Run the backend and send ``sig`` once ``stage`` reports ``step``; True if it was sent."""
        events = job / "events.jsonl"
        offset = events.stat().st_size if events.is_file() else 0
        proc = subprocess.Popen([PY, "-m", "backend", "run", str(job / "job.json")], cwd=ROOT, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        sent = False
        while proc.poll() is None and time.monotonic() < deadline:
            if events.is_file():
                with open(events) as fh:
                    fh.seek(offset)
                    for line in fh.read().splitlines():
                        try:
                            e = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        if e.get("type") == "progress" and e.get("stage") == stage and e.get("step", 0) >= step:
                            proc.send_signal(sig)
                            sent = True
                            break
            if sent:
                break
            time.sleep(0.05)
        proc.wait(timeout=300)
        return sent


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


def bad_cli(*args: str, **kw) -> Callable[[Bench], Outcome]:
    def run(b: Bench) -> Outcome:
        return judge(b.cli(*args, jobs=b.fresh("cli"), **kw))
    return run


def text_file_as_blend(b: Bench) -> Outcome:
    folder = b.fresh("textblend")
    fake = folder / "notes.blend"
    fake.write_text("this is not a blend file\n")
    return judge(b.cli(scene=fake, jobs=folder))


def truncated_blend(b: Bench) -> Outcome:
    folder = b.fresh("truncblend")
    cut = folder / "cut.blend"
    cut.write_bytes(b.scene.read_bytes()[: 4096])
    return judge(b.cli(scene=cut, jobs=folder))


def save_to_folder(b: Bench) -> Outcome:
    folder = b.fresh("savefolder")
    (folder / "out.blend").mkdir()
    return judge(b.cli("--save", str(folder / "out.blend"), jobs=folder))


def save_unwritable(b: Bench) -> Outcome:
    return judge(b.cli("--save", "/proc/piva/out.blend", jobs=b.fresh("saveproc")))


def jobs_is_a_file(b: Bench) -> Outcome:
    folder = b.fresh("jobsfile")
    blocker = folder / "file"
    blocker.write_text("x")
    return judge(b.cli("--jobs", str(blocker)))


def python_without_packages(b: Bench) -> Outcome:
    bare = shutil.which("python3.11") or "/usr/bin/python3"
    return judge(b.cli("--python", bare, jobs=b.fresh("barepy")))


def queue_of_wrong_types(b: Bench) -> Outcome:
    folder = b.fresh("queue")
    queue = folder / "queue.json"
    queue.write_text(json.dumps({"contract": 1, "kind": "batch", "items": "not a list", "settings": 3}))
    proc = subprocess.run([PY, "-m", "blender_piva.cli", "resume", str(queue), "--blend", str(b.scene)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=ENV, stdin=subprocess.DEVNULL)
    b.check_source()
    return judge(proc)


def job_file_edit(mutate: Callable[[dict], None]) -> Callable[[Bench], Outcome]:
    def run(b: Bench) -> Outcome:
        job = b.prepared_job("spec")
        spec = json.loads((job / "job.json").read_text())
        mutate(spec)
        (job / "job.json").write_text(json.dumps(spec))
        return judge_backend(b.backend(job), job)
    return run


def malformed_job_json(b: Bench) -> Outcome:
    job = b.prepared_job("badjson")
    (job / "job.json").write_text('{"job_id": "x",')
    return judge_backend(b.backend(job), job)


def corrupt_capture(mutate: Callable[[Path], None]) -> Callable[[Bench], Outcome]:
    def run(b: Bench) -> Outcome:
        job = b.prepared_job("capture")
        capture = job / "capture"
        mutate(capture)
        return judge_backend(b.backend(job), job)
    return run


def truncate_first_png(folder: str) -> Callable[[Path], None]:
    def mutate(capture: Path) -> None:
        png = sorted((capture / folder).glob("*.png"))[0]
        png.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])
    return mutate


class _Planted:
    """A pickle that, when loaded, writes a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from a planted checkpoint ran"))


def planted_pickle(names: tuple[str, ...]) -> Callable[[Bench], Outcome]:
    def run(b: Bench) -> Outcome:
        job = b.prepared_job("pickle")
        marker = job / "PWNED"
        payload = pickle.dumps({"step": 5, "evil": _Planted(marker)})
        for name in names:
            for folder in (job / "checkpoints", job / "reconstruction" / "checkpoints", job / "edit" / "checkpoints",
                           job / "reconstruction", job / "edit", job):
                folder.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(payload)
        proc = b.backend(job)
        if marker.exists():
            return Outcome("bad", "the planted pickle ran code")
        if proc.returncode == 0:
            return Outcome("completed", "planted files ignored; the job ran")
        return judge_backend(proc, job)
    return run


def stale_cancel(b: Bench) -> Outcome:
    job = b.prepared_job("stalecancel")
    (job / "cancel.json").write_text(json.dumps({"reason": "user", "time": time.time() - 3600, "contract": 1}))
    proc = b.backend(job)
    return Outcome("completed", "stale cancel ignored") if proc.returncode == 0 else judge_backend(proc, job)


def fake_reconstruction(b: Bench) -> Outcome:
    job = b.prepared_job("fakerecon")
    recon = job / "reconstruction"
    (recon / "field").mkdir(parents=True, exist_ok=True)
    (recon / "metrics.json").write_text('{"heldout_psnr_db": 99}')
    proc = b.backend(job)
    if proc.returncode == 0:
        ok = (job / "reconstruction" / "field").is_dir() and any((job / "reconstruction" / "field").iterdir())
        return Outcome("completed" if ok else "bad", "refit instead of reusing" if ok else "reused an empty field")
    return judge_backend(proc, job)


def relative_capture_dir(b: Bench) -> Outcome:
    job = b.prepared_job("relative")
    spec = json.loads((job / "job.json").read_text())
    spec["capture_dir"] = "capture"
    (job / "job.json").write_text(json.dumps(spec))
    cmd = [PY, "-m", "backend", "run", str(job / "job.json")]
    proc = subprocess.run(cmd, cwd=b.work, capture_output=True, text=True, timeout=900, env=ENV)  # another cwd
    return Outcome("completed", "resolved against the job file") if proc.returncode == 0 else judge_backend(proc, job)


def other_objects_job(b: Bench) -> Outcome:
    jobs = b.fresh("otherjob")
    first = b.cli("--stages", "", jobs=jobs)
    if first.returncode != 0:
        return Outcome("bad", "could not prepare the other job")
    job = next(p for p in jobs.iterdir() if (p / "job.json").is_file())
    spec = json.loads((job / "job.json").read_text())
    spec["object_name"] = "Someone"
    (job / "job.json").write_text(json.dumps(spec))
    return judge(b.cli("--job-dir", str(job), "--stages", "", jobs=jobs))


def edit2d(args_for: Callable[[Path], list[str]]) -> Callable[[Bench], Outcome]:
    def run(b: Bench) -> Outcome:
        folder = b.fresh("edit2d")
        cmd = [PY, "-m", "backend", "edit2d", *args_for(folder)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
        return judge(proc)
    return run


def text_image(folder: Path) -> list[str]:
    (folder / "img.png").write_text("not an image")
    return [str(folder / "img.png"), str(folder / "out.png"), "--source", "a", "--target", "b", "--model", "toy",
            "--steps", "2", "--size", "64"]


def empty_prompt_2d(folder: Path) -> list[str]:
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "img.png")
    return [str(folder / "img.png"), str(folder / "out.png"), "--source", " ", "--target", "b", "--model", "toy",
            "--steps", "2", "--size", "64"]


def kill_and_resume(stage: str, step: int, sig: int = signal.SIGKILL) -> Callable[[Bench], Outcome]:
    def run(b: Bench) -> Outcome:
        reference = b.reference()
        job = b.prepared_job(f"kill-{stage}")
        if not b.kill_at(job, stage, step, sig):
            return Outcome("bad", f"the run ended before {stage} step {step}")
        proc = b.backend(job)
        if proc.returncode != 0:
            return Outcome("bad", "the resume failed: " + first_message(proc.stderr))
        same = b.results(job) == reference
        return Outcome("completed", "resumed" + (" to the reference result" if same else " to a different result"), same)
    return run


def cancel_and_resume(b: Bench) -> Outcome:
    reference = b.reference()
    job = b.prepared_job("cancel")
    events = job / "events.jsonl"
    proc = subprocess.Popen([PY, "-m", "backend", "run", str(job / "job.json")], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if events.is_file() and '"stage":"edit","step":5' in events.read_text().replace(" ", ""):
            (job / "cancel.json").write_text(json.dumps({"reason": "user", "time": time.time(), "contract": 1}))
            break
        time.sleep(0.05)
    code = proc.wait(timeout=600)
    if code != 3:
        return Outcome("bad", f"cancel ended with exit {code}, not 3")
    (job / "cancel.json").unlink(missing_ok=True)  # what the extension does before running a job again
    again = b.backend(job)
    if again.returncode != 0:
        return Outcome("bad", "the resume after cancel failed")
    same = b.results(job) == reference
    return Outcome("completed", "cancelled, then resumed", same)


def sigint_cli_and_resume(b: Bench) -> Outcome:
    jobs = b.fresh("sigint")
    cmd = [PY, "-m", "blender_piva.cli", "edit", str(b.scene), "--object", "Cube", "--source", "a red cube",
           "--target", "a blue cube", "--preset", "test", "--device", "cpu", "--method", "dds", "--no-cache",
           "--jobs", str(jobs), *sets(TINY)]
    # A background job inherits SIGINT ignored: give the command a terminal's default, as Ctrl+C meets it.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        found = list(jobs.glob("*/events.jsonl"))
        if found and '"stage":"edit"' in found[0].read_text().replace(" ", ""):
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.1)
    out, err = proc.communicate(timeout=600)
    job = next((p for p in jobs.iterdir() if (p / "job.json").is_file()), None)
    if job is None:
        return Outcome("bad", "no job folder")
    time.sleep(1.0)
    alive = subprocess.run(["pgrep", "-f", f"backend run {job}/job.json"], capture_output=True).returncode == 0
    if alive:
        return Outcome("bad", "Ctrl+C left the backend running")
    again = b.cli("--job-dir", str(job), "--no-cache", jobs=jobs)
    b.check_source()
    if again.returncode != 0:
        return Outcome("bad", "the resume after Ctrl+C failed: " + first_message(again.stderr))
    if proc.returncode != 3:
        return Outcome("bad", f"Ctrl+C ended with exit {proc.returncode}, not 3 (cancelled)")
    return Outcome("completed", "Ctrl+C: cancelled (exit 3), then resumed", None)


def disk_full(b: Bench) -> Outcome:
    folder = b.fresh("diskfull")
    mount = folder / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        return Outcome("bad", "SKIPPED: no tmpfs here (" + made.stderr.decode().strip()[:80] + ")")
    try:
        proc = b.cli("--jobs", str(mount), "--no-cache")
        leftovers = [p for p in mount.rglob("*.tmp")]
        outcome = judge(proc)
        if leftovers and outcome.kind != "completed":
            outcome.detail += f" (left {len(leftovers)} temp files)"
        return outcome
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def memory_limit(b: Bench) -> Outcome:
    import resource

    job = b.prepared_job("oom")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1_600_000_000, 1_600_000_000))

    spec = json.loads((job / "job.json").read_text())
    spec["reconstruct"]["rays_per_batch"] = 1 << 22  # far more than 1.6 GB of address space holds
    (job / "job.json").write_text(json.dumps(spec))
    return judge_backend(b.backend(job, preexec=limit), job)


CASES: list[Case] = [
    # -- command-line arguments and the scene
    Case("missing_blend", "input", bad_cli(scene=Path("/nonexistent/scene.blend"))),
    Case("text_file_as_blend", "input", text_file_as_blend),
    Case("truncated_blend", "corrupt", truncated_blend),
    Case("unknown_object", "input", bad_cli("--object", "Nope")),
    Case("camera_object", "input", bad_cli("--object", "Cam")),
    Case("degenerate_mesh", "geometry", bad_cli("--object", "Flat")),
    Case("mesh_without_faces", "geometry", bad_cli("--object", "Points")),
    Case("empty_source_prompt", "input", bad_cli("--source", " ")),
    Case("empty_target_prompt", "input", bad_cli("--target", "")),
    Case("prompt_too_long", "input", bad_cli("--target", "a " * 600)),
    Case("negative_steps", "input", bad_cli("--steps", "-5")),
    Case("seeds_not_numbers", "input", bad_cli("--target", "a blue cube", "--seeds", "a,b", command="variants")),
    Case("set_malformed", "input", bad_cli("--set", "capture")),
    Case("set_unknown_block", "input", bad_cli("--set", "nope.x=1")),
    Case("set_unknown_key", "input", bad_cli("--set", "capture.nope=1")),
    Case("set_wrong_type", "input", bad_cli("--set", "capture.resolution=\"big\"")),
    Case("set_out_of_range", "input", bad_cli("--set", "capture.resolution=4")),
    Case("set_conflicts_with_flag", "input", bad_cli("--set", "edit.method=\"sds\"")),
    Case("reconstruct_zero_steps", "input", bad_cli("--set", "reconstruct.steps=0")),
    Case("unknown_method", "input", bad_cli("--method", "magic")),
    Case("unknown_preset", "input", bad_cli("--preset", "ultra")),
    Case("cuda_without_gpu", "input", bad_cli("--device", "cuda")),
    Case("missing_model_folder", "input", bad_cli("--model", "/nonexistent/model")),
    Case("missing_backend_python", "input", bad_cli("--python", "/nonexistent/python")),
    Case("backend_python_without_packages", "input", python_without_packages),
    Case("save_to_a_folder", "input", save_to_folder),
    Case("save_unwritable", "input", save_unwritable),
    Case("jobs_is_a_file", "input", jobs_is_a_file),
    Case("queue_wrong_types", "input", queue_of_wrong_types),
    Case("job_dir_of_another_object", "ownership", other_objects_job),
    # -- job folders read by the backend
    Case("job_json_malformed", "corrupt", malformed_job_json),
    Case("job_json_unknown_field", "input", job_file_edit(lambda s: s.update(colour="blue"))),
    Case("job_json_future_contract", "input", job_file_edit(lambda s: s.update(contract=99))),
    Case("job_json_relative_output", "input", job_file_edit(lambda s: s.update(output_dir="jobs/x"))),
    Case("capture_missing", "corrupt", corrupt_capture(lambda c: shutil.rmtree(c))),
    Case("capture_png_truncated", "corrupt", corrupt_capture(truncate_first_png("images"))),
    Case("capture_depth_truncated", "corrupt", corrupt_capture(truncate_first_png("depth"))),
    Case("transforms_malformed", "corrupt", corrupt_capture(lambda c: (c / "transforms.json").write_text("{oops"))),
    Case("transforms_no_frames", "corrupt", corrupt_capture(
        lambda c: (c / "transforms.json").write_text(json.dumps({**json.loads((c / "transforms.json").read_text()), "frames": []})))),
    Case("planted_pickle_old_names", "security", planted_pickle(("reconstruct.pt", "edit.pt"))),
    Case("planted_pickle_new_names", "security", planted_pickle(("reconstruct.safetensors", "edit.safetensors"))),
    Case("stale_cancel_request", "stale", stale_cancel),
    Case("fake_reconstruction_folder", "ownership", fake_reconstruction),
    Case("relative_capture_dir", "ownership", relative_capture_dir),
    Case("edit2d_text_as_image", "corrupt", edit2d(text_image)),
    Case("edit2d_empty_prompt", "input", edit2d(empty_prompt_2d)),
    # -- resources
    Case("disk_full", "resources", disk_full),
    Case("memory_limit", "resources", memory_limit),
    # -- kills, cancel, Ctrl+C
    Case("kill_during_reconstruct", "resume", kill_and_resume("reconstruct", 50)),
    Case("kill_during_edit", "resume", kill_and_resume("edit", 6)),
    Case("sigterm_during_edit", "resume", kill_and_resume("edit", 6, signal.SIGTERM)),
    Case("kill_during_export", "resume", kill_and_resume("export", 1)),
    Case("cancel_then_resume", "resume", cancel_and_resume),
    Case("ctrl_c_cli_then_resume", "resume", sigint_cli_and_resume),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "faults")
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES:
            print(f"{case.group:<10} {case.name}")
        return 0
    chosen = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.work.resolve())
    bench.make_scene()
    outcomes: list[tuple[Case, Outcome]] = []
    for case in chosen:
        start = time.perf_counter()
        try:
            outcome = case.run(bench)
        except Exception as exc:  # a harness failure is reported as a bad outcome, never hidden
            outcome = Outcome("bad", f"harness: {type(exc).__name__}: {exc}"[:200])
        outcomes.append((case, outcome))
        same = "" if outcome.resumed_identical is None else f" identical={outcome.resumed_identical}"
        print(f"case {case.name:<34} {outcome.kind:<12} {time.perf_counter() - start:6.1f}s{same}  {outcome.detail}", flush=True)
    resume_cases = [o for _, o in outcomes if o.resumed_identical is not None]
    print(f"faults_tried: {len(outcomes)}")
    print(f"faults_clear_error: {sum(o.kind in ('clear_error', 'completed') for _, o in outcomes)}")
    print(f"faults_resume_cases: {len(resume_cases)}")
    print(f"faults_resumed_identical: {sum(bool(o.resumed_identical) for o in resume_cases)}")
    print(f"source_changed: {bench.source_changed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
