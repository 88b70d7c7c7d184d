"""bench/gpu_suite.sh --cpu-tiny: the GPU suite's code runs end to end (toy sizes on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ..script_modules import ROOT, load_script

FIGURES = ["gpu_fit_seconds_to_30db", "gpu_edit_seconds_1000_steps_piva"] + [
    f"{prefix}_{m}" for m in ("sds", "dds", "pds", "ssd", "piva")
    for prefix in ("gpu_edit_step_ms", "gpu_edit_step_tflops", "gpu_peak_mem_gb")
]


def _load_pack():
    return load_script("bench/gpu_pack.py", "bench_gpu_pack")


def test_pack_closure_has_the_suites_packages_and_not_torch():
    pack = _load_pack()
    names = {pack.canonical(d.metadata["Name"]) for d in pack.closure(pack.ROOTS, pack.ON_THE_GPU_MACHINE)}
    assert {"diffusers", "peft", "transformers", "safetensors", "numpy", "pillow", "huggingface-hub", "nerfacc"} <= names
    assert not names & {"torch", "sympy", "networkx", "jinja2", "filelock", "fsspec"}  # on the GPU machine


@pytest.mark.slow  # ~2-10 min on 2 shared cores: a fit and five methods' steps, even at toy sizes
def test_cpu_tiny_suite_prints_every_figure(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PIVA_GPU_WHEELS": str(tmp_path / "no_wheels")}
    out = subprocess.run(["bash", str(ROOT / "bench" / "gpu_suite.sh"), "--cpu-tiny", "--work", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    for name in FIGURES:
        assert name in lines, name
        assert float(lines[name]) > 0, (name, lines[name])
