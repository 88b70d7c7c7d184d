"""The contact sheet of a queue's variants: the source and every variant from the same cameras.

Variants of one object share its capture, hence its held-out cameras (``views.py``). The sheet
has one row per picture source and one column per camera::

    +-----------+--------+--------+-----+
    | source    | cam 0  | cam 1  | ... |   the capture's held-out views (the first job's)
    | target 1  |        |        |     |   job 1's final field from the same cameras
    | seed 0    |        |        |     |
    | ...       |        |        |     |
    +-----------+--------+--------+-----+

``label_width + columns * tile`` pixels wide, ``rows * tile`` high. A job without views (it
failed, or was cancelled) keeps its row, in grey tiles that say so.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from blender_piva import contract

from . import images
from .record import read_job
from .views import HeldoutViews, ensure_views, load_views, views_dir


@dataclass
class SheetLayout:
    """The grid of a contact sheet."""

    rows: int
    """1 (the source) + one per job."""
    columns: int
    """Held-out cameras."""
    tile: int
    """Side of one view, pixels."""
    label_width: int
    """Width of the label column, pixels."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the sheet in pixels."""
        return self.label_width + self.columns * self.tile, self.rows * self.tile


def contact_sheet(
    job_dirs: list[str | Path],
    out_path: str | Path,
    *,
    tile: int = 128,
    label_width: int = 220,
    render_missing: bool = False,
) -> SheetLayout:
    """Write the sheet of ``job_dirs`` (in order) to ``out_path`` as a PNG, atomically.

    ``render_missing``: render the views of a job that has a field but no ``results/views/`` (on
    the CPU; needs torch). Raises ValueError when no job has any view to show.
    """
    jobs: list[tuple] = []
    for job_dir in map(Path, job_dirs):
        views = load_views(job_dir / contract.RESULTS_DIR)
        if views is None and render_missing:
            try:
                views = ensure_views(job_dir)
            except (contract.ContractError, FileNotFoundError, ValueError, KeyError) as exc:
                print(f"PIVA backend: no views for {job_dir}: {exc}", file=sys.stderr)
        jobs.append((job_dir, read_job(job_dir), views))
    with_views = [(d, v) for d, _, v in jobs if v is not None]
    if not with_views:
        raise ValueError(
            f"none of the {len(jobs)} job(s) has held-out views (results/views/): run them to the end first"
        )
    source_dir, source_views = with_views[0]
    columns = max(len(source_views.source), *(len(v.result) for _, v in with_views))
    layout = SheetLayout(rows=1 + len(jobs), columns=columns, tile=tile, label_width=label_width)
    first = next(r for d, r, _ in jobs if d == source_dir)
    rows = [_row(f"source\n{first.source_prompt}", _tiles(source_dir, source_views, "source", layout), layout)]
    for job_dir, record, views in jobs:
        label = f"{record.target_prompt or record.job_id}\nseed {record.seed}"
        if record.method:
            label += f" \u00b7 {record.method}"
        if record.status != "finished":
            label += f"\n({record.status})"
        if views is None:
            tiles = [images.placeholder(tile, f"no view ({record.status})") for _ in range(columns)]
        else:
            tiles = _tiles(job_dir, views, "result", layout)
        rows.append(_row(label, tiles, layout))
    sheet = images.vstack(rows)
    assert sheet.size == layout.size, (sheet.size, layout.size)
    contract.write_bytes_atomic(Path(out_path), images.png_bytes(sheet))
    return layout


def _tiles(job_dir: Path, views: HeldoutViews, row: str, layout: SheetLayout) -> list:
    paths = views.paths(views_dir(job_dir / contract.RESULTS_DIR), row)
    tiles = [images.square(images.read_rgb(p), layout.tile) for p in paths[: layout.columns]]
    return tiles + [images.placeholder(layout.tile, "no view") for _ in range(layout.columns - len(tiles))]


def _row(label: str, tiles: list, layout: SheetLayout):
    return images.hstack([images.label_tile(label, layout.label_width, layout.tile), *tiles])
