#!/usr/bin/env bash
# The GPU suite (bench/gpu_suite.py): fit to 30 dB, one editing step of every method at 512 px on
# SD 2.1-base built from config, TFLOP/s, peak memory; one `name: value` per line, < 8 min on one
# H100/H200.
#
# HOW TO RUN (the GPU machine has torch and no network; it gets a copy of the working tree plus at
# most 64 MiB of carried git-ignored paths):
#   1. Here, once per change of requirements.txt: pack the packages the suite needs besides torch
#      from the project's .venv into wheels, offline (~60 MiB, printed as gpu_pack_total_mib):
#          .venv/bin/python bench/gpu_pack.py            # -> build/gpu_wheels/*.whl + PACK.json
#   2. Run it there, carrying the wheels (run tool: carry=["build/gpu_wheels"], timeout_s=600):
#          bash bench/gpu_suite.sh
#      The script unpacks every wheel into a temporary folder (Python's zipfile: no pip, no index,
#      no network) and puts it first on PYTHONPATH, then runs bench/gpu_suite.py with the machine's
#      python (PYTHON=... to choose). The binary wheels (numpy, Pillow, safetensors, ...) are for the
#      Python of PACK.json: if the GPU machine's differs, the script says so; then pack with a .venv
#      of that Python, or install those few from the machine's own packages.
#   Without build/gpu_wheels it runs with what the python already has (PIVA_GPU_SITE=DIR adds a
#   folder of installed packages instead) and stops with the list of missing packages if any.
#   3. Here, without a GPU, to know it works: bash bench/gpu_suite.sh --cpu-tiny (toy sizes, same
#      code; tests/backend/test_bench_gpu_suite.py runs it, marked slow).
# Arguments after the script's own are passed to bench/gpu_suite.py (--cpu-tiny, --work DIR, ...).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3 || command -v python)"; fi
fi
WHEELS="${PIVA_GPU_WHEELS:-$ROOT/build/gpu_wheels}"
EXTRA=""
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  SITE="$(mktemp -d "${TMPDIR:-/tmp}/piva_gpu_site.XXXXXX")"
  trap 'rm -rf "$SITE"' EXIT
  "$PYTHON" - "$WHEELS" "$SITE" <<'EOF'
import json, sys, zipfile
from pathlib import Path
wheels, site = Path(sys.argv[1]), Path(sys.argv[2])
pack = wheels / "PACK.json"
if pack.is_file():
    want = json.loads(pack.read_text())["python"]
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if want != have:
        print(f"gpu_suite.sh: the wheels were packed for Python {want}, this is {have}: binary ones "
              "(numpy, Pillow, ...) will not import; pack them with a .venv of Python " + have, file=sys.stderr)
for whl in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(site)  # a wheel is a zip of site-packages content (purelib and platlib)
print(f"gpu_suite.sh: unpacked {len(list(wheels.glob('*.whl')))} wheels from {wheels}", file=sys.stderr)
EOF
  EXTRA="$SITE"
elif [[ -n "${PIVA_GPU_SITE:-}" ]]; then
  EXTRA="$PIVA_GPU_SITE"
fi
export PYTHONPATH="${EXTRA:+$EXTRA:}$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# the suite itself ends in < 8 min on one H100/H200; the timeout only stops a hung run
status=0
timeout "${PIVA_GPU_TIMEOUT:-570}" "$PYTHON" "$ROOT/bench/gpu_suite.py" "$@" || status=$?
exit "$status"  # not exec: the EXIT trap removes the unpacked packages
