"""Checkpoints without pickle: exact round trips, atomic saves, damaged files named with their fix."""

from __future__ import annotations

import json

import pytest
import torch

from backend import checkpoint as ckpt
from backend.checkpoint import (
    CheckpointError,
    check_optimizer_state,
    checkpoint_exists,
    checkpoint_paths,
    load_checkpoint,
    load_state,
    pack_state,
    restoring,
    save_checkpoint,
    save_state,
    unpack_state,
)

from .planted import assert_payload_is_live, plant_json, plant_tensors_with_record, raw_pickle


def trained_adam(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 3)).square().sum().backward()
        opt.step()
    return net, opt


def test_tensors_and_state_round_trip_exactly(tmp_path):
    tensors = {
        "f32": torch.randn(3, 4), "f16": torch.randn(2).half(), "bf16": torch.randn(2).bfloat16(),
        "long": torch.arange(5), "bool": torch.tensor([True, False]), "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    state = {"step": 7, "name": "x", "lrs": [0.1, 0.2], "flag": True, "none": None}
    save_checkpoint(tmp_path / "run", tensors, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.safetensors"]  # no temporary file left
    loaded, loaded_state = load_checkpoint(tmp_path / "run", stage="test")
    assert loaded_state == state and loaded.keys() == tensors.keys()
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key


def test_nested_state_keeps_int_keys_tuples_non_finite_floats_and_colliding_paths():
    base = torch.arange(10.0)
    state = {
        "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "groups": [{"betas": (0.9, 0.99), "params": [0]}]},
        "odd": {"__tensor__": 1, "k": 2}, "nan": float("nan"), "inf": float("-inf"),
        "a.b": torch.ones(1), "a": {"b": torch.zeros(1)},  # both would be tensor "a.b"
        "view": base[2:5], "whole": base,  # share storage: stored as two tensors
    }
    tensors, tree = pack_state(state)
    json.dumps(tree, allow_nan=False)  # plain JSON
    out = unpack_state(json.loads(json.dumps(tree)), tensors)
    assert out["opt"]["state"][0]["step"].item() == 3.0 and out["opt"]["groups"][0]["betas"] == (0.9, 0.99)
    assert out["odd"] == {"__tensor__": 1, "k": 2} and out["nan"] != out["nan"] and out["inf"] == float("-inf")
    assert torch.equal(out["a.b"], torch.ones(1)) and torch.equal(out["a"]["b"], torch.zeros(1))
    assert torch.equal(out["view"], torch.tensor([2.0, 3.0, 4.0])) and torch.equal(out["whole"], base)


def test_pack_refuses_what_json_cannot_hold_naming_the_path():
    with pytest.raises(TypeError, match="at opt.fn"):
        pack_state({"opt": {"fn": print}})


def test_optimizer_state_round_trips_and_keeps_training_identically(tmp_path):
    net, opt = trained_adam()
    save_state(tmp_path / "opt", {"net": net.state_dict(), "opt": opt.state_dict()})
    payload = load_state(tmp_path / "opt", stage="test")
    net2, opt2 = trained_adam(seed=1)  # other weights and moments, overwritten by the load
    net2.load_state_dict(payload["net"])
    opt2.load_state_dict(payload["opt"])
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    x = torch.randn(5, 3)
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        n(x).square().sum().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)


def test_generator_state_round_trips(tmp_path):
    g = torch.Generator().manual_seed(5)
    torch.rand(7, generator=g)
    save_state(tmp_path / "rng", {"generator": g.get_state()})
    restored = torch.Generator().manual_seed(99)
    restored.set_state(load_state(tmp_path / "rng", stage="test")["generator"])
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=restored))


# -- atomicity ---------------------------------------------------------------------------------


def crash_on(monkeypatch, suffix: str) -> None:
    """Make the atomic write of the file ending in ``suffix`` die as a killed process would."""
    real = ckpt.write_bytes_atomic

    def write(path, payload):
        if str(path).endswith(suffix):
            raise KeyboardInterrupt("killed while saving")
        real(path, payload)

    monkeypatch.setattr(ckpt, "write_bytes_atomic", write)


@pytest.mark.parametrize("suffix", [".safetensors", ".json"])
@pytest.mark.parametrize("saves_before", [1, 2])  # the previous tensors in the first slot, in the second
def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch, suffix, saves_before):
    stem = tmp_path / "run"
    for step in range(1, saves_before + 1):
        save_checkpoint(stem, {"w": torch.full((3,), float(step))}, {"step": step})
    crash_on(monkeypatch, suffix)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(stem, {"w": torch.full((3,), 9.0)}, {"step": 9})
    # A worker killed while it saves resumes from the checkpoint before, never from nothing.
    assert checkpoint_exists(stem)
    tensors, state = load_checkpoint(stem, stage="test")
    assert state == {"step": saves_before} and torch.equal(tensors["w"], torch.full((3,), float(saves_before)))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    save_checkpoint(stem, {"w": torch.ones(3)}, {"step": 10})  # the next save works normally
    tensors, state = load_checkpoint(stem, stage="test")
    assert state == {"step": 10} and torch.equal(tensors["w"], torch.ones(3))
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".safetensors")]) == 1  # the other slot is gone


