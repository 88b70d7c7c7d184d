"""The headless command under faults: bad arguments and settings, damaged files, Ctrl+C then resume.

Every refusal is one ``PIVA:`` line (a job's error then adds a "how to fix" line) with exit code 1
(2 for argparse's own checks), no traceback, nothing captured, and the source .blend byte-for-byte
unchanged. Ctrl+C cancels the backend
(exit code 3, the command to resume printed) and the printed command resumes to the end.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("bpy")

from blender_piva import contract

from .tiny_settings import TEST_OVERRIDES

ROOT = Path(__file__).resolve().parent.parent
SETS = [f"--set={block}.{key}={json.dumps(value)}" for block, values in TEST_OVERRIDES.items()
        for key, value in values.items()]


def _interruptible() -> None:
    """A command started from a background job inherits SIGINT ignored; a terminal's Ctrl+C is not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.blend"
    make = (
        f"import bpy, sys; sys.path.insert(0, {str(ROOT)!r}); import toy_world;"
        "bpy.ops.wm.read_factory_settings(use_empty=True); toy_world.add_object('red', 'cube', name='Cube');"
        f"bpy.ops.wm.save_as_mainfile(filepath={str(path)!r})"
    )
    subprocess.run([sys.executable, "-c", make], check=True, capture_output=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A real Python without the backend's packages: a fresh venv without pip."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    return folder / "bin" / "python"


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blender_piva.cli", *map(str, args)], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def edit_args(scene: Path, jobs: Path, *extra: str) -> list[str]:
    return ["edit", str(scene), "--object", "Cube", "--source", "a red cube", "--target", "a blue cube",
            "--preset", "test", "--device", "cpu", "--jobs", str(jobs), *extra]


def _queue_of_wrong_types(tmp: Path, scene: Path) -> list[str]:
    item = {"object_name": "Cube", "source_prompt": "a", "target_prompt": "b", "seed": "seven"}
    queue = {"format": 1, "kind": "variants", "batch_id": "q", "items": [item], "settings": {},
             "blend_file": str(scene)}
    (tmp / "queue.json").write_text(json.dumps(queue))
    return ["resume", str(tmp / "queue.json")]


def _cut_blend(tmp: Path, scene: Path) -> list[str]:
    cut = tmp / "cut.blend"
    cut.write_bytes(scene.read_bytes()[:4096])
    return edit_args(cut, tmp / "jobs")


def _text_as_blend(tmp: Path, scene: Path) -> list[str]:
    (tmp / "notes.blend").write_text("this is not a blend file\n")
    return edit_args(tmp / "notes.blend", tmp / "jobs")


def _save_to_folder(tmp: Path, scene: Path) -> list[str]:
    (tmp / "out.blend").mkdir()
    return edit_args(scene, tmp / "jobs", "--save", str(tmp / "out.blend"))


def _save_under_a_file(tmp: Path, scene: Path) -> list[str]:
    (tmp / "file.txt").write_text("x")
    return edit_args(scene, tmp / "jobs", "--save", str(tmp / "file.txt" / "out.blend"))


CASES = {
    "seeds_not_numbers": (
        lambda tmp, scene: ["variants", str(scene), "--object", "Cube", "--source", "a", "--target", "b",
                            "--seeds", "1,a"],
        2, "argument --seeds: 'a' is not a whole number (seeds are 0..2147483647)",
    ),
    "negative_steps": (lambda tmp, scene: edit_args(scene, tmp / "jobs", "--steps", "-5"), 2, "--steps: -5 is out"),
    "negative_seed": (lambda tmp, scene: edit_args(scene, tmp / "jobs", "--seed", "-1"), 2, "--seed: -1 is out"),
    "lambda_not_a_number": (lambda tmp, scene: edit_args(scene, tmp / "jobs", "--lambda", "nan"), 2, "--lambda: nan"),
    "set_conflicts_with_a_flag": (
        lambda tmp, scene: edit_args(scene, tmp / "jobs", "--set", 'edit.method="sds"'),
        1, "--set edit.method conflicts with --method: use --method instead",
    ),
    "set_conflicts_with_a_given_flag": (
        lambda tmp, scene: edit_args(scene, tmp / "jobs", "--steps", "3", "--set", "edit.steps=5"),
        1, "--set edit.steps conflicts with --steps: use --steps instead",
    ),
    "save_to_a_folder": (_save_to_folder, 1, "out.blend is a folder: give the .blend file to write"),
    "save_under_a_file": (_save_under_a_file, 1, "file.txt is a file, not a folder"),
    "truncated_blend": (_cut_blend, 1, "cut.blend: it is not a readable .blend file (Missing DNA block)"),
    "text_file_as_blend": (_text_as_blend, 1, "notes.blend: it is not a readable .blend file"),
    "queue_of_wrong_types": (_queue_of_wrong_types, 1, "queue.items[0].seed: is \"seven\", of the wrong type"),
    "reconstruct_zero_steps": (
        lambda tmp, scene: edit_args(scene, tmp / "jobs", "--set", "reconstruct.steps=0"),
        1, "reconstruct.steps: is 0 but the reconstruct stage runs",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_before_any_work(scene_file, tmp_path, name):
    make_args, code, message = CASES[name]
    original = scene_file.read_bytes()
    out = cli(*make_args(tmp_path, scene_file))
    assert out.returncode == code, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("PIVA:")]
    assert lines and message in lines[0], out.stderr  # the problem on one line (a job's error adds "how to fix")
    assert not list(tmp_path.rglob("transforms.json")) and not (tmp_path / "out.blend").is_file()
    assert scene_file.read_bytes() == original


def test_backend_python_without_its_packages_is_refused_before_the_capture(scene_file, tmp_path, bare_python):
    original = scene_file.read_bytes()
    out = cli(*edit_args(scene_file, tmp_path / "jobs", "--python", str(bare_python)))
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert f"PIVA: error: the backend Python '{bare_python}' lacks torch" in out.stderr
    assert not list(tmp_path.rglob("transforms.json"))
    assert scene_file.read_bytes() == original


def _backend_pids(job_dir: Path) -> list[int]:
    """Processes running ``backend run JOB/job.json`` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"backend" in argv and str(job_dir / "job.json").encode() in argv and state != "Z":
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the backend process through /proc")
def test_ctrl_c_cancels_the_backend_and_the_printed_command_resumes(scene_file, tmp_path, tiny_model):
    original = scene_file.read_bytes()
    jobs = tmp_path / "jobs"
    args = edit_args(scene_file, jobs, "--model", str(tiny_model), "--stages", "reconstruct", *SETS)  # one stage: fast
    proc = subprocess.Popen([sys.executable, "-m", "blender_piva.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=_interruptible)
    job_dir, pids, deadline = None, [], time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline and not pids:
            for events in jobs.glob("*/events.jsonl"):
                if any(e.type == "progress" and e.stage == "reconstruct" for e in contract.EventReader(events).poll()):
                    job_dir = events.parent
                    pids = _backend_pids(job_dir)
            time.sleep(0.1)
        assert pids, "the backend never reported progress"
        proc.send_signal(signal.SIGINT)  # what Ctrl+C in the terminal sends to the command (not the backend)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == contract.EXIT_CANCELLED, out[-2000:] + err[-2000:]
    assert "Traceback" not in out + err and "PIVA: cancelling:" in err
    assert _backend_pids(job_dir) == [] and not [p for p in pids if Path(f"/proc/{p}").exists()]
    events = contract.EventReader(job_dir / "events.jsonl").poll()
    assert events[-1].type == "cancelled" and events[-1].stage == "reconstruct"
    assert json.loads((job_dir / "cancel.json").read_text())["reason"] == "user"
    assert list(jobs.rglob("checkpoints/reconstruct.json")), "the backend did not checkpoint before stopping"
    resume = [line for line in err.splitlines() if line.startswith("PIVA: resume with: ")]
    assert len(resume) == 1 and f"--job-dir {job_dir}" in resume[0]

    command = shlex.split(resume[0].removeprefix("PIVA: resume with: "))
    again = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=900,
                           stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"PIVA: job folder: {job_dir}" in again.stdout
    resumed = contract.EventReader(job_dir / "events.jsonl").poll()[len(events):]
    assert any(e.type == "log" and "resuming the fit from step" in e.message for e in resumed)
    assert resumed[-1].type == "finished" and scene_file.read_bytes() == original
