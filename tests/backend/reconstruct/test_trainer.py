import pytest
import torch

from backend.checkpoint import CheckpointError, checkpoint_paths, load_checkpoint, save_checkpoint
from backend.data.capture_dataset import load_capture
from backend.data.synthetic_capture import write_sphere_capture
from backend.field.ngp_field import NGPFieldConfig, load_field
from backend.progress import JobCancelled, StageReporter
from backend.reconstruct.trainer import CHECKPOINT_NAME, CHECKPOINT_STEM, TrainerConfig, fit_field
from blender_piva import contract

from ..planted import assert_payload_is_live, plant_json, plant_legacy, plant_stray_tensors, plant_tensors_with_record

TINY = TrainerConfig(
    field=NGPFieldConfig(num_levels=4, log2_table_size=10, max_resolution=64, hidden_dim=16),
    occupancy_resolution=8,
    warmup_steps=2,
    eval_views=1,
    preview_size=8,
)
CPU = torch.device("cpu")


def settings(**kw) -> contract.ReconstructSettings:
    base = dict(steps=6, rays_per_batch=64, samples_per_ray=12, checkpoint_every=4, preview_every=3)
    base.update(kw)
    return contract.ReconstructSettings(**base)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("capture")
    write_sphere_capture(root, num_train=4, num_eval=1, resolution=12)
    return load_capture(root)


class StopAt(StageReporter):
    """Reporter whose cancel check fires once ``progress`` reported ``stop_step``."""

    def __init__(self, stop_step: int) -> None:
        super().__init__(stage="reconstruct")
        self.stop_step = stop_step
        self.seen = 0

    def progress(self, step, total, losses=None):
        self.seen = step

    def should_stop(self) -> bool:
        return self.seen >= self.stop_step


