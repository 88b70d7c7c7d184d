"""The job contract: round trips, validation messages, atomic writes, events, cancel, manifest."""

from __future__ import annotations

import json
import os
import sys
import subprocess

import pytest

from blender_piva import contract


def make_spec(tmp_path, **changes) -> contract.JobSpec:
    spec = contract.JobSpec(
        job_id="cube-1",
        object_name="Cube",
        source_prompt="a red cube",
        target_prompt="a blue cube",
        output_dir=str(tmp_path / "job"),
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def test_contract_imports_without_bpy_or_torch():
    code = "import sys; import blender_piva.contract; print('bpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_spec_round_trip(tmp_path):
    spec = make_spec(tmp_path)
    spec.edit.method_params = {"t_max": 0.9}
    spec.capture.fov_deg = (45.0, 60.0)
    path = spec.write()
    assert path == tmp_path / "job" / contract.JOB_FILE
    loaded = contract.load_job(path)
    assert loaded == spec
    assert loaded.capture.fov_deg == (45.0, 60.0)


@pytest.mark.parametrize(
    "mutate, field, allowed",
    [
        (lambda d: d["edit"].update(method="magic"), "edit.method", "sds, dds, pds, ssd, piva"),
        (lambda d: d.update(source_prompt="   "), "source_prompt", "non-empty text"),
        (lambda d: d.update(target_prompt=""), "target_prompt", "non-empty text"),
        (lambda d: d.update(device="tpu"), "device", "auto, cpu, cuda"),
        (lambda d: d["capture"].update(resolution=3), "capture.resolution", "integers 8..4096"),
        (lambda d: d["capture"].update(fov_deg=[70, 40]), "capture.fov_deg", "min <= max"),
        (lambda d: d["capture"].update(samples="many"), "capture.samples", "integers"),
        (lambda d: d.update(stages=["export", "edit"]), "stages", "reconstruct, edit, export"),
        (lambda d: d.update(output_dir="relative/dir"), "output_dir", "absolute"),
        (lambda d: d.update(job_id="../escape"), "job_id", "letters, digits"),
        (lambda d: d.update(colour="red"), "colour", "source_prompt"),
        (lambda d: d["model"].update(precision="fp8"), "model.precision", "fp32"),
        (lambda d: d.update(contract=99), "contract", "1"),
        (lambda d: d["edit"].update(method_params={"x": float("nan")}), "edit.method_params.x", "finite"),
        (lambda d: d["edit"].update(field_mlp_learning_rate=-1e-3), "edit.field_mlp_learning_rate", "numbers in [0.0, 10.0]"),
        (lambda d: d["edit"].update(fine_level_limit="fine"), "edit.fine_level_limit", "numbers in [0.0, 1000.0]"),
        (lambda d: d["edit"].update(fine_level_release=1.5), "edit.fine_level_release", "numbers in [0.0, 1.0]"),
    ],
)
def test_bad_spec_names_the_field_and_the_allowed_values(tmp_path, mutate, field, allowed):
    data = make_spec(tmp_path).to_dict()
    mutate(data)
    with pytest.raises(contract.ContractError) as info:
        contract.JobSpec.from_dict(data)
    assert info.value.field == field
    assert allowed in str(info.value)


def test_malformed_job_file_reports_line_and_column(tmp_path):
    path = tmp_path / "job.json"
    path.write_text('{"job_id": "x",\n "oops"}')
    with pytest.raises(contract.ContractError, match=r"line 2 column 8"):
        contract.load_job(path)
    with pytest.raises(contract.ContractError, match="does not exist"):
        contract.load_job(tmp_path / "missing.json")


def test_missing_required_field_is_named(tmp_path):
    data = make_spec(tmp_path).to_dict()
    del data["target_prompt"]
    with pytest.raises(contract.ContractError) as info:
        contract.JobSpec.from_dict(data)
    assert info.value.field == "target_prompt" and "missing" in str(info.value)


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    target = tmp_path / "data.json"
    contract.write_json_atomic(target, {"a": 1})
    with pytest.raises(ValueError):
        contract.write_json_atomic(target, {"a": float("nan")})  # allow_nan=False raises before writing
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]  # no temporary left behind


def test_events_round_trip_and_partial_lines(tmp_path):
    path = tmp_path / contract.EVENTS_FILE
    writer = contract.EventWriter(path)
    reader = contract.EventReader(path)
    assert reader.poll() == []
    writer.emit("stage", stage="reconstruct", total=10)
    writer.emit("progress", stage="reconstruct", step=3, total=10, losses={"rgb": 0.5})
    with open(path, "a") as fh:  # a writer caught mid-line
        fh.write('{"type": "log", "mess')
    events = reader.poll()
    assert [e.type for e in events] == ["stage", "progress"]
    assert events[1].losses == {"rgb": 0.5} and events[1].step == 3
    with open(path, "a") as fh:
        fh.write('age": "hello", "contract": 1}\n')
    (event,) = reader.poll()
    assert event.type == "log" and event.message == "hello"


def test_a_reader_from_the_end_follows_only_what_is_appended(tmp_path):
    path = tmp_path / contract.EVENTS_FILE
    assert contract.EventReader.from_end(path).poll() == []  # no file yet: reads from its start
    writer = contract.EventWriter(path)
    writer.emit("log", message="an earlier run")
    reader = contract.EventReader.from_end(path)
    writer.emit("log", message="this run")
    assert [e.message for e in reader.poll()] == ["this run"]


def test_bad_events_are_refused(tmp_path):
    with pytest.raises(contract.ContractError, match="event.type"):
        contract.Event.from_json('{"type": "explode", "contract": 1}')
    with pytest.raises(contract.ContractError, match="needs a message"):
        contract.EventWriter(tmp_path / "e.jsonl").emit("error")
    with pytest.raises(contract.ContractError, match="event.stage"):
        contract.Event.from_json('{"type": "stage", "stage": "dance", "contract": 1}')


def test_cancel_request_cycle(tmp_path):
    assert not contract.cancel_requested(tmp_path)
    path = contract.request_cancel(tmp_path, "user")
    assert contract.cancel_requested(tmp_path)
    assert json.loads(path.read_text())["reason"] == "user"
    contract.clear_cancel(tmp_path)
    contract.clear_cancel(tmp_path)  # idempotent
    assert not contract.cancel_requested(tmp_path)


def test_manifest_checks_its_files(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "mesh.glb").write_bytes(b"glTF")
    manifest = contract.ResultsManifest(job_id="j", files={"mesh": "mesh.glb"}, metrics={"psnr": 31.0})
    manifest.write(results)
    assert contract.load_manifest(results).metrics == {"psnr": 31.0}
    os.remove(results / "mesh.glb")
    with pytest.raises(contract.ContractError, match="mesh.glb' is missing"):
        contract.load_manifest(results)
    with pytest.raises(contract.ContractError, match="relative file name"):
        contract.ResultsManifest(job_id="j", files={"mesh": "../x.glb"}).validate()
