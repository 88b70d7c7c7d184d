"""Progress on a terminal for the blocking paths (the headless command, scripts): no bpy.

One tqdm bar per stage (capture views, reconstruct, edit, export), opened when the stage starts
and closed when it ends, with the stage's losses as the bar's postfix; the backend's other events
are lines written with ``tqdm.write`` above the bar, so they never break it. When the bars' stream
is not a terminal (a pipe, a CI log) there are no bars: each stage ends with one summary line, and
a long stage adds a line at most every :data:`PLAIN_INTERVAL_S` seconds.

    progress = TerminalProgress()
    job.run_sync(on_event=progress.on_event, on_capture=progress.on_capture)
    progress.close()
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .. import contract

DESC_WIDTH = 11
"""Characters of a bar's label (the longest stage name)."""

BAR_MININTERVAL_S = 0.2
"""Least time between two redraws of a bar on a terminal."""

PLAIN_INTERVAL_S = 60.0
"""Without a terminal: least time between two progress lines of one stage."""

FIRST_LOSSES = ("loss", "psnr")
"""Losses shown first in a bar's postfix (the others follow in name order)."""

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
"""tqdm's default layout with the stage names aligned (no ``: `` after the label)."""

UNITS = {"capture": "view"}
"""Stage -> what one step counts (default: ``step``)."""


def format_losses(losses: dict[str, float]) -> str:
    """``loss=0.1753 psnr=8.753 depth=0.2573``: the headline losses first, 4 significant digits."""
    names = [k for k in FIRST_LOSSES if k in losses] + sorted(k for k in losses if k not in FIRST_LOSSES)
    return " ".join(f"{k}={losses[k]:.4g}" for k in names)


def event_line(event: contract.Event) -> str | None:
    """The line an event other than progress and preview prints; None for those two."""
    if event.type in ("progress", "preview"):
        return None
    text = event.message or event.results or ""
    extra = f" (how to fix: {event.hint})" if event.hint else ""
    if event.type in ("stage", "log"):
        return f"[{event.stage}] {text}{extra}"
    return f"[{event.type}] {event.stage + ': ' if event.stage else ''}{text}{extra}"


class TerminalProgress:
    """One bar per stage from the capture's progress and the backend's events (see the module docstring).

    ``file``: where bars and lines go (default: bars on stderr, lines on stdout); ``bars``: draw
    bars (default: when the bars' stream is a terminal and tqdm is installed)."""

    def __init__(self, file: TextIO | None = None, *, bars: bool | None = None) -> None:
        self.bar_file = file if file is not None else sys.stderr
        self.line_file = file if file is not None else sys.stdout
        self._tqdm = _tqdm_class()
        if bars is None:
            bars = _is_terminal(self.bar_file)
        self.bars = bool(bars) and self._tqdm is not None
        self.stage = ""
        """The stage whose bar is open ("" = none)."""
        self._bar = None
        self._step = self._total = 0
        self._losses: dict[str, float] = {}
        self._started = self._last_line = 0.0

    # -- the callbacks ------------------------------------------------------------------------------
    def on_capture(self, done: int, total: int) -> None:
        """``EditJob.capture(progress=...)``: views rendered so far."""
        self._progress("capture", done, total, {})

    def on_event(self, event: contract.Event) -> None:
        """``EditJob.run_sync(on_event=...)``: one backend event."""
        if event.type == "progress":
            if event.total:
                self._progress(event.stage, event.step, event.total, event.losses)
            return
        if event.type in ("stage", "started", "finished", "cancelled", "error"):
            self.end_stage()
        line = event_line(event)
        if line is not None:
            self.write(line)

    def write(self, line: str) -> None:
        """A line above the open bar (the bar is redrawn below it)."""
        if self._tqdm is not None:
            self._tqdm.write(line, file=self.line_file)
        else:
            self.line_file.write(line + "\n")
        self.line_file.flush()

    def end_stage(self) -> None:
        """Close the open stage's bar (without a terminal: print its summary line)."""
        if not self.stage:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            self._plain_line(final=True)
        self.stage = ""

    def close(self) -> None:
        """Close whatever is open (call it when the job ends, also on failure)."""
        self.end_stage()

    # -- internals ----------------------------------------------------------------------------------
    def _progress(self, stage: str, step: int, total: int, losses: dict[str, float]) -> None:
        if stage != self.stage:
            self.end_stage()
            self._open(stage, total)
        self._step, self._total = step, total
        self._losses = dict(losses) or self._losses
        if self._bar is not None:
            if self._bar.total != total:
                self._bar.total = total
            if losses:
                self._bar.set_postfix_str(format_losses(losses), refresh=False)
            self._bar.update(step - self._bar.n)
        elif time.monotonic() - self._last_line >= PLAIN_INTERVAL_S and step < total:
            self._plain_line(final=False)
        if step >= total:
            self.end_stage()

    def _open(self, stage: str, total: int) -> None:
        self.stage = stage
        self._step, self._total, self._losses = 0, total, {}
        self._started = self._last_line = time.monotonic()
        if self.bars:
            self._bar = self._tqdm(
                total=total,
                desc=f"{stage:<{DESC_WIDTH}}",
                unit=UNITS.get(stage, "step"),
                file=self.bar_file,
                mininterval=BAR_MININTERVAL_S,
                bar_format=BAR_FORMAT,
                dynamic_ncols=True,
                leave=True,
            )

    def _plain_line(self, *, final: bool) -> None:
        seconds = time.monotonic() - self._started
        losses = format_losses(self._losses)
        unit = UNITS.get(self.stage, "step")
        done = "done in" if final else "after"
        self.write(
            f"[{self.stage}] {self._step}/{self._total} {unit}s {done} {seconds:.1f} s" + (f": {losses}" if losses else "")
        )
        self._last_line = time.monotonic()


def _tqdm_class():
    """tqdm's bar class, or None without tqdm (Blender's own Python): plain lines then."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


_shared: TerminalProgress | None = None
"""The progress of :func:`print_event` and :func:`print_capture_progress` (made on first use)."""


def _shared_progress() -> TerminalProgress:
    global _shared
    if _shared is None:
        _shared = TerminalProgress()
    return _shared


def print_event(event: contract.Event) -> None:
    """``on_event`` for callers without a :class:`TerminalProgress` of their own (the add-on's blocking
    operators): one process-wide progress, whose bars close at the job's end."""
    _shared_progress().on_event(event)


def print_capture_progress(done: int, total: int) -> None:
    """``EditJob.capture(progress=...)`` through the same process-wide progress as :func:`print_event`."""
    _shared_progress().on_capture(done, total)
