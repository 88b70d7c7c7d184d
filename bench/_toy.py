"""What the toy benchmarks (bench/toy_edit2d.py, bench/toy_edit.py) share: options, sources, gallery.

Not a benchmark itself (no figures): the leading underscore keeps it out of the bench list.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

ALL_METHODS = "sds,dds,pds,ssd,piva"


@dataclass(frozen=True)
class Arm:
    """One column of a benchmark run: a method with its hyperparameters and the label it is reported under."""

    method: str
    """A registered method (backend/editing/registry.py)."""
    tag: str = ""
    """The variant's name: the label and the work folders get ``_TAG`` (empty: the method's defaults)."""
    params: dict = field(default_factory=dict)
    """Hyperparameter overrides of the method's config (``--param`` or a ``--variants`` entry)."""
    edit: dict = field(default_factory=dict)
    """Overrides of the job's edit settings (``EditSettings``, e.g. ``fine_level_limit``): 3D only."""

    @property
    def label(self) -> str:
        """``METHOD`` or ``METHOD_TAG``: the figure names' suffix (``toy_success_LABEL``)."""
        return f"{self.method}_{self.tag}" if self.tag else self.method


_TAG = re.compile(r"[a-z0-9][a-z0-9_]*")


def benchmark_arguments(parser: argparse.ArgumentParser, *, steps: int) -> None:
    """The options both toy benchmarks share."""
    parser.add_argument("--methods", default=ALL_METHODS, help="comma-separated methods")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; every method runs every seed")
    parser.add_argument("--steps", type=int, default=steps, help="edit steps per run")
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="override a method's hyperparameter, e.g. piva.lambda_identity=1.0 (JSON value); repeatable")
    parser.add_argument("--edits", type=Path, default=None,
                        help='JSON list of {"kind": "appearance"|"shape"|"both", "source": [C, S], "target": [C, S]}')
    parser.add_argument("--tag", default="", help="label of a variant: added to the figure names and work folders")
    parser.add_argument("--variants", type=Path, default=None,
                        help='JSON list of {"tag": NAME, "method": METHOD, "params": {KEY: VALUE}}: more columns of '
                             'the same run, after --methods (e.g. --methods dds --variants bench/piva_variants_3d.json)')
    parser.add_argument("--model", default="toy", help="the diffusion model (default: the embedded toy model)")
    parser.add_argument("--threads", type=int, default=2)