def test_saves_alternate_slots_and_a_json_cannot_point_elsewhere(tmp_path):
    stem = tmp_path / "run"
    save_checkpoint(stem, {"w": torch.zeros(3)}, {"step": 1})
    save_checkpoint(stem, {"w": torch.ones(3)}, {"step": 2})
    json_path, tensors_path = checkpoint_paths(stem)
    assert tensors_path.name == "run.b.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.b.safetensors", "run.json"]
    (tmp_path / "elsewhere.safetensors").write_bytes(tensors_path.read_bytes())
    record = json.loads(json_path.read_text())
    record["tensors_file"] = "../elsewhere.safetensors"
    json_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="not one of"):
        load_checkpoint(stem, stage="test")


def test_old_json_beside_newer_tensors_is_refused_not_mixed(tmp_path):
    """What a reordered write after a power cut (or a second writer) could leave: the SHA-256 catches it."""
    old, new = tmp_path / "old", tmp_path / "new"
    save_checkpoint(old, {"w": torch.zeros(3)}, {"step": 1})
    save_checkpoint(new, {"w": torch.ones(3)}, {"step": 2})
    checkpoint_paths(old)[1].write_bytes(checkpoint_paths(new)[1].read_bytes())
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(old, stage="test")


def test_a_state_that_is_not_json_fails_before_touching_the_previous_checkpoint(tmp_path):
    stem = tmp_path / "run"
    save_checkpoint(stem, {"w": torch.zeros(3)}, {"step": 1})
    with pytest.raises((TypeError, ValueError)):
        save_checkpoint(stem, {"w": torch.ones(3)}, {"step": float("nan")})
    assert load_checkpoint(stem, stage="test")[1] == {"step": 1}


# -- damaged checkpoints -------------------------------------------------------------------------


def damage(stem, how: str, tmp_path) -> str:
    """Damage the checkpoint at ``stem``; return the name of the file the error must name."""
    json_path, tensors_path = checkpoint_paths(stem)
    if how == "empty json":
        json_path.write_bytes(b"")
    elif how == "truncated json":
        json_path.write_bytes(json_path.read_bytes()[:40])
    elif how == "json of something else":
        json_path.write_text(json.dumps({"step": 3}))
    elif how == "pickle as json":
        json_path.write_bytes(raw_pickle(tmp_path / "marker"))
    elif how == "empty tensors":
        tensors_path.write_bytes(b"")
    elif how == "truncated tensors":
        tensors_path.write_bytes(tensors_path.read_bytes()[:-5])
    elif how == "missing tensors":
        tensors_path.unlink()
    elif how == "missing tensor entry":
        record = json.loads(json_path.read_text())
        record["state"]["w"] = {"__tensor__": "nope"}
        json_path.write_text(json.dumps(record))
        return json_path.name
    else:
        raise AssertionError(how)
    return json_path.name if "json" in how else tensors_path.name


@pytest.mark.parametrize(
    "how",
    ["empty json", "truncated json", "json of something else", "pickle as json", "empty tensors", "truncated tensors",
     "missing tensors", "missing tensor entry"],
)
def test_a_damaged_checkpoint_names_the_file_and_the_fix(tmp_path, how):
    stem = tmp_path / "checkpoints" / "run"
    save_state(stem, {"step": 2, "w": torch.ones(4)})
    culprit = damage(stem, how, tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_state(stem, stage="reconstruct")
    message = str(info.value)
    assert culprit in info.value.what, message  # the problem names the damaged file (the hint names both)
    json_path, tensors_path = checkpoint_paths(stem)
    assert info.value.hint == f"delete {json_path} and {tensors_path} to restart the reconstruct stage from scratch"
    assert info.value.hint in message and "cannot resume the reconstruct stage" in info.value.what
    assert not (tmp_path / "marker").exists()


def test_a_pickle_vouched_for_by_a_forged_json_is_refused_by_the_parser(tmp_path):
    assert_payload_is_live(tmp_path)
    marker = tmp_path / "marker"
    plant_tensors_with_record(tmp_path, "run", marker)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_state(tmp_path / "run", stage="edit")
    plant_json(tmp_path, "run", marker)
    with pytest.raises(CheckpointError, match="run.json is not text|run.json is not valid JSON"):
        load_state(tmp_path / "run", stage="edit")
    assert not marker.exists()


def test_applying_a_state_that_does_not_fit_is_a_checkpoint_error(tmp_path):
    stem = tmp_path / "run"
    net, opt = trained_adam()
    with pytest.raises(CheckpointError, match="missing entry 'net'"), restoring(stem, stage="edit"):
        {}["net"]
    wrong = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    with pytest.raises(CheckpointError, match="size mismatch"), restoring(stem, stage="edit"):
        wrong.load_state_dict(net.state_dict())
    # Adam's load does not check the moments' shapes; check_optimizer_state does.
    bad = opt.state_dict()
    bad["state"][0]["exp_avg"] = torch.zeros(7)
    _, fresh = trained_adam()
    fresh.load_state_dict(bad)
    with pytest.raises(CheckpointError, match=r"exp_avg.*shape \(7,\)"), restoring(stem, stage="edit"):
        check_optimizer_state(fresh)
