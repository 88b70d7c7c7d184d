"""The terminal's progress: one tqdm bar per stage from the capture's views and the backend's events,
the other events as lines above the bars, and a short plain log when the stream is no terminal."""

from __future__ import annotations

import io
import re

import pytest

from blender_piva.contract import Event
from blender_piva.core import terminal
from blender_piva.core.terminal import TerminalProgress, format_losses

pytest.importorskip("tqdm")


def _job_events() -> list[Event]:
    events = [Event("started", message="backend 0.1.0, device cpu"), Event("log", stage="validate", message="capture ok")]
    for stage, total in (("reconstruct", 5), ("edit", 3), ("export", 2)):
        events.append(Event("stage", stage=stage, total=total, message=f"{stage} begins"))
        for step in range(1, total + 1):
            events.append(Event("progress", stage=stage, step=step, total=total, losses={"loss": 1.0 / step, "psnr": 10.0 + step}))
        events.append(Event("log", stage=stage, message=f"{stage} summary"))
    events.append(Event("finished", results="/jobs/J/results/manifest.json"))
    return events


def _run(progress: TerminalProgress) -> None:
    for done in range(1, 5):
        progress.on_capture(done, 4)
    for event in _job_events():
        progress.on_event(event)
    progress.close()


def _final_bars(text: str) -> list[str]:
    """The last drawing of every bar: what a terminal shows once the bar is closed."""
    lines = [segment.split("\r")[-1] for segment in text.split("\n")]
    return [line for line in lines if "|" in line and re.search(r"\d+/\d+", line)]


def test_one_bar_per_stage_with_losses_and_the_log_lines_above(monkeypatch):
    out = io.StringIO()
    progress = TerminalProgress(file=out, bars=True)
    opened = []
    real = progress._tqdm

    def counting(*args, **kwargs):
        opened.append(kwargs["desc"].strip())
        return real(*args, **kwargs)

    monkeypatch.setattr(progress, "_tqdm", counting)
    monkeypatch.setattr(counting, "write", real.write, raising=False)
    _run(progress)
    assert opened == ["capture", "reconstruct", "edit", "export"]  # one bar per stage, capture included
    bars = _final_bars(out.getvalue())
    assert [bar.split()[0] for bar in bars] == ["capture", "reconstruct", "edit", "export"]
    assert "4/4" in bars[0] and "5/5" in bars[1] and "3/3" in bars[2] and "2/2" in bars[3]
    assert "loss=0.2 psnr=15" in bars[1] and "loss=0.3333 psnr=13" in bars[2]  # the last step's losses
    text = out.getvalue()
    for line in ("[started] backend 0.1.0, device cpu", "[validate] capture ok", "[edit] edit begins",
                 "[export] export summary", "[finished] /jobs/J/results/manifest.json"):
        assert line + "\n" in text
    assert text.index("[reconstruct] reconstruct begins") < text.index("reconstruct 100%") < text.index(
        "[reconstruct] reconstruct summary")
    assert progress.stage == "" and progress._bar is None  # every bar closed


def test_without_a_terminal_each_stage_is_one_summary_line():
    out = io.StringIO()  # not a terminal: no bars
    progress = TerminalProgress(file=out)
    assert not progress.bars
    _run(progress)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "|" not in out.getvalue()
    summaries = [line for line in lines if re.match(r"\[\w+\] \d+/\d+ \w+ done in", line)]
    assert [s.split()[0] for s in summaries] == ["[capture]", "[reconstruct]", "[edit]", "[export]"]
    assert summaries[1].startswith("[reconstruct] 5/5 steps done in") and summaries[1].endswith("loss=0.2 psnr=15")
    assert summaries[0].startswith("[capture] 4/4 views done in")
    assert len(lines) == 4 + len([e for e in _job_events() if e.type != "progress"])


def test_a_failure_closes_the_open_bar_before_the_error_line():
    out = io.StringIO()
    progress = TerminalProgress(file=out, bars=True)
    progress.on_event(Event("stage", stage="edit", total=10))
    progress.on_event(Event("progress", stage="edit", step=3, total=10, losses={"loss": 0.5}))
    progress.on_event(Event("error", stage="edit", message="CUDA out of memory", hint="lower edit.render_resolution"))
    text = out.getvalue()
    assert progress._bar is None
    assert text.rstrip().endswith("[error] edit: CUDA out of memory (how to fix: lower edit.render_resolution)")
    assert "3/10" in _final_bars(text)[0]


def test_a_resumed_stage_starts_its_bar_where_the_checkpoint_was():
    out = io.StringIO()
    progress = TerminalProgress(file=out, bars=True)
    progress.on_event(Event("progress", stage="reconstruct", step=60, total=100))
    assert progress._bar.n == 60
    progress.close()


def test_losses_put_loss_and_psnr_first():
    assert format_losses({"rgb": 0.5, "psnr": 20.123456, "depth": 1e-5, "loss": 0.25}) == (
        "loss=0.25 psnr=20.12 depth=1e-05 rgb=0.5"
    )


def test_without_tqdm_the_lines_still_come(monkeypatch):
    monkeypatch.setattr(terminal, "_tqdm_class", lambda: None)
    out = io.StringIO()
    progress = TerminalProgress(file=out, bars=True)
    assert not progress.bars
    _run(progress)
    assert "[reconstruct] 5/5 steps done in" in out.getvalue() and "[finished]" in out.getvalue()