def parse_benchmark(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """(methods, seeds, edits, overrides) from the shared options, with errors that say the fix."""
    import toy_world
    from backend.editing.registry import METHODS
    from backend.toy.judge import DEFAULT_EDITS, EditListError, load_edits
    from blender_piva.core.overrides import OverrideError, parse_overrides

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, e.g. 0,1,2; got {args.seeds!r}")
    if not seeds:
        parser.error("--seeds is empty; give at least one, e.g. --seeds 0")
    try:
        overrides = parse_overrides(args.param, flag="--param", form="METHOD.KEY=VALUE", example="piva.lambda_identity=1.0")
    except OverrideError as exc:
        parser.error(str(exc))
    if overrides and not args.tag:
        parser.error("--param needs a --tag so the variant's figures and work folders are told apart")
    try:
        edits = load_edits(args.edits, tuple(toy_world.COLORS), toy_world.SHAPES) if args.edits else list(DEFAULT_EDITS)
    except EditListError as exc:
        parser.error(str(exc))
    return methods, seeds, edits, overrides


def benchmark_arms(args: argparse.Namespace, parser: argparse.ArgumentParser, methods: list[str],
                   overrides: dict[str, dict]) -> list[Arm]:
    """The run's columns: every ``--methods`` entry (with ``--param`` and ``--tag``), then every
    ``--variants`` entry; checked before anything runs, with errors that say the fix."""
    arms = [Arm(m, args.tag, dict(overrides.get(m, {}))) for m in methods]
    if args.variants is not None:
        try:
            arms += load_variants(args.variants)
        except VariantListError as exc:
            parser.error(str(exc))
    labels = [a.label for a in arms]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        parser.error(f"two columns are both labelled {', '.join(repeated)}: give each variant its own tag")
    return arms


class VariantListError(ValueError):
    """A ``--variants`` file that cannot be run; the message says where and how to fix it."""


def load_variants(path: Path) -> list[Arm]:
    """The arms of a ``--variants`` file; every entry's params are checked against its method's config."""
    from backend.editing.registry import METHODS, MethodConfigError, build_config
    from backend.toy.judge import read_json_list

    where = f"--variants {path}"
    example = '[{"tag": "lambda_s", "method": "piva", "params": {"lambda_identity": 7.5}}]'
    entries = read_json_list(path, "variant list", example, VariantListError)
    arms = []
    for index, entry in enumerate(entries):
        at = f"{where}, entry {index}"
        if not isinstance(entry, dict) or set(entry) - {"tag", "method", "params", "edit"}:
            raise VariantListError(
                f'{at}: expected an object with "tag", "method" and optional "params" and "edit", got {entry!r}'
            )
        tag, method, params = entry.get("tag"), entry.get("method"), entry.get("params", {})
        edit = entry.get("edit", {})
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise VariantListError(f"{at}: tag {tag!r} must be lower-case letters, digits and _ (it names figures and folders)")
        if method not in METHODS:
            raise VariantListError(f"{at}: method {method!r} is not one of {', '.join(METHODS)}")
        if not isinstance(params, dict):
            raise VariantListError(f"{at}: params must be an object of the method's settings, got {params!r}")
        try:
            build_config(method, params=params)
        except (MethodConfigError, ValueError, TypeError) as exc:
            raise VariantListError(f"{at}: {exc}") from None
        check_edit_settings(edit, at)
        arms.append(Arm(method, tag, dict(params), dict(edit)))
    return arms


EDIT_KEYS_OF_THE_BENCHMARK = ("method", "steps", "render_resolution", "method_params", "checkpoint_every", "preview_every")
"""Edit settings the benchmark sets itself (its options, the arm's method and params): not a variant's."""


def check_edit_settings(edit: object, at: str) -> None:
    """A variant's ``"edit"`` block: known ``EditSettings`` fields the benchmark does not set, valid values."""
    import dataclasses

    from blender_piva.contract import ContractError, EditSettings

    if not isinstance(edit, dict):
        raise VariantListError(f"{at}: edit must be an object of edit settings, e.g. {{\"fine_level_limit\": 0.5}}, got {edit!r}")
    known = {f.name for f in dataclasses.fields(EditSettings)} - set(EDIT_KEYS_OF_THE_BENCHMARK)
    unknown = sorted(set(edit) - known)
    if unknown:
        raise VariantListError(f"{at}: edit setting(s) {', '.join(unknown)} unknown or set by the benchmark; "
                               f"choose from {', '.join(sorted(known))}")
    try:
        apply_edit_settings(EditSettings(), edit).validate()
    except (ContractError, TypeError) as exc:
        raise VariantListError(f"{at}: {exc}") from None


def apply_edit_settings(settings, edit: dict):
    """``settings`` (an ``EditSettings``) with a variant's ``"edit"`` overrides set; returns it."""
    for key, value in edit.items():
        setattr(settings, key, value)
    return settings


def model_tag(model_name: str) -> str:
    """A short name of the diffusion model's weights, for the work folders of runs that depend on it:
    a rerun after the model changed (e.g. a re-trained toy model) computes anew instead of re-scoring
    the old model's edits. A local folder: a digest of its safetensors files; a hub id: the id."""
    import hashlib

    folder = Path(model_name).expanduser()
    if not folder.is_dir():
        return "".join(c if c.isalnum() else "-" for c in model_name)
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*.safetensors")):
        digest.update(file.relative_to(folder).as_posix().encode())
        with open(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return "model-" + digest.hexdigest()[:10]


def load_cached_images(path: Path):
    """The images a finished 2D run saved at ``path`` (``save_cached_images``), or None if it has not
    finished. A plain ``.npy`` array read without pickle: nothing in a work folder can run code."""
    import numpy as np

    if not path.is_file():
        return None
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # torn or foreign: computed again and replaced
    return images if images.dtype == np.float32 and images.ndim == 4 else None


def save_cached_images(path: Path, images) -> None:
    """Write a run's ``[B, H, W, 3]`` float32 images to ``path`` atomically (a temporary file, then
    ``os.replace``): an interrupted run leaves nothing that reads as finished."""
    import os
    import tempfile

    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npy")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.save(stream, np.ascontiguousarray(images, dtype=np.float32), allow_pickle=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def source_views(work: Path):
    """The benchmark captures (rendered on first use): {(colour, shape): capture folder}."""
    from toy_world import renders

    root = renders.render_set(work / "captures", renders.BENCHMARK, log=lambda m: print(m, flush=True))
    return {tuple(p.name.split("_")): p for p in root.iterdir() if (p / "prompt.json").is_file()}


def load_eval_views(folder: Path):
    """([V, 3, H, W] RGB on white in [0, 1], [V, H, W] opacity > 0.5, the frames) of a capture's eval split."""
    import numpy as np
    import torch
    from PIL import Image

    meta = json.loads((folder / "transforms.json").read_text())
    frames = [f for f in meta["frames"] if f.get("split") == "eval"]
    rgbs, masks = [], []
    for frame in frames:
        rgba = np.asarray(Image.open(folder / frame["file_path"]).convert("RGBA"), dtype=np.float32) / 255.0
        rgbs.append(torch.from_numpy(rgba[..., :3] * rgba[..., 3:] + 1.0 - rgba[..., 3:]).permute(2, 0, 1))
        masks.append(torch.from_numpy(rgba[..., 3] > 0.5))
    return torch.stack(rgbs), torch.stack(masks), frames


def save_gallery(path: Path, rows: list[list]) -> None:
    """Rows of [3, H, W] images in [0, 1] as one PNG (2x nearest)."""
    import numpy as np
    from PIL import Image

    h, w = rows[0][0].shape[1:]
    grid = np.ones((len(rows) * (h + 2), max(len(r) for r in rows) * (w + 2), 3), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            grid[i * (h + 2) + 1 : i * (h + 2) + 1 + h, j * (w + 2) + 1 : j * (w + 2) + 1 + w] = (
                image.permute(1, 2, 0).numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray((grid * 255 + 0.5).astype(np.uint8))
    image.resize((image.width * 2, image.height * 2), Image.NEAREST).save(path)


def print_run(label: str, edit, seed: int, score, started: float) -> None:
    """One line per run: the verdict, what the oracle saw, the time so far."""
    import time

    print(f"{label:10s} {edit.kind:10s} {edit.label:38s} seed {seed}: success {score.success:d} "
          f"drift {score.drift:.3f} speckle {score.speckle:.2f} (oracle: {', '.join(score.seen)}) "
          f"[{time.perf_counter() - started:.0f} s]", flush=True)


def finish(runs: dict[str, list], gallery: dict[int, list], path: Path, started: float) -> None:
    """The table and figure lines, the gallery, ``toy_edit_seconds``."""
    import time

    from backend.toy.judge import report

    print()
    print("\n".join(report(runs)))
    save_gallery(path, [gallery[i] for i in sorted(gallery)])
    print(f"gallery: {path} (columns: source, {', '.join(runs)})")
    print(f"toy_edit_seconds: {time.perf_counter() - started:.1f}")
