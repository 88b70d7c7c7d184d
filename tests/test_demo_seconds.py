"""The main job's per-stage seconds (``cli.print_stage_seconds``), from a job's events."""

from __future__ import annotations

from blender_piva import contract
from blender_piva.cli import print_stage_seconds


def test_stage_seconds_come_from_this_runs_events(tmp_path, capsys):
    path = tmp_path / contract.EVENTS_FILE
    old = contract.Event("stage", stage="edit", time=50.0)  # an earlier run's: not counted
    events = [contract.Event("log", message="start", time=101.0), contract.Event("stage", stage="reconstruct", time=102.0),
              contract.Event("stage", stage="edit", time=110.0), contract.Event("stage", stage="export", time=130.0),
              contract.Event("finished", time=134.0)]
    writer = contract.EventWriter(path)
    for event in [old, *events]:
        writer.emit(event.type, stage=event.stage, message=event.message)
    lines = path.read_text().splitlines()
    import json

    with path.open("w") as f:  # the writer stamps the time now: put the test's times back
        for line, event in zip(lines, [old, *events]):
            f.write(json.dumps({**json.loads(line), "time": event.time}) + "\n")
    print_stage_seconds(tmp_path, started=100.0, edited=135.0, ended=140.0)
    figures = dict(line.split(": ") for line in capsys.readouterr().out.splitlines())
    assert figures == {
        "demo_seconds_scene_and_capture": "1.0", "demo_seconds_reconstruct": "8.0", "demo_seconds_edit": "20.0",
        "demo_seconds_export": "4.0", "demo_seconds_import": "1.0", "demo_seconds_judge": "5.0",
        "demo_seconds_total": "40.0",
    }
