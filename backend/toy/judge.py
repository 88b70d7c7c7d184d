"""How the toy benchmarks judge an edit: the edit list, the oracle's verdict, drift, speckle, intervals.

Shared by bench/toy_edit2d.py (edits of rendered views as 2D images) and bench/toy_edit.py (3D:
capture, fit, edit, held-out renders), so both score the same way:

* **success**: the oracle names the target colour AND the target shape on at least
  ``SUCCESS_VIEWS`` of the ``JUDGED_VIEWS`` held-out views;
* **drift** (what should have stayed): ``1 - silhouette IoU`` with the source for a colour edit;
  the sRGB distance between the edited and the source foreground colour for a shape edit;
  undefined for an edit of both (nothing should stay) and left out of the mean;
* **speckle**: the RMS of the foreground's deviation from its local 5x5 mean (high-frequency
  mottling, not smooth shading) on the judged views, over the same figure of the source views;
  1 = as smooth as the source.

Per method: means with 95% percentile-bootstrap intervals. The bootstrap resamples *edits*, each
with all its seeds (a cluster bootstrap): the seeds of one edit mostly agree, so resampling runs
as if independent would give intervals about sqrt(seeds) too narrow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .oracle import ToyOracle

KINDS = ("appearance", "shape", "both")
"""Kinds of edit: colour only, shape only, both."""
JUDGED_VIEWS = 4
"""Held-out views a run is judged on."""
SUCCESS_VIEWS = 3
"""Views on which the oracle must see the target for a success."""
FOREGROUND_THRESHOLD = 0.5
"""Opacity (3D) or distance-from-white score (2D) above which a pixel is the object."""


@dataclass(frozen=True)
class Edit:
    """One benchmark edit: "a SOURCE" should become "a TARGET"."""

    kind: str
    """``appearance`` (colour changes), ``shape`` (shape changes) or ``both``."""
    source: tuple[str, str]
    """(colour, shape) of the source object."""
    target: tuple[str, str]
    """(colour, shape) it should become."""

    @property
    def label(self) -> str:
        return f"a {' '.join(self.source)} -> a {' '.join(self.target)}"


def _edit(kind: str, source: str, target: str) -> Edit:
    return Edit(kind, tuple(source.split()), tuple(target.split()))  # type: ignore[arg-type]


DEFAULT_EDITS: tuple[Edit, ...] = (
    _edit("appearance", "red cube", "blue cube"),
    _edit("appearance", "green sphere", "yellow sphere"),
    _edit("appearance", "blue cylinder", "red cylinder"),
    _edit("appearance", "yellow torus", "purple torus"),
    _edit("appearance", "purple cone", "green cone"),
    _edit("appearance", "cyan cube", "red cube"),
    _edit("shape", "red cube", "red sphere"),
    _edit("shape", "green sphere", "green cube"),
    _edit("shape", "blue cylinder", "blue cone"),
    _edit("shape", "purple cone", "purple cylinder"),
    _edit("shape", "yellow torus", "yellow sphere"),
    _edit("shape", "cyan sphere", "cyan torus"),
    _edit("both", "red cube", "blue sphere"),
    _edit("both", "green sphere", "purple cube"),
    _edit("both", "blue cylinder", "yellow cone"),
    _edit("both", "yellow torus", "cyan cylinder"),
    _edit("both", "purple cone", "red torus"),
    _edit("both", "cyan cube", "green cylinder"),
)
"""18 edits, six of each kind; every colour and every shape is a source and a target."""


class EditListError(ValueError):
    """An ``--edits`` file that cannot be used; the message says what to fix."""


def read_json_list(path: Path, what: str, example: str, error: type[ValueError]) -> list:
    """The non-empty JSON list in ``path`` (a benchmark's ``--edits`` or ``--variants`` file), else
    ``error`` saying what was wrong and showing ``example``."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"cannot read the {what} {path}: {exc}; it must be a JSON list like {example}") from None
    if not isinstance(raw, list) or not raw:
        raise error(f"{path} must hold a non-empty JSON list like {example}")
    return raw


def load_edits(path: Path, colors: tuple[str, ...], shapes: tuple[str, ...]) -> list[Edit]:
    """Read a JSON list of ``{"kind": ..., "source": [COLOUR, SHAPE], "target": [COLOUR, SHAPE]}``."""
    example = '[{"kind": "appearance", "source": ["red", "cube"], "target": ["blue", "cube"]}]'
    raw = read_json_list(path, "edit list", example, EditListError)
    edits = []
    for i, item in enumerate(raw):
        where = f"{path}: edit {i}"
        if not isinstance(item, dict) or set(item) != {"kind", "source", "target"}:
            raise EditListError(f"{where} must be an object with exactly the keys kind, source, target, like {example}")
        if item["kind"] not in KINDS:
            raise EditListError(f"{where}: kind {item['kind']!r} is not one of {', '.join(KINDS)}")
        pair = []
        for key in ("source", "target"):
            value = item[key]
            if (not isinstance(value, list) or len(value) != 2 or value[0] not in colors or value[1] not in shapes):
                raise EditListError(f"{where}: {key} must be [COLOUR, SHAPE] with a colour of {', '.join(colors)} "
                                    f"and a shape of {', '.join(shapes)}; got {value!r}")
            pair.append((value[0], value[1]))
        edit = Edit(item["kind"], pair[0], pair[1])
        expected = {"appearance": (True, False), "shape": (False, True), "both": (True, True)}[edit.kind]
        changed = (edit.source[0] != edit.target[0], edit.source[1] != edit.target[1])
        if changed != expected:
            raise EditListError(f"{where}: a {edit.kind!r} edit must change "
                                f"{ {'appearance': 'the colour only', 'shape': 'the shape only', 'both': 'colour and shape'}[edit.kind]}; "
                                f"{edit.label} does not")
        edits.append(edit)
    return edits


@dataclass
class RunScore:
    """The verdict on one run (one edit, one method, one seed)."""

    success: bool
    drift: float
    """NaN for an edit of both."""
    speckle: float
    seen: list[str]
    """What the oracle saw on each judged view, "colour shape"."""


def white_distance_mask(rgb: Tensor) -> Tensor:  # [V, 3, H, W] in [0, 1] -> [V, H, W] bool
    """The object's pixels of a render on white, for 2D edits that have no opacity."""
    return (1.0 - rgb).abs().amax(dim=1) > 0.12


def foreground_mean(rgb: Tensor, mask: Tensor) -> Tensor:  # [V, 3, H, W], [V, H, W] -> [3]
    m = mask[:, None].float()
    total = m.sum()
    if total == 0:
        return torch.ones(3)
    return (rgb * m).sum(dim=(0, 2, 3)) / total


def local_roughness(rgb: Tensor, mask: Tensor) -> float:  # [V, 3, H, W], [V, H, W] -> RMS
    """RMS deviation from the local 5x5 mean over interior foreground pixels (mask eroded by 2)."""
    m = mask[:, None].float()
    interior = -F.max_pool2d(-m, 5, stride=1, padding=2)  # erosion
    local = F.avg_pool2d(rgb, 5, stride=1, padding=2, count_include_pad=False)
    dev = ((rgb - local) ** 2).sum(1, keepdim=True)
    n = interior.sum()
    return float((dev * interior).sum() / n) ** 0.5 if n > 0 else float("nan")


def silhouette_iou(a: Tensor, b: Tensor) -> float:  # [V, H, W] bool each
    union = (a | b).sum()
    return float((a & b).sum() / union) if union > 0 else 1.0


def score_run(
    edit: Edit,
    oracle: ToyOracle,
    edited: Tensor,  # [V, 3, H, W] in [0, 1] on white
    edited_mask: Tensor,  # [V, H, W] bool
    source: Tensor,  # [V, 3, H, W] the source at the same views
    source_mask: Tensor,  # [V, H, W] bool
) -> RunScore:
    """Judge one run on its V held-out views (see the module docstring)."""
    colors, shapes = oracle.classify(edited)
    hits = sum(c == edit.target[0] and s == edit.target[1] for c, s in zip(colors, shapes))
    needed = math.ceil(SUCCESS_VIEWS * edited.shape[0] / JUDGED_VIEWS)
    if edit.kind == "appearance":
        drift = 1.0 - silhouette_iou(edited_mask, source_mask)
    elif edit.kind == "shape":
        drift = float(torch.linalg.norm(foreground_mean(edited, edited_mask) - foreground_mean(source, source_mask)))
    else:
        drift = float("nan")
    base = local_roughness(source, source_mask)
    rough = local_roughness(edited, edited_mask)
    speckle = rough / base if base > 0 and not math.isnan(rough) else float("nan")
    return RunScore(hits >= needed, drift, speckle, [f"{c} {s}" for c, s in zip(colors, shapes)])


def bootstrap_mean(
    values: list[float], groups: list[object] | None = None, *, samples: int = 4000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95% percentile-bootstrap interval; NaNs are left out.

    ``groups`` (one key per value, e.g. the edit) makes it a cluster bootstrap: whole groups are
    resampled, so values that move together (the seeds of one edit) count as one draw, not several.
    Without it every value is its own group.
    """
    keys = list(range(len(values))) if groups is None else list(groups)
    if len(keys) != len(values):
        raise ValueError(f"bootstrap_mean: {len(values)} values but {len(keys)} group keys; give one key per value")
    clusters: dict[object, list[float]] = {}
    for key, value in zip(keys, values):
        if not math.isnan(value):
            clusters.setdefault(key, []).append(value)
    if not clusters:
        return float("nan"), float("nan"), float("nan")
    sums = np.asarray([sum(c) for c in clusters.values()], dtype=np.float64)
    counts = np.asarray([len(c) for c in clusters.values()], dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, sums.size, size=(samples, sums.size))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)  # the pooled mean of each resample
    return float(sums.sum() / counts.sum()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summary_lines(method: str, scores: list[RunScore], groups: list[object] | None = None) -> list[str]:
    """The figure lines of one method: ``toy_success_M``, ``toy_drift_M``, ``toy_speckle_M`` and their ``_ci95``.

    ``groups``: one key per score (the edit) for the cluster bootstrap, see :func:`bootstrap_mean`.
    """
    lines = []
    for name, values in (("success", [float(s.success) for s in scores]), ("drift", [s.drift for s in scores]),
                         ("speckle", [s.speckle for s in scores])):
        mean, low, high = bootstrap_mean(values, groups)
        lines.append(f"toy_{name}_{method}: {mean:.3f}")
        lines.append(f"toy_{name}_{method}_ci95: [{low:.3f}, {high:.3f}]")
    return lines


def report(runs: dict[str, list[tuple[Edit, int, RunScore]]]) -> list[str]:
    """A markdown table per method and kind (means with 95% intervals), then the figure lines."""
    lines = ["| method | kind | runs | success | drift | speckle |", "|---|---|---|---|---|---|"]

    def cell(values: list[float], groups: list[Edit]) -> str:
        mean, low, high = bootstrap_mean(values, groups)
        return "n/a" if math.isnan(mean) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"

    for method, rows in runs.items():
        for kind in KINDS + ("all",):
            mine = [(edit, score) for edit, _, score in rows if kind in ("all", edit.kind)]
            if not mine:
                continue
            edits = [edit for edit, _ in mine]
            lines.append(f"| {method} | {kind} | {len(mine)} | {cell([float(s.success) for _, s in mine], edits)} | "
                         f"{cell([s.drift for _, s in mine], edits)} | {cell([s.speckle for _, s in mine], edits)} |")
    lines.append("")
    for method, rows in runs.items():
        lines += summary_lines(method, [score for _, _, score in rows], [edit for edit, _, _ in rows])
    return lines
