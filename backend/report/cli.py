"""``python -m backend report JOB_DIR`` and ``python -m backend contact-sheet OUT.png JOB_DIR...``.

Both print the file they wrote on stdout (the last line) and exit 0; on failure, one line on
stderr that says why and exit 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

from blender_piva import contract


def main_report(job_dir: Path, *, render: bool = True, device: str = "cpu") -> int:
    """Rebuild the report of ``job_dir``; with ``render``, first render the held-out views when the
    job has a field but no ``results/views/`` (a job run before reports existed)."""
    from .build import MANIFEST_ROLES, VIEWS_ROLE, build_report
    from .views import INDEX_FILE, VIEWS_DIR, ensure_views

    job_dir = Path(job_dir)
    if not (job_dir / contract.JOB_FILE).is_file() and not (job_dir / contract.EVENTS_FILE).is_file():
        what = f"it has no {contract.JOB_FILE} or {contract.EVENTS_FILE}"
        print(f"PIVA backend: {job_dir} is not a job folder ({what})", file=sys.stderr)
        return 1
    roles = dict(MANIFEST_ROLES)
    if render:
        try:
            ensure_views(job_dir, device)
            roles[VIEWS_ROLE] = f"{VIEWS_DIR}/{INDEX_FILE}"
        except (contract.ContractError, FileNotFoundError, ValueError, KeyError) as exc:
            print(f"PIVA backend: no held-out views in the report ({exc}); it compares the previews", file=sys.stderr)
    try:
        files = build_report(job_dir)
    except OSError as exc:
        print(f"PIVA backend: cannot write the report: {exc}", file=sys.stderr)
        return 1
    _record_in_manifest(job_dir / contract.RESULTS_DIR, roles)
    print(f"PIVA backend: report image {files.png}")
    print(files.html)
    return 0


def _record_in_manifest(results: Path, roles: dict[str, str]) -> None:
    """Add the report's roles to an existing, valid results manifest (left alone otherwise)."""
    try:
        manifest = contract.load_manifest(results)
    except contract.ContractError:
        return  # no manifest (the job did not finish) or one this backend cannot vouch for
    if all(manifest.files.get(role) == name for role, name in roles.items()):
        return
    manifest.files.update(roles)
    manifest.write(results)


def main_contact_sheet(out: Path, job_dirs: list[Path], *, tile: int = 128, render_missing: bool = False) -> int:
    """Write the contact sheet of ``job_dirs`` to ``out``."""
    from .contact_sheet import contact_sheet

    if tile < 8 or tile > 2048:
        print(f"PIVA backend: --tile {tile} is out of range: give 8..2048 pixels", file=sys.stderr)
        return 1
    missing = [str(d) for d in job_dirs if not Path(d).is_dir()]
    if missing:
        print(f"PIVA backend: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 1
    try:
        layout = contact_sheet(job_dirs, out, tile=tile, render_missing=render_missing)
    except (ValueError, OSError) as exc:
        print(f"PIVA backend: no contact sheet: {exc}", file=sys.stderr)
        return 1
    width, height = layout.size
    print(f"PIVA backend: contact sheet of {layout.rows} rows x {layout.columns} views, {width}x{height} px")
    print(Path(out).resolve())
    return 0
