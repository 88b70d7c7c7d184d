"""The 3D edit loop: every method steps the field; a cancelled edit resumes to the same result."""

from __future__ import annotations

import pytest
import torch

from backend.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from backend.edit3d import CHECKPOINT_STEM, edit_field, sample_camera
from backend.editing.registry import build_method
from backend.field.ngp_field import NGPField, NGPFieldConfig, load_field
from backend.progress import JobCancelled, StageReporter
from blender_piva import contract

from .planted import assert_payload_is_live, plant_json, plant_legacy, plant_stray_tensors, plant_tensors_with_record

SMALL_FIELD = NGPFieldConfig(num_levels=4, log2_table_size=10, base_resolution=8, max_resolution=64, hidden_dim=16)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from backend.diffusion.model import DiffusionModel
    from backend.diffusion.tiny import save_tiny_model

    folder = save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    return DiffusionModel.load(str(folder), controlnet=str(folder / "controlnet"), device=torch.device("cpu"), dtype=torch.float32)


def make_spec(tmp_path, method: str, steps: int = 4) -> contract.JobSpec:
    spec = contract.JobSpec(
        job_id="edit", object_name="Cube", source_prompt="a red cube", target_prompt="a blue cube",
        output_dir=str(tmp_path), seed=3,
    )
    spec.edit.method = method
    spec.edit.steps = steps
    spec.edit.render_resolution = 16
    spec.edit.checkpoint_every = 1
    spec.edit.preview_every = 2
    return spec


def original_field() -> NGPField:
    torch.manual_seed(0)
    return NGPField(SMALL_FIELD)


@pytest.mark.parametrize("method", list(contract.METHODS))
def test_every_method_changes_the_field(tmp_path, model, method):
    field = original_field()
    spec = make_spec(tmp_path, method, steps=2)
    edit = build_method(method, model, spec.edit)
    try:
        metrics = edit_field(field, model, edit, spec, tmp_path, device=torch.device("cpu"), reporter=StageReporter.silent("edit"))
    finally:
        edit.close()
    edited = load_field(tmp_path / "field")
    changed = [not torch.equal(a, b) for a, b in zip(edited.state_dict().values(), field.state_dict().values())]
    assert any(changed), f"{method} left the field unchanged"
    assert metrics["edit_steps"] == 2.0


def test_cancelled_edit_resumes_to_the_uninterrupted_result(tmp_path, model):
    device = torch.device("cpu")
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    method = build_method("piva", model, make_spec(straight_dir, "piva").edit)
    try:
        edit_field(original_field(), model, method, make_spec(straight_dir, "piva"), straight_dir, device=device,
                   reporter=StageReporter.silent("edit"))
    finally:
        method.close()

    calls = {"n": 0}

    def cancel_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    method = build_method("piva", model, make_spec(resumed_dir, "piva").edit)
    try:
        with pytest.raises(JobCancelled) as info:
            edit_field(original_field(), model, method, make_spec(resumed_dir, "piva"), resumed_dir, device=device,
                       reporter=StageReporter(stage="edit", cancel_check=cancel_after_two))
    finally:
        method.close()
    assert info.value.step == 2 and not (resumed_dir / "field").exists()
    method = build_method("piva", model, make_spec(resumed_dir, "piva").edit)  # a fresh process would do this
    try:
        edit_field(original_field(), model, method, make_spec(resumed_dir, "piva"), resumed_dir, device=device,
                   reporter=StageReporter.silent("edit"))
    finally:
        method.close()
    a, b = load_field(straight_dir / "field").state_dict(), load_field(resumed_dir / "field").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=f"{key} differs after resume")


def test_edit_cameras_follow_the_capture_distribution():
    capture = contract.CaptureSettings(elevation_deg=(10.0, 60.0), fov_deg=(40.0, 70.0), distance=(3.0, 4.0))
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        cam = sample_camera(capture, 32, g, torch.device("cpu"))
        eye = cam.c2w[:3, 3]
        distance = float(eye.norm())
        elevation = float(torch.rad2deg(torch.asin(eye[2] / eye.norm())))
        assert 3.0 - 1e-4 <= distance <= 4.0 + 1e-4 and 10.0 - 1e-3 <= elevation <= 60.0 + 1e-3
        forward = -cam.c2w[:3, 2]
        torch.testing.assert_close(forward, -eye / eye.norm(), atol=1e-5, rtol=0)  # looks at the origin


