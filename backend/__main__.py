"""Command line of the backend.

    python -m backend run JOB.json        run a job written by the extension (events -> events.jsonl)
    python -m backend check [--model M]   report torch, CUDA, diffusers, peft, nerfacc, tinycudann
    python -m backend edit2d IN OUT ...   edit an image file with any method (the 2D path)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "edit2d":
        from .edit2d import main_edit2d

        return main_edit2d(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job file")
    run.add_argument("job", type=Path, help="path of job.json inside the job folder")
    run.add_argument("--echo", action="store_true", help="also print every event to stdout")
    check = sub.add_parser("check", help="report the backend's environment as JSON")
    check.add_argument("--model", default="", help="also try to load this model id or folder")
    sub.add_parser("edit2d", help="edit an image file (see `python -m backend edit2d --help`)")
    args = parser.parse_args(argv)
    if args.command == "run":
        from .runner import run_job

        return run_job(args.job, echo=args.echo)
    if args.command == "check":
        from .check import main_check

        return main_check(args.model)
    return 2


if __name__ == "__main__":
    sys.exit(main())
