"""Prompt variants, batches and the cache, through the add-on code with real backend subprocesses
and a tiny diffusion model: what must be shared is shared, what fails is reported and skipped,
what is interrupted resumes, and the user's scene is never touched by a job that did not finish."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from blender_piva import contract  # noqa: E402
from blender_piva.core import cache, png16  # noqa: E402
from blender_piva.core import queue as batch_queue  # noqa: E402
from blender_piva.core.backend_process import BackendConfig  # noqa: E402
from blender_piva.scene.queue_runner import CONTACT_SHEET_FILE  # noqa: E402
from blender_piva.scene.queue_runner import QueueRunner, batch_objects, batch_queue as make_batch, variants_queue  # noqa: E402
from blender_piva.core.request import EditFailed, EditRequest  # noqa: E402
from blender_piva.scene.edit_job import EditJob  # noqa: E402

from ...tiny_settings import TEST_OVERRIDES  # noqa: E402
from ..scene_state import diff, fingerprint  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
BACKEND = BackendConfig(python=sys.executable, backend_root=str(ROOT))


@pytest.fixture(scope="module")
def job_root(tmp_path_factory) -> Path:
    """One job root for the module: tests on the same red cube share its cached capture and fit."""
    return tmp_path_factory.mktemp("jobs")


def template(job_root: Path, tiny_model: Path, **changes) -> EditRequest:
    request = EditRequest(
        object_name="Cube",
        source_prompt="a red cube",
        target_prompt="a blue cube",
        method="dds",
        preset="test",
        job_root=str(job_root),
        model=contract.ModelSettings(model=str(tiny_model)),
        device="cpu",
        overrides=TEST_OVERRIDES,
    )
    for key, value in changes.items():
        setattr(request, key, value)
    return request


def add(color: str, shape: str, name: str, x: float = 0.0):
    import toy_world

    obj = toy_world.add_object(color, shape, name=name)
    obj.location.x = x
    bpy.context.view_layer.update()
    return obj


def cache_contents(job_root: Path) -> dict[str, list[str]]:
    root = job_root / cache.CACHE_DIR
    return {entry.name: sorted(p.name for p in entry.iterdir() if p.is_dir()) for entry in root.iterdir()}


@pytest.mark.slow  # ~35 s; in CI: tests/test_end_to_end.py (variants through the CLI share one capture and fit)
def test_three_variants_share_one_capture_and_one_fit(fresh_bpy, tmp_path, tiny_model):
    source = add("red", "cube", "Cube")
    before = {k: v for k, v in fingerprint()["objects"].items() if k == "Cube"}
    root = tmp_path / "jobs"
    queue = variants_queue(template(root, tiny_model), ["a blue cube", "a green cube"], [0, 7], str(root))
    queue.items = queue.items[:3]  # three variants: blue/0, blue/7, green/0
    queue.save()
    events: list[contract.Event] = []
    QueueRunner(queue, BACKEND).run_sync(on_event=events.append)

    assert [i.status for i in queue.items] == ["done"] * 3, [(i.message, i.hint) for i in queue.items]
    results = [bpy.data.objects[i.result_object] for i in queue.items]
    assert {r.users_collection[0].name for r in results} == {"PIVA Cube"}
    labels = sorted(r.name for r in results)
    assert labels == ["a blue cube (seed 0)", "a blue cube (seed 7)", "a green cube (seed 0)"]
    # Side by side: one row along +X, no two results in the same place, none on the source.
    xs = sorted(round(r.matrix_world.translation.x, 4) for r in results)
    assert len(set(xs)) == 3 and xs[0] > source.matrix_world.translation.x
    # One capture and one fit: a single cache entry with one reconstruction; the first item
    # captured and fitted, the other two reused both.
    assert list(cache_contents(root).values()) == [["capture", next(iter(cache_contents(root).values()))[1]]]
    assert [i.cache_hit for i in queue.items] == [
        {"capture": False, "reconstruction": False},
        {"capture": True, "reconstruction": True},
        {"capture": True, "reconstruction": True},
    ]
    fits = [e for e in events if e.type == "stage" and e.stage == "reconstruct"]
    reused = [e for e in events if e.type == "log" and "reusing the fitted field" in e.message]
    assert len(fits) == 1 and len(reused) == 2  # one fit; the other two jobs reuse it
    assert not any((Path(i.job_dir) / "capture").exists() for i in queue.items)
    assert {k: v for k, v in fingerprint()["objects"].items() if k == "Cube"} == before
    log = batch_queue.read_log(queue.log_path)
    assert [e["event"] for e in log] == ["started", "done"] * 3
    # The contact sheet: the source and the three variants from the test preset's 2 held-out cameras.
    assert png16.read_png(queue.folder / CONTACT_SHEET_FILE).shape[:2] == (4 * 128, 220 + 2 * 128)


def test_batch_reports_the_invalid_object_and_moves_on(fresh_bpy, job_root, tiny_model):
    add("red", "cube", "Cube")
    flat = bpy.data.objects.new("Flat", bpy.data.meshes.new("Flat"))  # a mesh with no faces
    bpy.context.scene.collection.objects.link(flat)
    add("green", "sphere", "Ball", x=3.0)  # in the scene, not in the collection: not in the batch
    assets = bpy.data.collections.new("Assets")
    bpy.context.scene.collection.children.link(assets)
    for name in ("Flat", "Cube"):
        assets.objects.link(bpy.data.objects[name])
    names = batch_objects("COLLECTION", assets)
    assert names == ["Cube", "Flat"]
    # The invalid object first: the batch goes on to the next one.
    names = ["Flat", "Cube"]
    queue = make_batch(template(job_root, tiny_model, source_prompt="a {name}", target_prompt="a golden {name}"),
                       names, str(job_root))
    assert [i.target_prompt for i in queue.items] == ["a golden flat", "a golden cube"]
    QueueRunner(queue, BACKEND).run_sync()

    assert [i.status for i in queue.items] == ["failed", "done"]
    failed = queue.items[0]
    assert "has no faces" in failed.message
    assert {o.name for o in bpy.data.objects if o.get("piva_job_id")} == {queue.items[1].result_object}
    log = batch_queue.read_log(queue.log_path)
    assert [(e["object"], e["event"]) for e in log] == [
        ("Flat", "started"), ("Flat", "failed"), ("Cube", "started"), ("Cube", "done")
    ]
    assert "has no faces" in log[1]["message"]
    saved = batch_queue.load_queue(queue.path)
    assert saved.finished and saved.counts()["failed"] == 1


def _result_vertices(obj) -> np.ndarray:
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def test_cancelled_variant_leaves_the_scene_unchanged_and_resumes_after_a_restart(fresh_bpy, job_root, tiny_model, tmp_path):
    add("red", "cube", "Cube")
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    before = fingerprint()
    request = template(job_root, tiny_model, overrides={**TEST_OVERRIDES, "edit": {"steps": 6, "checkpoint_every": 2}})
    queue = variants_queue(request, ["a blue cube"], [3], str(job_root))

    edit_steps = []

    def cancel_mid_edit() -> bool:
        return len(edit_steps) >= 3

    def on_event(event: contract.Event) -> None:
        if event.type == "progress" and event.stage == "edit":
            edit_steps.append(event.step)

    QueueRunner(queue, BACKEND).run_sync(on_event=on_event, should_cancel=cancel_mid_edit)
    item = queue.items[0]
    assert item.status == "cancelled" and "resume" in item.hint
    assert fingerprint() == before, diff(before, fingerprint())
    assert (Path(item.job_dir) / "edit" / contract.CHECKPOINT_DIR).is_dir()
    assert not (Path(item.job_dir) / "results" / "manifest.json").exists()

    # "Restart Blender": a fresh session opens the saved file and resumes the queue from disk.
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    resumed = batch_queue.load_queue(queue.path)
    assert resumed.prepare_resume() == 1
    events: list[contract.Event] = []
    QueueRunner(resumed, BACKEND).run_sync(on_event=events.append)
    assert resumed.items[0].status == "done"
    assert any(e.type == "log" and "resuming" in e.message.lower() for e in events)
    resumed_vertices = _result_vertices(bpy.data.objects[resumed.items[0].result_object])

    # The same edit without interruption ends in the same mesh.
    straight = EditJob(
        EditRequest(**{**request.__dict__, "target_prompt": "a blue cube", "seed": 3, "job_dir": str(tmp_path / "straight")}),
        BACKEND,
    )
    obj = straight.run_sync()
    np.testing.assert_allclose(_result_vertices(obj), resumed_vertices, atol=1e-5)


def test_backend_killed_mid_edit_leaves_the_scene_unchanged_and_the_job_resumes(fresh_bpy, job_root, tiny_model):
    add("red", "cube", "Cube")
    before = fingerprint()
    request = template(job_root, tiny_model, overrides={**TEST_OVERRIDES, "edit": {"steps": 6, "checkpoint_every": 2}})
    job = EditJob(request, BACKEND)
    job.prepare()
    job.capture()
    process = job.start_backend()
    killed = []

    def kill_in_the_edit(event: contract.Event) -> None:
        if event.type == "progress" and event.stage == "edit" and event.step >= 3 and not killed:
            process.kill()  # SIGKILL to the process group: no checkpoint, no goodbye
            killed.append(event.step)

    outcome = job.wait_backend(on_event=kill_in_the_edit)
    assert killed and outcome.status == "error"
    with pytest.raises(EditFailed, match="crashed or was killed") as info:
        job.check_outcome(outcome)
    assert "backend.log" in info.value.hint
    assert fingerprint() == before, diff(before, fingerprint())
    resumed = EditJob(EditRequest(**{**request.__dict__, "job_dir": str(job.spec.job_dir)}), BACKEND)
    assert resumed.run_sync() is not None
    events = [json.loads(line) for line in (job.spec.job_dir / contract.EVENTS_FILE).read_text().splitlines()]
    assert any(e["type"] == "log" and "resuming" in e.get("message", "").lower() for e in events)


def test_second_job_on_an_unchanged_object_hits_the_cache_and_a_changed_mesh_misses(fresh_bpy, job_root, tiny_model):
    cube = add("red", "cube", "Cube")
    stages = {"stages": ["reconstruct"]}
    first = EditJob(template(job_root, tiny_model, **stages), BACKEND)
    first.run_sync()
    assert first.spec.capture_path.parent.parent == job_root / cache.CACHE_DIR

    cube.location = (5.0, -2.0, 1.0)  # moving the object does not change what the capture sees
    bpy.context.view_layer.update()
    again = EditJob(template(job_root, tiny_model, target_prompt="a yellow cube", **stages), BACKEND)
    again.run_sync()
    assert again.cache_hit == {"capture": True, "reconstruction": True}
    assert again.spec.capture_path == first.spec.capture_path

    cube.data.vertices[0].co.z += 0.3  # an edited mesh is a different object to capture
    cube.data.update()
    bpy.context.view_layer.update()
    changed = EditJob(template(job_root, tiny_model, **stages), BACKEND)
    changed.prepare()
    assert changed.cache_hit == {"capture": False, "reconstruction": False}
    assert changed.spec.capture_path != first.spec.capture_path

    no_cache = EditJob(template(job_root, tiny_model, use_cache=False, **stages), BACKEND)
    no_cache.prepare()
    assert no_cache.spec.capture_path == no_cache.spec.job_dir / "capture"


def test_a_missing_model_fails_the_item_with_a_fix_and_leaves_the_scene_alone(fresh_bpy, job_root, tiny_model, tmp_path):
    add("red", "cube", "Cube")
    before = fingerprint()
    request = template(job_root, tiny_model, model=contract.ModelSettings(model=str(tmp_path / "no_such_model")))
    queue = variants_queue(request, ["a blue cube"], [0], str(job_root))
    QueueRunner(queue, BACKEND).run_sync()
    item = queue.items[0]
    assert item.status == "failed"
    assert "no_such_model" in item.message and "model id or folder" in item.hint
    assert fingerprint() == before, diff(before, fingerprint())


@pytest.mark.slow  # a Blender capture, two batches and a Ray cluster's start: ~2 min (the backend-level Ray tests run in CI)
@pytest.mark.parametrize("executor", ["ray"])
def test_a_batch_on_ray_matches_the_worker_and_keeps_the_queue_log(fresh_bpy, job_root, tiny_model, executor):
    pytest.importorskip("ray", reason="Ray is the backend's optional extra (requirements-ray.txt)")
    add("red", "cube", "Cube")
    add("green", "sphere", "Ball", x=3.0)
    results = {}
    for name in ("worker", executor):
        queue = make_batch(template(job_root, tiny_model, source_prompt="a {name}", target_prompt="a golden {name}"),
                           ["Ball", "Cube"], str(job_root))
        runner = QueueRunner(queue, BACKEND, executor=name)
        runner.run_sync()
        assert [i.status for i in queue.items] == ["done", "done"], [(i.message, i.hint) for i in queue.items]
        log = batch_queue.read_log(queue.log_path)
        assert sorted((e["object"], e["event"]) for e in log) == [
            ("Ball", "done"), ("Ball", "started"), ("Cube", "done"), ("Cube", "started")
        ]
        assert batch_queue.load_queue(queue.path).finished
        results[name] = [_result_vertices(bpy.data.objects[i.result_object]) for i in queue.items]
    if executor == "ray":
        assert "2 of 2 jobs finished" in (queue.folder / "dispatch.log").read_text()
    # The actor runs with one thread (Ray's default for a 1-CPU actor), the worker with two: float
    # sums in another order move vertices by ~1e-4, so the meshes are compared as surfaces (the
    # byte-identical comparison at equal threads is tests/backend/serve/test_ray_executor.py).
    from scipy.spatial import cKDTree

    for got, want in zip(results[executor], results["worker"]):
        assert abs(len(got) - len(want)) <= 0.02 * len(want)
        assert max(cKDTree(want).query(got)[0].max(), cKDTree(got).query(want)[0].max()) < 1e-2
