#!/usr/bin/env python3
"""Project tasks, standard library only: ``python3.11 build.py TASK``.

    setup     create or refresh .venv from requirements.txt (pinned, tested versions)
    demo      setup, then run the main job (capture, reconstruct, edit, export, import)
    test      setup, then run the test suite (extra arguments go to pytest)
    package   setup, then build the extension zip into dist/ and validate it with Blender's
              own extension tool (shipped inside the bpy wheel)

Every task that needs the environment refreshes it first, so the two commands in README.md work
on a fresh machine and after every change to requirements.txt.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
REQUIREMENTS = ROOT / "requirements.txt"
RAY_REQUIREMENTS = ROOT / "requirements-ray.txt"
"""The backend's optional Ray extra: installed into .venv too, so the tests cover the Ray executor."""
STAMP = VENV / ".piva-requirements.sha256"
MANIFEST = ROOT / "blender_manifest.toml"
EXTENSION_DIR = ROOT / "blender_piva"
DIST = ROOT / "dist"
PYTHON_VERSION = (3, 11)


class TaskError(RuntimeError):
    """A task failed for a reason the user can fix; the message says how."""


def venv_python() -> Path:
    return VENV / "bin" / "python"


def find_base_python() -> str:
    """A Python 3.11 to build the venv with: this one if it is 3.11, else python3.11 on PATH."""
    if sys.version_info[:2] == PYTHON_VERSION:
        return sys.executable
    found = shutil.which("python3.11")
    if found:
        return found
    raise TaskError(
        f"Python 3.11 is required (bpy==5.0.1 and the torch wheel exist only for 3.11); this is "
        f"{sys.version.split()[0]} and no python3.11 is on PATH. Install Python 3.11 and run "
        f"`python3.11 build.py ...`."
    )


def requirements_digest() -> str:
    return hashlib.sha256(
        REQUIREMENTS.read_bytes() + RAY_REQUIREMENTS.read_bytes() + repr(PYTHON_VERSION).encode()
    ).hexdigest()


def setup() -> Path:
    """Create .venv if missing, (re)install the pins when requirements.txt changed."""
    digest = requirements_digest()
    python = venv_python()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == digest:
        return python
    if not python.exists():
        print(f"[setup] creating {VENV}", flush=True)
        run([find_base_python(), "-m", "venv", str(VENV)])
    print("[setup] installing pinned requirements (first time: about a minute)", flush=True)
    run([
        str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-r", str(REQUIREMENTS), "-r", str(RAY_REQUIREMENTS),
    ])
    STAMP.write_text(digest + "\n")
    return python


def run(cmd: list[str], **kwargs) -> None:
    result = subprocess.run(cmd, **kwargs)
    if result.returncode != 0:
        raise TaskError(f"command failed with exit code {result.returncode}: {' '.join(cmd)}")


def task_test(args: list[str]) -> int:
    python = setup()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.call([str(python), "-m", "pytest", *args], cwd=ROOT, env=env)


def task_demo(args: list[str]) -> int:
    python = setup()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.call([str(python), "-m", "blender_piva.cli", "demo", *args], cwd=ROOT, env=env)


def blender_ext_tool(python: Path) -> Path:
    """Blender's extension command-line tool, shipped inside the bpy wheel in the venv."""
    out = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('bpy').origin)"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0 or out.stdout.strip() in ("", "None"):
        raise TaskError(f"bpy is not installed in {VENV}: run `python3.11 build.py setup`")
    bpy_dir = Path(out.stdout.strip()).parent
    candidates = sorted(bpy_dir.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not candidates:
        raise TaskError(f"Blender's extension tool (blender_ext.py) was not found under {bpy_dir}")
    return candidates[-1]


def stage_extension(staging: Path) -> None:
    """Copy the extension sources and the manifest into one folder, as Blender expects."""
    shutil.copytree(EXTENSION_DIR, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(MANIFEST, staging / "blender_manifest.toml")


def manifest_field(name: str) -> str:
    import tomllib

    with open(MANIFEST, "rb") as fh:
        return str(tomllib.load(fh)[name])


def build_package(python: Path, output: Path | None = None) -> Path:
    """Build and validate the extension zip; return its path."""
    tool = blender_ext_tool(python)
    output = output or DIST / f"{manifest_field('id')}-{manifest_field('version')}.zip"
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="piva-ext-") as tmp:
        staging = Path(tmp) / "blender_piva"
        stage_extension(staging)
        run([str(python), str(tool), "validate", str(staging)])
        partial = output.with_name(output.name + ".partial.zip")
        run([str(python), str(tool), "build", "--source-dir", str(staging), "--output-filepath", str(partial)])
        run([str(python), str(tool), "validate", str(partial)])
        os.replace(partial, output)
    return output


def task_package(args: list[str]) -> int:
    python = setup()
    output = Path(args[0]).resolve() if args else None
    path = build_package(python, output)
    print(f"[package] built and validated {path}")
    return 0


TASKS = {
    "setup": lambda args: (setup(), 0)[1],
    "test": task_test,
    "demo": task_demo,
    "package": task_package,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TASKS:
        print(__doc__)
        print(f"usage: python3.11 build.py {{{','.join(TASKS)}}} [args]", file=sys.stderr)
        return 2
    try:
        return TASKS[argv[0]](argv[1:])
    except TaskError as exc:
        print(f"build.py {argv[0]}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