def test_fit_writes_field_checkpoint_previews_and_metrics(dataset, tmp_path):
    events = contract.EventWriter(tmp_path / "events.jsonl")
    reporter = StageReporter(stage="reconstruct", events=events, preview_dir=tmp_path / "previews")
    metrics = fit_field(dataset, settings(), tmp_path, device=CPU, seed=0, reporter=reporter, config=TINY)
    assert set(metrics) >= {"heldout_psnr_db", "depth_error_rel", "fit_seconds"}
    assert 5.0 < metrics["heldout_psnr_db"] < 60.0 and metrics["depth_error_rel"] >= 0.0
    field = load_field(tmp_path / "field", CPU)
    assert field.config.num_levels == 4
    assert (tmp_path / "checkpoints" / CHECKPOINT_NAME).is_file()
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["reconstruct_000003.png", "reconstruct_000006.png"]
    kinds = [contract.Event.from_json(line).type for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert kinds.count("progress") == 6 and kinds.count("preview") == 2 and kinds[0] == "stage"


@pytest.mark.parametrize("skip", [True, False], ids=["skip_settled", "every_update"])
def test_cancel_then_resume_equals_uninterrupted(dataset, tmp_path, skip):
    # Without skipping, the grid's own generator must come back from the checkpoint too.
    import dataclasses

    config = dataclasses.replace(TINY, skip_settled_occupancy=skip)
    s = settings(steps=7, checkpoint_every=3)
    full_dir, split_dir = tmp_path / "full", tmp_path / "split"
    fit_field(dataset, s, full_dir, device=CPU, seed=3, reporter=StageReporter.silent("reconstruct"), config=config)
    # Cancel after step 5 (not a checkpoint multiple): the trainer checkpoints and raises.
    with pytest.raises(JobCancelled) as info:
        fit_field(dataset, s, split_dir, device=CPU, seed=3, reporter=StopAt(5), config=config)
    assert info.value.step == 5
    fit_field(dataset, s, split_dir, device=CPU, seed=3, reporter=StageReporter.silent("reconstruct"), config=config)
    a = load_field(full_dir / "field", CPU).state_dict()
    b = load_field(split_dir / "field", CPU).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # A different seed gives a different field (the comparison above can fail).
    other = tmp_path / "other"
    fit_field(dataset, s, other, device=CPU, seed=4, reporter=StageReporter.silent("reconstruct"), config=config)
    c = load_field(other / "field", CPU).state_dict()
    assert not torch.equal(a["encoding.table"], c["encoding.table"])


def test_resume_refuses_a_checkpoint_of_other_settings(dataset, tmp_path):
    with pytest.raises(JobCancelled):
        fit_field(dataset, settings(), tmp_path, device=CPU, seed=0, reporter=StopAt(1), config=TINY)
    with pytest.raises(RuntimeError, match="other settings"):
        fit_field(dataset, settings(rays_per_batch=32), tmp_path, device=CPU, seed=0, reporter=StageReporter.silent("reconstruct"), config=TINY)


# -- checkpoints from someone else: never unpickled ------------------------------------------------

def silent() -> StageReporter:
    return StageReporter.silent("reconstruct")



def test_planted_pickles_under_every_old_name_are_ignored_and_never_run(dataset, tmp_path):
    assert_payload_is_live(tmp_path)
    marker = tmp_path / "PWNED"
    fit_dir = tmp_path / "planted"
    legacy = plant_legacy(fit_dir / "checkpoints", marker)  # reconstruct.pt, edit.pt, base.pt, controlnet.pt
    plant_stray_tensors(fit_dir / "checkpoints", marker)  # STEM.safetensors without its JSON: no checkpoint
    events = contract.EventWriter(tmp_path / "events.jsonl")
    reporter = StageReporter(stage="reconstruct", events=events)
    fit_field(dataset, settings(), fit_dir, device=CPU, seed=0, reporter=reporter, config=TINY)
    assert not marker.exists()
    logs = [e.message for e in contract.EventReader(tmp_path / "events.jsonl").poll() if e.type == "log"]
    assert any(f"ignoring {legacy[0]}" in m for m in logs), logs
    # The fit started from scratch: the same field as a fit in a clean folder.
    fit_field(dataset, settings(), tmp_path / "clean", device=CPU, seed=0, reporter=silent(), config=TINY)
    a, b = load_field(fit_dir / "field", CPU).state_dict(), load_field(tmp_path / "clean" / "field", CPU).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("plant", [plant_json, plant_tensors_with_record], ids=["json", "safetensors"])
def test_a_pickle_under_the_new_names_is_a_named_error_not_code(dataset, tmp_path, plant):
    marker = tmp_path / "PWNED"
    planted = plant(tmp_path / "checkpoints", CHECKPOINT_STEM, marker)
    with pytest.raises(CheckpointError) as info:
        fit_field(dataset, settings(), tmp_path, device=CPU, seed=0, reporter=silent(), config=TINY)
    assert str(planted) in info.value.what and "restart the reconstruct stage from scratch" in info.value.hint
    assert not marker.exists()


def test_a_truncated_checkpoint_or_one_of_wrong_shapes_names_the_file(dataset, tmp_path):
    with pytest.raises(JobCancelled):
        fit_field(dataset, settings(), tmp_path, device=CPU, seed=0, reporter=StopAt(1), config=TINY)
    stem = tmp_path / "checkpoints" / CHECKPOINT_STEM
    json_path, tensors_path = checkpoint_paths(stem)
    tensors, state = load_checkpoint(stem, stage="reconstruct")
    good = tensors_path.read_bytes()
    tensors_path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError) as info:
        fit_field(dataset, settings(), tmp_path, device=CPU, seed=0, reporter=silent(), config=TINY)
    assert str(tensors_path) in info.value.what and f"delete {json_path}" in info.value.hint
    tensors["field.encoding.table"] = torch.zeros(3)
    save_checkpoint(stem, tensors, state)
    with pytest.raises(CheckpointError, match="size mismatch"):
        fit_field(dataset, settings(), tmp_path, device=CPU, seed=0, reporter=silent(), config=TINY)


def test_fast_paths_fit_the_same_field_as_the_reference_paths(dataset, tmp_path):
    # TrainerConfig.fast_paths swaps in the fast twins (hash-grid lookup, front-to-back pruning):
    # same batches, same samples, same field up to float rounding.
    import dataclasses

    s = settings(steps=5)
    fields = []
    for fast in (False, True):
        out = tmp_path / f"fast_{fast}"
        config = dataclasses.replace(TINY, fast_paths=fast)
        fit_field(dataset, s, out, device=CPU, seed=1, reporter=StageReporter.silent("reconstruct"), config=config)
        fields.append(load_field(out / "field", CPU).state_dict())
    for k in fields[0]:
        torch.testing.assert_close(fields[1][k], fields[0][k], rtol=1e-4, atol=1e-5, msg=k)


