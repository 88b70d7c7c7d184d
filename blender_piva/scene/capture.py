"""Render the selected object from many cameras for the backend (Cycles, CPU, in-process).

:func:`capture_object` writes the folder described in ``docs/capture_format.md``. It works on
a **temporary scene** that holds only an evaluated copy of the object (modifiers and world
transform applied, placed in the normalised frame), a camera and a light rig, so that

* nothing else of the user's scene is rendered,
* the user's scenes, render settings, objects, selection and active object are never touched,
* every temporary datablock is removed in a ``finally``, whether the capture succeeds, fails or
  is cancelled.

All views render in this process, one ``bpy.ops.render.render`` call each, with persistent data
so that Cycles builds its BVH once. Each call writes an uncompressed multilayer EXR (Combined +
Depth) that is read back with numpy (``exr.py``): in background mode the Render Result holds no
pixels, and a single EXR gives colour and depth of the same samples. The colour is converted to
an 8-bit sRGB PNG exactly as Blender's "Standard" view transform would (``core/capture_pixels.py``).
What Blender prints while it renders goes to the log chosen with ``core.quiet.log_blender_output``
(the headless command's ``JOB/capture.log``), or stays on the console when none was chosen.

Output is atomic: views are written to a hidden ``.NAME.partial-PID-HEX`` folder beside ``out_dir``
that replaces ``out_dir`` only when the capture is complete; failure or cancel removes it, and the
next capture removes those of processes that were killed (``contract.leftovers``). A finished
capture holds an owner marker (``contract.ownership``) with the object's fingerprint and the
capture settings: :func:`reusable_capture` reuses only a capture of the object as it is now, and
neither function ever replaces a folder that PIVA did not write.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import bpy
import numpy as np

from ..contract import TRANSFORMS_FILE, CaptureSettings, ContractError
from ..contract import capture as capture_format
from ..contract import cameras, disk, leftovers, ownership
from ..core import camera_rig, capture_pixels, png16, quiet
from ..core.exr import ExrError, read_exr

ProgressCallback = Callable[[int, int], None]
"""``progress(views_done, views_total)``, called after every view."""

_PREFIX = "PIVA_capture"

# Light rig. A uniform white world lights every point of a convex diffuse surface with the same
# irradiance, so the render shows the albedo itself: colours stay what the user painted, and the
# shading is view-independent (what a radiance field can fit). A world alone looks flat, which
# hides shape from the diffusion model that edits these renders, so a soft sun adds 25 % more
# light from the front-right-above. A surface facing the sun renders at 1.0 x albedo (0.8 + 0.2),
# one facing away at 0.8 x albedo: colours stay within 20 % of the albedo.
_WORLD_STRENGTH = 0.8
_SUN_IRRADIANCE = 0.2 * math.pi  # sun strength S gives radiance albedo * S / pi on a facing surface
_SUN_ELEVATION_DEG = 50.0
_SUN_AZIMUTH_DEG = 35.0
_SUN_ANGLE_DEG = 30.0  # angular diameter: soft shadows
_MAX_BOUNCES = 4  # enough for the white-world light in concavities; fewer bounces = faster views


def light_rig() -> capture_format.LightRig:
    """The rig above as recorded in transforms.json (the backend's bake divides it out)."""
    sun = cameras.orbit_position(_SUN_ELEVATION_DEG, _SUN_AZIMUTH_DEG, 1.0)
    return capture_format.LightRig(
        world_strength=_WORLD_STRENGTH,
        world_color=(1.0, 1.0, 1.0),
        sun_direction=tuple(float(c) for c in sun / np.linalg.norm(sun)),
        sun_strength=_SUN_IRRADIANCE,
        sun_angle_deg=_SUN_ANGLE_DEG,
    )


class CaptureError(ValueError):
    """The object or the output folder cannot be captured; the message says how to fix it."""


class CaptureCancelled(Exception):
    """``should_cancel()`` returned True; no output was left behind."""


def check_capturable(obj: "bpy.types.Object | None", out_dir: str | os.PathLike | None = None) -> None:
    """Raise :class:`CaptureError` if ``obj`` (and ``out_dir``, when given) cannot be captured."""
    if obj is None:
        raise CaptureError(
            "No object is selected. Select the mesh you want to edit in the 3D Viewport, then try again."
        )
    if obj.type != "MESH":
        raise CaptureError(
            f"{obj.name!r} is a {obj.type.lower()} object, not a mesh. Convert it first "
            "(Object > Convert > Mesh) or select a mesh object."
        )
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    polygons = evaluated.data.polygons
    if len(polygons) == 0:
        raise CaptureError(
            f"Mesh {obj.name!r} has no faces (after its modifiers), so there is nothing to render. "
            "Fill it with faces (Edit Mode > F), or disable the modifier that removes them."
        )
    if not _has_area(evaluated):
        raise CaptureError(
            f"{obj.name!r} has no faces with area: all {len(polygons)} of its faces are degenerate (their corners "
            "lie on one line or one point, or the object's scale is 0), so the capture would see nothing. "
            "Fix the geometry (Edit Mode > Mesh > Clean Up > Degenerate Dissolve, or move the vertices apart) "
            "or select another mesh."
        )
    if out_dir is not None:
        _check_writable(Path(out_dir))


def _has_area(evaluated: "bpy.types.Object") -> bool:
    """True when at least one face of the evaluated mesh, in world space, has a visible area:
    more than a millionth of the square of the mesh's size (float noise on a flat sliver is not area)."""
    mesh = evaluated.data
    matrix = np.array(evaluated.matrix_world, np.float64)
    corners = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", corners)
    points = corners.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T
    triangles = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", triangles)
    tri = points[triangles.reshape(-1, 3)]  # [T, 3 corners, 3]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    size = float(np.ptp(points, axis=0).max()) if len(points) else 0.0
    return bool(size > 0.0 and (areas > 1e-6 * size * size).any())


def capture_object(
    obj: "bpy.types.Object",
    settings: CaptureSettings,
    out_dir: str | os.PathLike,
    *,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Path:
    """Render ``obj`` from ``settings``' cameras into ``out_dir``; returns ``out_dir/transforms.json``.

    Raises :class:`CaptureError` for bad input (see :func:`check_capturable`, invalid settings),
    :class:`CaptureCancelled` when ``should_cancel()`` returns True (checked before every view).
    ``out_dir`` is replaced only when the capture is complete, and only when it is empty or an
    earlier capture (its owner marker says so); a folder holding other files is a CaptureError.
    The blocking form of :class:`CaptureSession` (scripts, the headless command, the tests).
    """
    session = CaptureSession(obj, settings, out_dir)
    session.begin()
    try:
        while not session.all_rendered:
            if should_cancel is not None and should_cancel():
                raise CaptureCancelled(f"capture cancelled after {session.done} of {session.total} views")
            session.render_next()
            if progress is not None:
                progress(session.done, session.total)
        return session.complete()
    except BaseException:
        session.abort()
        raise


class CaptureSession:
    """One capture, a view at a time: :meth:`begin`, :meth:`render_next` until
    :attr:`all_rendered`, then :meth:`complete`; :meth:`abort` at any point removes everything it
    made (the temporary scene and the partial folder), so the user's scene is as before.

    The panel's modal operator renders one view per timer tick, so Blender stays responsive
    (a tick blocks the UI for one view's render: :attr:`longest_block_ms`); :func:`capture_object`
    runs the same steps in a loop. Any error aborts the session before it is raised."""

    def __init__(self, obj: "bpy.types.Object", settings: CaptureSettings, out_dir: str | os.PathLike) -> None:
        try:
            settings.validate()
        except ContractError as exc:
            raise CaptureError(f"Invalid capture settings: {exc}") from None
        check_capturable(obj, out_dir)
        self.obj, self.settings = obj, settings
        self.out_dir = Path(out_dir).absolute()
        remove_dead_partials(self.out_dir)
        _check_replaceable(self.out_dir)
        self.inputs = capture_inputs(obj, settings)
        self.views = camera_rig.all_views(settings)
        self.done = 0
        """Views rendered so far."""
        self.longest_block_ms = 0.0
        """The longest single step (begin, one view, complete) so far, in milliseconds."""
        self.partial: Path | None = None
        self._rig: _Rig | None = None
        self._images_before: set = set()
        self._frames: tuple[np.ndarray, np.ndarray] | None = None
        self._scale = capture_format.depth_unit_scale(settings)

    @property
    def total(self) -> int:
        return len(self.views)

    @property
    def all_rendered(self) -> bool:
        return self.done >= len(self.views)

    def _timed(self, started: float) -> None:
        self.longest_block_ms = max(self.longest_block_ms, (time.perf_counter() - started) * 1e3)

    def begin(self) -> None:
        """Create the partial folder and the temporary scene."""
        started = time.perf_counter()
        self.partial = self.out_dir.parent / f".{self.out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.partial.mkdir()  # (not mkdtemp: its 0700 mode would end up on out_dir)
        except OSError as exc:
            self.partial = None
            raise CaptureError(f"Cannot write the capture next to {self.out_dir}: {exc.strerror or exc}. Choose another folder.")
        self._images_before = set(bpy.data.images)
        self._rig = _Rig()
        with self._aborting():
            (self.partial / "images").mkdir()
            (self.partial / "depth").mkdir()
            with quiet.blender_output():  # Cycles probes the GPUs on first use ("CUEW initialization failed")
                self._frames = self._rig.build(self.obj, self.settings)
            self._rig.scene.render.filepath = str(self.partial / "render.exr")
        self._timed(started)

    def render_next(self) -> None:
        """Render the next view into the partial folder."""
        if self._rig is None or self.partial is None:
            raise RuntimeError("begin() the capture first")
        started = time.perf_counter()
        view = self.views[self.done]
        exr_path = self.partial / "render.exr"
        with self._aborting():
            self._rig.aim(view)
            with quiet.blender_output():  # Cycles' "Saved: ..." per view goes to the log the caller chose
                result = bpy.ops.render.render(write_still=True, scene=self._rig.scene.name)
            if not exr_path.is_file() and (disk.free_bytes(self.partial) or 0) < disk.capture_bytes(self.settings):
                raise _disk_full(self.out_dir, self.settings)  # Cycles says nothing when it cannot write the view
            if "FINISHED" not in result or not exr_path.is_file():
                raise CaptureError(
                    f"Cycles did not render view {view.name} (render returned {sorted(result)}). If another render "
                    "is running, wait for it to finish (or stop it with Esc) and capture again."
                )
            try:
                channels = read_exr(exr_path)
            except ExrError as exc:
                if (disk.free_bytes(self.partial) or 0) < disk.capture_bytes(self.settings):
                    raise _disk_full(self.out_dir, self.settings) from None  # Cycles wrote what fitted
                raise CaptureError(f"Cycles wrote an unreadable render of view {view.name} ({exc}); capture again.") from None
            exr_path.unlink()
            _write_view(self.partial, view, channels, self._scale)
        self.done += 1
        self._timed(started)

    def complete(self) -> Path:
        """Write transforms.json and the owner marker, replace ``out_dir``; returns transforms.json."""
        if not self.all_rendered or self.partial is None or self._frames is None:
            raise RuntimeError(f"{self.done} of {self.total} views rendered: render them all first")
        started = time.perf_counter()
        with self._aborting():
            world_to_normalized, object_matrix_world = self._frames
            document = capture_format.transforms_document(
                self.settings, self.views, world_to_normalized, object_matrix_world, self.obj.name, light_rig=light_rig()
            )
            (self.partial / TRANSFORMS_FILE).write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
            ownership.write_owner(
                self.partial,
                ownership.FolderOwner(
                    kind="capture", fingerprint=ownership.fingerprint_of(self.inputs),
                    inputs=ownership.plain(self.inputs), state="done",
                ),
            )
            _replace_dir(self.partial, self.out_dir)
        self.partial = None
        self._cleanup()
        self._timed(started)
        return self.out_dir / TRANSFORMS_FILE

    def abort(self) -> None:
        """Remove the partial folder and every temporary datablock (idempotent)."""
        if self.partial is not None:
            shutil.rmtree(self.partial, ignore_errors=True)
            self.partial = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self._rig is not None:
            self._rig.remove()
            self._rig = None
            for image in set(bpy.data.images) - self._images_before:  # the "Render Result" the renders created
                bpy.data.images.remove(image)

    class _Aborting:
        def __init__(self, session: "CaptureSession") -> None:
            self.session = session

        def __enter__(self) -> None:
            return None

        def __exit__(self, kind, exc, tb) -> bool:
            if exc is None:
                return False
            self.session.abort()
            if isinstance(exc, OSError) and disk.is_disk_full(exc):
                raise _disk_full(self.session.out_dir, self.session.settings) from None
            return False

    def _aborting(self) -> "CaptureSession._Aborting":
        """Any error inside aborts the session (a full disk becomes its CaptureError)."""
        return CaptureSession._Aborting(self)


def capture_inputs(obj: "bpy.types.Object", settings: CaptureSettings) -> dict:
    """What a capture's content depends on: the object's look (``fingerprint.py``) and the settings."""
    from .fingerprint import object_fingerprint

    return {"object": object_fingerprint(obj), "capture": ownership.plain(dataclasses.asdict(settings))}


def reusable_capture(obj: "bpy.types.Object", settings: CaptureSettings, out_dir: str | os.PathLike) -> bool:
    """True when ``out_dir`` holds a complete capture of ``obj`` as it is now, with ``settings``.

    False when there is none to reuse (no folder, an empty one, or an incomplete capture of ours):
    capture it. Raises :class:`~blender_piva.contract.ownership.FolderNotOurs` when the folder
    holds anything else: files PIVA did not write, or a capture of the object as it looked before
    (or with other settings), which is never silently reused or replaced.
    """
    out_dir = Path(out_dir).absolute()
    remove_dead_partials(out_dir)
    inputs = capture_inputs(obj, settings)
    try:
        owner = ownership.check_owner(out_dir, "capture", inputs)
    except ownership.FolderNotOurs:
        found = _owner_or_none(out_dir)
        if found is None or found.kind != "capture":
            raise
        changes = []
        if found.inputs.get("object") != inputs["object"]:
            changes.append(f"{obj.name!r} changed since (its mesh, materials or modifiers)")
        other = ownership.describe_differences({"capture": found.inputs.get("capture")}, {"capture": inputs["capture"]})
        if other:
            changes.append(f"other capture settings ({other})")
        raise ownership.FolderNotOurs(
            out_dir,
            "holds a capture made before: " + ("; ".join(changes) or "its fingerprint differs"),
            "start a new job (leave the job folder empty), or delete this folder to capture the object again",
        ) from None
    return owner is not None and owner.done and _capture_complete(out_dir)


def remove_dead_partials(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the partial captures of ``out_dir`` left by killed processes (``contract.leftovers``)."""
    out_dir = Path(out_dir).absolute()
    return leftovers.remove_dead_leftovers(
        out_dir.parent, recursive=False, started=time.time(), prefix=f".{out_dir.name}."
    )


def _check_replaceable(out_dir: Path) -> None:
    """A capture replaces an earlier capture, never a folder PIVA did not write."""
    if not ownership.foreign_entries(out_dir):
        return
    found = _owner_or_none(out_dir)
    if found is None or found.kind != "capture":
        raise CaptureError(
            f"{out_dir} holds files this capture did not write; choose an empty folder or delete it."
        )


def _owner_or_none(folder: Path) -> "ownership.FolderOwner | None":
    try:
        return ownership.read_owner(folder)
    except ContractError:
        return None


def _capture_complete(folder: Path) -> bool:
    """``transforms.json`` reads and lists frames whose image and depth files all exist."""
    try:
        frames = json.loads((folder / TRANSFORMS_FILE).read_text(encoding="utf-8"))["frames"]
        names = [frame[key] for frame in frames for key in ("file_path", "depth_file_path")]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(frames) and all(isinstance(n, str) and (folder / n).is_file() for n in names)


class _Rig:
    """The temporary scene and its datablocks; :meth:`remove` deletes whatever was created."""

    def __init__(self) -> None:
        self.scene: bpy.types.Scene | None = None
        self.objects: list[bpy.types.Object] = []
        self.data: list[bpy.types.ID] = []  # meshes, cameras, lights, worlds
        self.camera: bpy.types.Object | None = None

    def build(self, obj: "bpy.types.Object", settings: CaptureSettings) -> tuple[np.ndarray, np.ndarray]:
        """Create the scene; returns (world_to_normalized [4, 4], object matrix_world [4, 4])."""
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = obj.evaluated_get(depsgraph)
        mesh = bpy.data.meshes.new_from_object(evaluated, preserve_all_data_layers=False, depsgraph=depsgraph)
        self.data.append(mesh)
        # The evaluated object's slots resolve object-linked materials; use the original datablocks.
        mesh.materials.clear()
        for slot in evaluated.material_slots:
            mesh.materials.append(slot.material.original if slot.material is not None else None)

        object_matrix_world = np.array(evaluated.matrix_world, np.float64)
        local = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", local)
        used = np.empty(len(mesh.loops), np.int32)
        mesh.loops.foreach_get("vertex_index", used)
        local = local.reshape(-1, 3)[np.unique(used)].astype(np.float64)  # loose vertices are not rendered
        world = local @ object_matrix_world[:3, :3].T + object_matrix_world[:3, 3]
        try:
            world_to_normalized = camera_rig.normalization_from_points(world)
        except ValueError:
            raise CaptureError(
                f"Mesh {obj.name!r} has no size (all its faces collapse to one point). "
                "Scale it up or pick another object."
            ) from None

        self.scene = scene = bpy.data.scenes.new(_PREFIX)
        self._configure(scene, settings)

        copy = bpy.data.objects.new(_PREFIX, mesh)
        self.objects.append(copy)
        scene.collection.objects.link(copy)
        copy.matrix_world = _to_blender(world_to_normalized @ object_matrix_world)

        camera_data = bpy.data.cameras.new(_PREFIX)
        self.data.append(camera_data)
        camera_data.lens_unit = "FOV"
        camera_data.sensor_fit = "AUTO"
        camera_data.clip_start = max(1e-3, 0.5 * cameras.near_depth_bound(settings))
        camera_data.clip_end = 2.0 * cameras.far_depth_bound(settings)
        self.camera = bpy.data.objects.new(_PREFIX + "_camera", camera_data)
        self.objects.append(self.camera)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera

        world = bpy.data.worlds.new(_PREFIX)
        self.data.append(world)
        if world.node_tree is None:  # Blender < 5 creates worlds without nodes
            world.use_nodes = True
        background = next(n for n in world.node_tree.nodes if n.type == "BACKGROUND")
        background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
        background.inputs["Strength"].default_value = _WORLD_STRENGTH
        scene.world = world

        sun_data = bpy.data.lights.new(_PREFIX + "_sun", "SUN")
        self.data.append(sun_data)
        sun_data.energy = _SUN_IRRADIANCE
        sun_data.angle = math.radians(_SUN_ANGLE_DEG)
        sun = bpy.data.objects.new(_PREFIX + "_sun", sun_data)
        self.objects.append(sun)
        scene.collection.objects.link(sun)
        # A sun shines down its local -Z: reuse look_at from the light's direction to the origin.
        sun_pos = cameras.orbit_position(_SUN_ELEVATION_DEG, _SUN_AZIMUTH_DEG, 10.0)
        sun.matrix_world = _to_blender(cameras.look_at(sun_pos, np.zeros(3)))
        return world_to_normalized, object_matrix_world

    @staticmethod
    def _configure(scene: "bpy.types.Scene", settings: CaptureSettings) -> None:
        render = scene.render
        render.engine = "CYCLES"
        render.resolution_x = render.resolution_y = settings.resolution
        render.resolution_percentage = 100
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
        render.film_transparent = True
        render.use_persistent_data = True  # keep the BVH between the views of this capture
        render.use_compositing = False
        render.use_sequencer = False
        render.dither_intensity = 0.0
        scene.view_settings.view_transform = "Standard"  # plain sRGB colours, no Filmic/AgX tone curve
        scene.view_settings.look = "None"
        scene.view_settings.exposure = 0.0
        scene.view_settings.gamma = 1.0
        cycles = scene.cycles
        cycles.device = "CPU"
        cycles.samples = settings.samples
        cycles.seed = settings.seed
        cycles.use_animated_seed = False
        cycles.use_denoising = settings.denoise
        cycles.denoiser = "OPENIMAGEDENOISE"
        # FAST skips denoising the albedo/normal guides (clean for opaque objects under this light);
        # its speed and cost are measured by bench/capture.py (docs/RESULTS.md).
        cycles.denoising_prefilter = "FAST"
        cycles.max_bounces = _MAX_BOUNCES
        cycles.caustics_reflective = False
        cycles.caustics_refractive = False
        layer = scene.view_layers[0]
        layer.use_pass_combined = True
        layer.use_pass_z = True
        image = render.image_settings
        if hasattr(image, "media_type"):  # Blender 5 chooses multilayer through the media type
            image.media_type = "MULTI_LAYER_IMAGE"
        else:
            image.file_format = "OPEN_EXR_MULTILAYER"
        image.exr_codec = "NONE"  # what exr.read_exr reads; the file lives only until it is read
        image.color_depth = "32"  # float depth: half floats would round depth 4.0 to 0.002

    def aim(self, view: cameras.CameraView) -> None:
        self.camera.data.angle = math.radians(view.fov_deg)
        self.camera.matrix_world = _to_blender(view.camera_to_world())

    def remove(self) -> None:
        for obj in self.objects:
            bpy.data.objects.remove(obj, do_unlink=True)
        self.objects.clear()
        if self.scene is not None:
            bpy.data.scenes.remove(self.scene, do_unlink=True)
            self.scene = None
        for block in self.data:
            collection = {
                bpy.types.Mesh: bpy.data.meshes,
                bpy.types.Camera: bpy.data.cameras,
                bpy.types.World: bpy.data.worlds,
            }.get(type(block), bpy.data.lights)
            collection.remove(block, do_unlink=True)
        self.data.clear()
        self.camera = None


def _write_view(folder: Path, view: cameras.CameraView, channels: dict[str, np.ndarray], scale: float) -> None:
    try:
        rgb = np.stack([_channel(channels, "Combined." + c) for c in "RGB"], -1)
        alpha = _channel(channels, "Combined.A")
        z = _channel(channels, "Depth.Z")
    except KeyError as exc:
        raise CaptureError(f"The render of view {view.name} lacks the pass {exc.args[0]}; this is a bug.") from None
    png16.write_png(folder / "images" / f"{view.name}.png", capture_pixels.srgb8_from_linear(rgb, alpha))
    png16.write_png(folder / "depth" / f"{view.name}.png", capture_pixels.depth_codes_from_z(z, scale))


def _channel(channels: dict[str, np.ndarray], suffix: str) -> np.ndarray:
    """The channel whose name ends with ``suffix`` (the view layer name prefixes it)."""
    for name, values in channels.items():
        if name.endswith("." + suffix) or name == suffix:
            return values
    raise KeyError(suffix)


def _to_blender(matrix: np.ndarray) -> "object":
    from mathutils import Matrix

    return Matrix([list(map(float, row)) for row in np.asarray(matrix)])


def _disk_full(out_dir: Path, settings: CaptureSettings) -> CaptureError:
    views = settings.num_views + settings.num_eval_views
    message, hint = disk.disk_full_message(
        out_dir.parent, disk.capture_bytes(settings), f"the capture ({views} views at {settings.resolution} px)"
    )
    return CaptureError(f"{message[0].upper()}{message[1:]}; nothing was kept. To fix: {hint}.")


def _check_writable(out_dir: Path) -> None:
    hint = "Choose an output folder you can write to (e.g. in your home folder) and try again."
    if out_dir.exists() and not out_dir.is_dir():
        raise CaptureError(f"The output path {out_dir} is a file, not a folder. {hint}")
    try:
        out_dir.absolute().parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{out_dir.name}.probe-", dir=out_dir.absolute().parent)
        os.rmdir(probe)
    except OSError as exc:
        raise CaptureError(f"Cannot write the capture to {out_dir}: {exc.strerror or exc}. {hint}") from None


def _replace_dir(partial: Path, out_dir: Path) -> None:
    """Move the finished ``partial`` folder to ``out_dir``, replacing an older capture there."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
    try:
        os.replace(partial, out_dir)
    except OSError:
        if old is not None:
            os.replace(old, out_dir)  # put the previous capture back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
