"""Contract fields of issue 19: the negative prompt, the memory mode and the ``mps`` device."""

from __future__ import annotations

import pytest

from blender_piva import contract
from blender_piva.contract.layout import MEMORY_MODES


def make_spec(tmp_path, **changes) -> contract.JobSpec:
    spec = contract.JobSpec(
        job_id="cube-1", object_name="Cube", source_prompt="a red cube", target_prompt="a blue cube",
        output_dir=str(tmp_path / "job"),
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def test_negative_prompt_and_memory_mode_round_trip(tmp_path):
    spec = make_spec(tmp_path, negative_prompt="blurry, low quality", device="mps")
    spec.model.memory = "low"
    loaded = contract.load_job(spec.write())
    assert loaded == spec
    assert loaded.negative_prompt == "blurry, low quality" and loaded.model.memory == "low" and loaded.device == "mps"


def test_defaults_are_todays_behaviour_and_old_job_files_load(tmp_path):
    spec = make_spec(tmp_path)
    assert spec.negative_prompt == "" and spec.model.memory == "balanced"
    data = spec.to_dict()
    del data["negative_prompt"], data["model"]["memory"]  # a job.json written before these fields
    assert contract.JobSpec.from_dict(data) == spec


def test_owner_fingerprint_changes_only_with_a_negative_prompt(tmp_path):
    plain = make_spec(tmp_path)
    assert "negative_prompt" not in plain.owner_inputs()  # old job folders keep their fingerprint
    assert make_spec(tmp_path, negative_prompt="blurry").owner_inputs()["negative_prompt"] == "blurry"


@pytest.mark.parametrize(
    "change, field, allowed",
    [
        (dict(negative_prompt=3), "negative_prompt", "a string"),
        (dict(negative_prompt="x" * 1001), "negative_prompt", "at most 1000 characters"),
        (dict(device="tpu"), "device", "auto, cpu, cuda, mps"),
    ],
)
def test_bad_values_are_named_with_the_allowed_ones(tmp_path, change, field, allowed):
    with pytest.raises(contract.ContractError) as info:
        make_spec(tmp_path, **change).validate()
    assert info.value.field == field and allowed in str(info.value)


def test_unknown_memory_mode_names_the_modes(tmp_path):
    spec = make_spec(tmp_path)
    spec.model.memory = "tiny"
    with pytest.raises(contract.ContractError, match="model.memory.*fast, balanced, low"):
        spec.validate()


def test_the_modes_and_devices_are_the_documented_ones():
    assert MEMORY_MODES == ("fast", "balanced", "low")
    assert "mps" in contract.DEVICES and contract.DEVICES[0] == "auto"
