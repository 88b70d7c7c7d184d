"""A hub model is used only while Blender's online access is on; toy and local folders never need it."""

from __future__ import annotations

from pathlib import Path

import pytest

from blender_piva.core.network import OFFLINE_MESSAGE, is_hub_id, needs_network, network_refusal

HUB = "stabilityai/stable-diffusion-2-1-base"


def test_toy_and_local_folders_never_need_the_network(tmp_path):
    folder = tmp_path / "my_model"
    folder.mkdir()
    for model in ("toy", str(folder), "", "  "):
        assert not needs_network(model, "")
        assert network_refusal(model, "", online_access=False) is None
    assert not needs_network("toy", str(folder))


@pytest.mark.parametrize("written", ["./missing", "/no/such/model", "~/no/such", "//relative", "C:\\models\\sd", "D:/sd"])
def test_a_path_that_does_not_exist_is_not_a_hub_id(written):
    assert not is_hub_id(written)  # the loader says the folder is missing; nothing is downloaded


def test_a_hub_id_needs_the_network_and_is_refused_offline():
    assert needs_network(HUB, "") and needs_network("toy", "thibaud/controlnet-sd21-depth-diffusers")
    refusal = network_refusal(HUB, "", online_access=False)
    assert refusal is not None and OFFLINE_MESSAGE in refusal and repr(HUB) in refusal
    assert "Blender's online access is off (Preferences > System > Network); choose a local model folder or allow online access" in refusal
    assert network_refusal(HUB, "", online_access=True) is None


def test_the_refusal_names_every_hub_id(tmp_path):
    net = "thibaud/controlnet-sd21-depth-diffusers"
    refusal = network_refusal(HUB, net, online_access=False)
    assert refusal is not None and repr(HUB) in refusal and repr(net) in refusal
    only_net = network_refusal(str(tmp_path), net, online_access=False)
    assert only_net is not None and repr(net) in only_net and "model " not in only_net.split("ControlNet")[0]


def test_an_existing_folder_named_like_a_hub_id_is_local(tmp_path, monkeypatch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("org/model") and Path("org/model").is_dir()
    assert is_hub_id("org/other")


def test_the_backend_is_not_started_for_a_hub_model_while_offline(tmp_path):
    import sys

    from blender_piva import contract
    from blender_piva.core.backend_process import BackendConfig, BackendError, BackendProcess

    spec = contract.JobSpec(
        job_id="job", object_name="Ball", source_prompt="a ball", target_prompt="a cube",
        output_dir=str(tmp_path / "job"), stages=["edit"], device="cpu",
        model=contract.ModelSettings(model=HUB),
    )
    spec.write()
    process = BackendProcess(BackendConfig(python=sys.executable, online_access=False), spec.job_dir)
    with pytest.raises(BackendError, match=r"online access is off \(Preferences > System > Network\)"):
        process.start()
    assert process.process is None and not (spec.job_dir / contract.LOG_FILE).exists()