def test_the_fit_updates_its_occupancy_grid_on_the_configured_schedule(dataset, tmp_path, monkeypatch):
    from backend.render.samplers import StratifiedSampler

    refreshed = []  # (step, cells evaluated) of each update that evaluated any
    real_update = StratifiedSampler.update

    def counting(self, step, density_fn, generator=None):
        calls = []

        def counted(x):
            calls.append(x.shape[0])
            return density_fn(x)

        real_update(self, step, counted, generator)
        if calls:
            refreshed.append((step, sum(calls)))

    monkeypatch.setattr(StratifiedSampler, "update", counting)
    config = TrainerConfig(**{**TINY.__dict__, "occupancy_warmup_steps": 3, "occupancy_update_every": 2,
                              "skip_settled_occupancy": False})
    fit_field(dataset, settings(steps=7), tmp_path / "fit", device=CPU, seed=0,
              reporter=StageReporter.silent("reconstruct"), config=config)
    assert [step for step, _ in refreshed] == [0, 2, 4, 6]
    cells = 8**3
    assert [n for _, n in refreshed][:2] == [cells, cells]  # warm-up: every cell
    assert all(n < cells for _, n in refreshed[2:])  # then a quarter and a quarter of the occupied


def test_skipping_the_settled_grid_updates_leaves_the_fit_exactly_as_it_is(dataset, tmp_path, monkeypatch):
    # Once Sampler.settled_within says the remaining updates cannot empty a cell, the fit skips
    # them; the grid draws from its own generator, so the batches, samples and field are the same.
    import dataclasses

    from backend.render.samplers import StratifiedSampler

    evaluated = []  # steps of the updates that ran
    real_update = StratifiedSampler.update

    def counting(self, step, density_fn, generator=None):
        evaluated.append(step)
        real_update(self, step, density_fn, generator)

    monkeypatch.setattr(StratifiedSampler, "update", counting)
    fields, runs = [], []
    for skip in (False, True):
        evaluated.clear()
        out = tmp_path / f"skip_{skip}"
        config = dataclasses.replace(TINY, occupancy_warmup_steps=2, occupancy_update_every=2, skip_settled_occupancy=skip)
        fit_field(dataset, settings(steps=16), out, device=CPU, seed=3, reporter=StageReporter.silent("reconstruct"), config=config)
        fields.append(load_field(out / "field", CPU).state_dict())
        runs.append(list(evaluated))
    assert runs[0] == list(range(0, 16, 2))
    assert 0 < len(runs[1]) < len(runs[0]), runs  # some updates skipped, the first ones not
    for k in fields[0]:
        assert torch.equal(fields[1][k], fields[0][k]), k


def test_the_first_steps_draw_the_start_batch_and_a_resume_across_it_is_the_same_fit(dataset, tmp_path, monkeypatch):
    import dataclasses

    from backend.render.samplers import StratifiedSampler

    drawn = []  # rays of each training batch (the held-out renders sample without stratification)
    real_sample = StratifiedSampler.sample

    def counting(self, rays_o, rays_d, **kw):
        if kw.get("stratified"):
            drawn.append(rays_o.shape[0])
        return real_sample(self, rays_o, rays_d, **kw)

    monkeypatch.setattr(StratifiedSampler, "sample", counting)
    config = dataclasses.replace(TINY, start_steps=3, start_rays_per_batch=16)
    s = settings(steps=30, checkpoint_every=30, preview_every=30)
    fit_field(dataset, s, tmp_path / "full", device=CPU, seed=2, reporter=StageReporter.silent("reconstruct"), config=config)
    assert drawn == [16] * 3 + [64] * 27
    # At most a tenth of the fit: 20 steps draw 2 small batches.
    drawn.clear()
    fit_field(dataset, settings(steps=20), tmp_path / "short", device=CPU, seed=2,
              reporter=StageReporter.silent("reconstruct"), config=config)
    assert drawn == [16] * 2 + [64] * 18
    # Never more than the job's batch: a start batch above it draws the job's.
    drawn.clear()
    fit_field(dataset, settings(steps=30, rays_per_batch=8), tmp_path / "small", device=CPU, seed=2,
              reporter=StageReporter.silent("reconstruct"), config=config)
    assert drawn == [8] * 30
    # Cancelled inside the start phase and resumed: the same field as the unbroken fit.
    with pytest.raises(JobCancelled):
        fit_field(dataset, s, tmp_path / "split", device=CPU, seed=2, reporter=StopAt(2), config=config)
    fit_field(dataset, s, tmp_path / "split", device=CPU, seed=2, reporter=StageReporter.silent("reconstruct"), config=config)
    a = load_field(tmp_path / "full" / "field", CPU).state_dict()
    b = load_field(tmp_path / "split" / "field", CPU).state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
