"""Command line of the backend.

    python -m backend run JOB.json        run a job written by the extension (events -> events.jsonl);
                                          --run-started TIME: cancel requests older than TIME are stale
    python -m backend serve --inbox DIR  a long-lived worker: runs the jobs submitted to DIR one after
                                          another with one loaded model (backend/serve/,
                                          contract.worker_inbox); --idle-timeout SECONDS
    python -m backend dispatch JOB.json... [--executor workers|ray] [--address ADDR] [--actors N]
                                          run job folders on one worker per GPU, or on a Ray cluster
    python -m backend check [--model M]   report torch, CUDA, diffusers, peft, nerfacc, tinycudann
    python -m backend edit2d IN OUT ...   edit an image file with any method (the 2D path)
    python -m backend judge RESULT SOURCE --color C --shape S
                                          the toy oracle's verdict on rendered views (the main job's check)
    python -m backend report JOB_DIR      (re)build JOB_DIR/results/report.html and report.png
    python -m backend contact-sheet OUT.png JOB_DIR...
                                          the source and every job from the same held-out cameras, one row each
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    started = time.time()  # before the heavy imports: the run's start when the launcher gives none
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "edit2d":
        from .edit2d import main_edit2d

        return main_edit2d(argv[1:])
    if argv and argv[0] == "judge":
        from .toy.judge_views import main_judge

        return main_judge(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job file")
    run.add_argument("job", type=Path, help="path of job.json inside the job folder")
    run.add_argument("--echo", action="store_true", help="also print every event to stdout")
    run.add_argument(
        "--run-started",
        type=float,
        default=None,
        metavar="TIME",
        help="when the launcher started this run (seconds since the epoch): cancel requests older than it "
        "are stale and removed (default: when this process started)",
    )
    serve = sub.add_parser("serve", help="a worker that runs job after job from an inbox folder")
    serve.add_argument("--inbox", type=Path, required=True, help="the folder jobs are submitted to (NAME.json)")
    serve.add_argument(
        "--idle-timeout", type=float, default=0.0, metavar="SECONDS", help="stop after this long without a job (default: never)"
    )
    serve.add_argument("--poll", type=float, default=0.2, metavar="SECONDS", help="how often to look at the inbox (default: 0.2)")
    serve.add_argument("--echo", action="store_true", help="also print every event to stdout")
    dispatch = sub.add_parser("dispatch", help="run job folders on several local workers or a Ray cluster")
    dispatch.add_argument("jobs", type=Path, nargs="+", help="job.json files (each inside its job folder)")
    dispatch.add_argument("--executor", choices=("workers", "ray"), default="workers",
                          help="workers: one worker per visible GPU on this machine; ray: one actor per GPU of a Ray cluster")
    dispatch.add_argument("--address", default="", help="with --executor ray: the cluster (e.g. HEAD:6379; default: a local one)")
    dispatch.add_argument("--actors", type=int, default=0, help="workers or actors to run (default: one per GPU; 1 worker / 2 actors without GPUs)")
    check = sub.add_parser("check", help="report the backend's environment as JSON")
    check.add_argument("--model", default="", help="also try to load this model id, folder or 'toy'")
    check.add_argument("--controlnet", default="", help="with --model: this depth ControlNet (default: the model's own)")
    sub.add_parser("edit2d", help="edit an image file (see `python -m backend edit2d --help`)")
    sub.add_parser("judge", help="the toy oracle's verdict on views (see `python -m backend judge --help`)")
    report = sub.add_parser("report", help="(re)build a job's report: results/report.html and report.png")
    report.add_argument("job_dir", type=Path, help="the job folder (holds job.json and events.jsonl)")
    report.add_argument(
        "--no-render", action="store_true", help="do not render missing held-out views (no torch; previews only)"
    )
    report.add_argument("--device", default="cpu", help="where to render missing held-out views (default: cpu)")
    sheet = sub.add_parser("contact-sheet", help="one PNG: the source and every job from the same held-out cameras")
    sheet.add_argument("out", type=Path, help="the PNG to write")
    sheet.add_argument("job_dirs", type=Path, nargs="+", help="job folders, one row each, in this order")
    sheet.add_argument("--tile", type=int, default=128, help="side of one view in pixels (default: 128)")
    sheet.add_argument(
        "--render-missing", action="store_true", help="render the views of a job that has a field but none (CPU, torch)"
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        from .runner import run_job

        return run_job(args.job, echo=args.echo, started=args.run_started if args.run_started is not None else started)
    if args.command == "serve":
        from .serve.worker import Worker, WorkerSettings

        return Worker(WorkerSettings(args.inbox, idle_timeout=args.idle_timeout, poll_s=args.poll, echo=args.echo)).serve()
    if args.command == "dispatch":
        from .serve.dispatch import main as main_dispatch

        return main_dispatch(args)
    if args.command == "check":
        from .check import main_check

        return main_check(args.model, args.controlnet)
    if args.command == "report":
        from .report.cli import main_report

        return main_report(args.job_dir, render=not args.no_render, device=args.device)
    if args.command == "contact-sheet":
        from .report.cli import main_contact_sheet

        return main_contact_sheet(args.out, args.job_dirs, tile=args.tile, render_missing=args.render_missing)
    return 2


if __name__ == "__main__":
    sys.exit(main())