# -- checkpoints from someone else: never unpickled ------------------------------------------------


def run_edit(model, out_dir, steps: int = 2, reporter: StageReporter | None = None):
    method = build_method("piva", model, make_spec(out_dir, "piva").edit)
    try:
        return edit_field(original_field(), model, method, make_spec(out_dir, "piva", steps=steps), out_dir,
                          device=torch.device("cpu"), reporter=reporter or StageReporter.silent("edit"))
    finally:
        method.close()


def test_planted_pickles_under_every_old_name_are_ignored_and_never_run(tmp_path, model):
    assert_payload_is_live(tmp_path)
    marker = tmp_path / "PWNED"
    out = tmp_path / "edit"
    plant_legacy(out / "checkpoints", marker)  # edit.pt, reconstruct.pt, base.pt, controlnet.pt
    plant_stray_tensors(out / "checkpoints", marker)  # STEM.safetensors without its JSON: no checkpoint
    events = contract.EventWriter(tmp_path / "events.jsonl")
    run_edit(model, out, reporter=StageReporter(stage="edit", events=events))
    assert not marker.exists() and (out / "field").is_dir()
    logs = [e.message for e in contract.EventReader(tmp_path / "events.jsonl").poll() if e.type == "log"]
    assert any(f"ignoring {out / 'checkpoints' / 'edit.pt'}" in m for m in logs), logs


@pytest.mark.parametrize("plant", [plant_json, plant_tensors_with_record], ids=["json", "safetensors"])
def test_a_pickle_under_the_new_names_is_a_named_error_not_code(tmp_path, model, plant):
    marker = tmp_path / "PWNED"
    planted = plant(tmp_path / "checkpoints", CHECKPOINT_STEM, marker)
    with pytest.raises(CheckpointError) as info:
        run_edit(model, tmp_path)
    assert str(planted) in info.value.what and "restart the edit stage from scratch" in info.value.hint
    assert not marker.exists()


def test_an_edit_checkpoint_of_wrong_shapes_names_the_file(tmp_path, model):
    run_edit(model, tmp_path, steps=1)
    stem = tmp_path / "checkpoints" / CHECKPOINT_STEM
    tensors, state = load_checkpoint(stem, stage="edit")
    adapter = next(k for k in tensors if k.startswith("method.adapters.weights."))
    tensors[adapter] = torch.zeros(1)  # copy_ alone would broadcast this silently
    save_checkpoint(stem, tensors, state)
    with pytest.raises(CheckpointError, match="checkpoint shape") as info:
        run_edit(model, tmp_path, steps=2)
    assert f"{stem}.json" in info.value.what


class Ball(torch.nn.Module):
    """A field whose density is 50 inside a ball of radius 0.5 and 0 outside (a known occupancy)."""

    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])

    def density(self, pts: torch.Tensor) -> torch.Tensor:  # [M, 3] -> [M]
        return torch.where(pts.norm(dim=-1) < 0.5, 50.0, 0.0)


def test_both_edit_grids_start_with_every_occupied_cell_of_the_original():
    """The edited copy IS the original at step 0: both grids hold every cell the ball occupies, and a
    ray through the ball's centre keeps its samples there (a grid filled from a random quarter of
    the cells left most of the surface out)."""
    from backend.edit3d import edit_samplers
    from backend.render.samplers import StratifiedSampler

    ball = Ball()
    source, edited = edit_samplers(ball, torch.device("cpu"), seed=0)
    r = source.resolution
    centres = (torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3).float() + 0.5) / r * 2 - 1
    deep_inside = (centres.norm(dim=-1) < 0.45).reshape(r, r, r)  # cells whose every point is in the ball
    for sampler in (source, edited):
        assert isinstance(sampler, StratifiedSampler)
        assert bool(sampler.binary[deep_inside].all()), f"{int((~sampler.binary[deep_inside]).sum())} occupied cells missed"
        assert sampler.occupancy_fraction() < 0.1  # and the empty space is empty
    assert torch.equal(source.binary, edited.binary) and torch.equal(source.occupancy, edited.occupancy)
    assert edited.warmup_steps == 0  # later updates refresh random cells, as the edit moves the surface


