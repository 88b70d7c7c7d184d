"""How much the per-object cache saves: the main job's edit on a fresh object, then a second
prompt on the same (unchanged) object, which reuses its capture and fitted field.

    .venv/bin/python bench/cache_reuse.py [--work DIR] [--target2 "a green cube"]

Both runs are the README's demo command (the embedded toy model, red cube, CPU) in their own
processes, sharing one job folder root; wall time includes the process start, the import and the
before/after renders. Prints ``first_prompt_seconds``, ``second_prompt_seconds`` and
``second_over_first``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_demo(out: Path, jobs: Path, target: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "blender_piva.cli", "demo", "--out", str(out), "--jobs", str(jobs), "--target", target],
        cwd=ROOT, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"demo failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--target1", default="a blue cube")
    parser.add_argument("--target2", default="a green cube")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="piva-cache-bench-"))
    jobs = work / "jobs"
    shutil.rmtree(jobs, ignore_errors=True)
    first, _ = run_demo(work / "first", jobs, args.target1)
    second, log = run_demo(work / "second", jobs, args.target2)
    if "reused the cached capture and reconstruction" not in log:
        sys.exit("the second run did not reuse the cache: see " + str(work))
    print(f"first_prompt_seconds: {first:.1f}")
    print(f"second_prompt_seconds: {second:.1f}")
    print(f"second_over_first: {second / first:.3f}")


if __name__ == "__main__":
    main()
