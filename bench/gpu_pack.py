"""Pack the Python packages the GPU suite needs besides torch into wheels, offline, for carrying.

The GPU machine has torch and nothing else, and no network. This repacks the distributions that
are installed HERE (the project's .venv, pinned by requirements.txt) as wheel files, from their own
RECORD (the files pip installed) and WHEEL tag, without downloading anything:

    .venv/bin/python bench/gpu_pack.py [--out build/gpu_wheels]

It packs the requirement closure of ``ROOTS`` (diffusers, peft, safetensors, numpy, Pillow, nerfacc
and what they require), minus torch and torch's own dependencies (already on the GPU machine), bytecode and
console scripts, and writes ``PACK.json`` (the Python and platform the binary wheels are for).
``build/`` is git-ignored, so the folder travels only when carried: the run tool's
``carry=["build/gpu_wheels"]`` (64 MiB at most; the script prints the total). bench/gpu_suite.sh
unpacks them into a temporary folder and puts it on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import platform
import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path

ROOTS = ("diffusers", "peft", "accelerate", "safetensors", "numpy", "pillow", "huggingface_hub", "nerfacc")
"""What the suite imports besides torch (peft pulls transformers, diffusers huggingface_hub, ...;
nerfacc: backend/render imports it; its CUDA kernels are compiled on first use, see gpu_suite.py)."""
ON_THE_GPU_MACHINE = ("torch",)
"""Installed there already; their own requirements are skipped too (torch brings them)."""
LIMIT_MB = 64.0
"""What the run tool carries at most."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(dist: metadata.Distribution) -> list[str]:
    """Names of the distributions ``dist`` requires in this environment (no extras)."""
    from packaging.requirements import Requirement

    names = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        names.append(canonical(req.name))
    return names


def closure(roots: tuple[str, ...], skip: tuple[str, ...]) -> list[metadata.Distribution]:
    """Installed distributions reachable from ``roots`` by requirements, without ``skip``'s closure."""
    skipped: set[str] = set()
    todo = [canonical(s) for s in skip]
    while todo:  # torch's own requirements are on the GPU machine with it
        name = todo.pop()
        if name in skipped:
            continue
        skipped.add(name)
        try:
            todo += requirement_names(metadata.distribution(name))
        except metadata.PackageNotFoundError:
            pass
    found: dict[str, metadata.Distribution] = {}
    todo = [canonical(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in found or name in skipped:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"gpu_pack: {name} is not installed in {sys.prefix}; run it with the project's .venv/bin/python")
        found[name] = dist
        todo += requirement_names(dist)
    return [found[k] for k in sorted(found)]


def wheel_tag(dist: metadata.Distribution) -> str:
    """The first ``Tag:`` of the distribution's WHEEL file (e.g. ``py3-none-any``)."""
    text = dist.read_text("WHEEL") or ""
    for line in text.splitlines():
        if line.startswith("Tag:"):
            return line.split(":", 1)[1].strip()
    return "py3-none-any"


def pack(dist: metadata.Distribution, out: Path) -> Path:
    """Write ``dist``'s installed files (no bytecode, no scripts outside site-packages) as a wheel."""
    name = dist.metadata["Name"].replace("-", "_")
    version = dist.version
    path = out / f"{name}-{version}-{wheel_tag(dist)}.whl"
    site = Path(str(dist.locate_file("")))
    records = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for file in dist.files or []:
            rel = file.as_posix()
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc") or rel.endswith("/RECORD"):
                continue  # scripts in bin/, bytecode (rebuilt on import), the old RECORD
            data = (site / rel).read_bytes()
            zf.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{rel},sha256={digest},{len(data)}")
        # the installed dist-info folder's own spelling (pyyaml-6.0.3, not PyYAML-6.0.3): a second,
        # RECORD-only folder would hide the METADATA from importlib.metadata (version None)
        info = next((f.parent.as_posix() for f in dist.files or [] if f.name == "METADATA"
                     and f.parent.name.endswith(".dist-info")), f"{name}-{version}.dist-info")
        record = f"{info}/RECORD"
        records.append(f"{record},,")
        zf.writestr(record, "\n".join(records) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "build" / "gpu_wheels"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    dists = closure(ROOTS, ON_THE_GPU_MACHINE)
    total = 0
    for dist in dists:
        path = pack(dist, out)
        total += path.stat().st_size
        print(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB")
    (out / "PACK.json").write_text(json.dumps({
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "platform": platform.machine(), "system": platform.system(),
        "wheels": sorted(p.name for p in out.glob("*.whl")),
    }, indent=1))
    print(f"gpu_pack_total_mib: {total / 2**20:.1f}")
    if total / 2**20 > LIMIT_MB:
        print(f"gpu_pack: {total / 2**20:.1f} MiB is more than the {LIMIT_MB:.0f} MiB a run can carry", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