def edit_with(model, spec: contract.JobSpec, out_dir, reporter: StageReporter | None = None) -> dict:
    """Run ``spec``'s edit of the original field into ``out_dir`` with a fresh method (as a new
    process would); return the saved result's state dict."""
    method = build_method(spec.edit.method, model, spec.edit)
    try:
        edit_field(original_field(), model, method, spec, out_dir, device=torch.device("cpu"),
                   reporter=reporter or StageReporter.silent("edit"))
    finally:
        method.close()
    return load_field(out_dir / "field").state_dict()


def test_an_averaged_edit_returns_the_moving_average_of_its_steps_and_resumes_to_it(tmp_path, model):
    decay, steps = 0.5, 4

    def spec_of(out):
        spec = make_spec(out, "dds", steps=steps)
        spec.edit.field_average_decay = decay
        return spec

    # The expected average, from the plain edit's field after each step.
    plain_dir = tmp_path / "plain"
    fields = [edit_with(model, make_spec(plain_dir / str(n), "dds", steps=n), plain_dir / str(n)) for n in range(1, steps + 1)]
    expected = {k: v.clone() for k, v in fields[0].items()}
    for state in fields[1:]:
        for k in expected:
            if expected[k].is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * state[k]

    straight = tmp_path / "averaged"
    averaged = edit_with(model, spec_of(straight), straight)
    for key in expected:
        torch.testing.assert_close(averaged[key], expected[key], rtol=0, atol=1e-6, msg=f"{key} is not the average")
    assert not torch.equal(averaged["encoding.table"], fields[-1]["encoding.table"])  # not the last step's field

    # Cancelled after two steps, resumed in a fresh method: the same average.
    resumed = tmp_path / "resumed"
    calls = {"n": 0}

    def cancel_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(JobCancelled):
        edit_with(model, spec_of(resumed), resumed, reporter=StageReporter(stage="edit", cancel_check=cancel_after_two))
    again = edit_with(model, spec_of(resumed), resumed)
    for key in expected:
        torch.testing.assert_close(again[key], averaged[key], rtol=0, atol=1e-6, msg=f"{key} differs after resume")


def test_held_fine_levels_are_released_at_their_step_and_a_resumed_edit_releases_them_alike(tmp_path, model):
    steps = 4

    def spec_of(out, release):
        spec = make_spec(out, "dds", steps=steps)
        spec.edit.fine_level_release = release
        return spec

    source = original_field()
    coarse = source.encoding.rows_up_to(source.encoding.resolutions.new_tensor(16.0))
    assert coarse.any() and not coarse.all(), "the small field must have levels on both sides of the limit"
    fine_of = lambda state: state["encoding.table"][~coarse]  # noqa: E731

    held = edit_with(model, spec_of(tmp_path / "held", 1.0), tmp_path / "held")
    torch.testing.assert_close(fine_of(held), fine_of(source.state_dict()), rtol=0, atol=0)
    assert not torch.equal(held["encoding.table"][coarse], source.state_dict()["encoding.table"][coarse])

    released = edit_with(model, spec_of(tmp_path / "released", 0.5), tmp_path / "released")
    assert not torch.equal(fine_of(released), fine_of(source.state_dict())), "released levels never moved"

    # Cancelled after two steps (the release step), resumed in a fresh method: the same field.
    calls = {"n": 0}

    def cancel_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    resumed = tmp_path / "resumed"
    with pytest.raises(JobCancelled):
        edit_with(model, spec_of(resumed, 0.5), resumed, reporter=StageReporter(stage="edit", cancel_check=cancel_after_two))
    again = edit_with(model, spec_of(resumed, 0.5), resumed)
    for key in released:
        torch.testing.assert_close(again[key], released[key], rtol=0, atol=1e-6, msg=f"{key} differs after resume")
