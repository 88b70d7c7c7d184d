"""Progress on a terminal for the blocking paths (the headless command, scripts): no bpy."""

from __future__ import annotations

import sys

from .. import contract

BAR_WIDTH = 30
"""Characters of the progress bar."""


def print_event(event: contract.Event) -> None:
    """The terminal's progress line for one backend event."""
    if event.type == "progress" and event.total:
        filled = int(BAR_WIDTH * event.step / event.total)
        losses = " ".join(f"{k}={v:.4g}" for k, v in sorted(event.losses.items()))
        end = "\n" if event.step >= event.total else ""
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        sys.stdout.write(f"\r[{event.stage:<11}] {bar} {event.step}/{event.total} {losses}{end}")
    elif event.type in ("stage", "log", "started", "finished", "cancelled", "error"):
        text = event.message or event.results or ""
        extra = f" (hint: {event.hint})" if event.hint else ""
        sys.stdout.write(f"[{event.type}] {event.stage} {text}{extra}\n")
    sys.stdout.flush()


def print_capture_progress(done: int, total: int) -> None:
    """The terminal's line for the capture's progress (``EditJob.capture(progress=...)``)."""
    sys.stdout.write(f"\r[capture    ] {done}/{total} views")
    sys.stdout.write("\n" if done >= total else "")
    sys.stdout.flush()
