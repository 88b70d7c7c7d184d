"""The GPU suite: the fit and the editing step on one H100/H200, one ``name: value`` line per figure.

Run it through ``bench/gpu_suite.sh`` (which makes the carried packages importable first; the
procedure is at the top of that script and in docs/RESULTS.md, "GPU suite: how to run").

Figures:
  gpu_fit_seconds_to_30db        optimisation seconds until the held-out PSNR of a fit on the
                                 synthetic sphere capture (backend/data/synthetic_capture.py) at
                                 256 px first reaches 30 dB, measured every ``--eval-every`` steps
                                 (evaluation time excluded); ``inf`` if ``--fit-max-steps`` ran out
  gpu_fit_steps_to_30db, gpu_fit_heldout_psnr_db   the step it happened at, the PSNR it measured
  gpu_edit_step_ms_METHOD        median ms of one editing step at 512 px on the full-size SD 2.1-base
                                 UNet + VAE (+ depth ControlNet for PIVA) built from config with
                                 random weights (bench/edit_step.py: same FLOPs as trained weights)
  gpu_edit_step_tflops_METHOD    achieved TFLOP/s: FlopCounterMode's count of the step / its time
  gpu_peak_mem_gb_METHOD         torch.cuda.max_memory_allocated during the step (weights included)
  gpu_edit_seconds_1000_steps_piva   EXTRAPOLATED: 1000 x PIVA's median step time (the diffusion part
                                 of the edit loop; the field's render, a small share, is not in it)
  gpu_suite_seconds              wall time of the whole suite

``--cpu-tiny`` runs the same code on the CPU at toy sizes (a 32 px capture, a 20 dB target, the
tiny diffusion model of backend/diffusion/tiny.py at 32 px, 1 timed step): it proves the suite
works, its figures mean nothing. The CUDA run uses bf16 weights under bf16 autocast (LoRA adapters,
their Adam state, predictions and losses stay float32: backend/diffusion/lora.py, model.py),
channels-last UNet / ControlNet / VAE, and SDPA attention (memory mode ``fast``,
backend/diffusion/memory.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHOD_NAMES = ("sds", "dds", "pds", "ssd", "piva")
"""Every editing method of the project (contract.layout.METHODS), in print order."""
NEEDED = ("numpy", "PIL", "safetensors", "diffusers", "peft", "huggingface_hub", "accelerate", "nerfacc")
"""Packages besides torch that the suite imports (bench/gpu_suite.sh carries them)."""


@dataclass
class SuiteConfig:
    """Sizes of one run: the GPU figures, or the CPU smoke run (``--cpu-tiny``)."""

    device: str
    """``cuda`` or ``cpu``."""
    fit_resolution: int
    """Pixels per side of the synthetic capture."""
    fit_views: int
    """Training views of the capture (8 more are held out)."""
    target_db: float
    """Held-out PSNR the fit must reach."""
    fit_max_steps: int
    """Steps after which the fit gives up (the figure is then ``inf``)."""
    eval_every: int
    """Steps between held-out evaluations."""
    rays_per_batch: int
    """Rays of one fit step."""
    edit_resolution: int
    """Side of the rendered image [1, 3, R, R] fed to the editing step."""
    edit_reps: int
    """Timed editing steps per method after the counted warm-up."""
    tiny_model: bool
    """Use the tiny diffusion model instead of SD 2.1-base built from config."""


GPU = SuiteConfig("cuda", 256, 40, 30.0, 3000, 100, 1 << 14, 512, 10, False)
CPU_TINY = SuiteConfig("cpu", 32, 12, 20.0, 100, 25, 512, 32, 1, True)


def check_imports() -> None:
    """Fail early, naming what is missing and how to carry it (bench/gpu_suite.sh)."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(
            f"gpu_suite: missing Python packages {', '.join(missing)} (sys.path: {sys.path[:4]} ...). "
            "On this machine, run `.venv/bin/python bench/gpu_pack.py` and carry build/gpu_wheels "
            "(run tool: carry=['build/gpu_wheels']); bench/gpu_suite.sh installs them offline"
        )


def load_edit_step() -> ModuleType:
    """bench/edit_step.py as a module (the benchmark's model builders and step loop are reused)."""
    spec = importlib.util.spec_from_file_location("bench_edit_step", ROOT / "bench" / "edit_step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the fit ----------------------------------------------------------------------------------
def fit_to_target(cfg: SuiteConfig, work: Path, seed: int = 0) -> dict[str, float]:
    """Fit on a synthetic sphere capture until the held-out PSNR reaches ``cfg.target_db``.

    Uses the trainer's own setup, step and evaluation (backend/reconstruct/trainer.py), so the
    figure is the production fit's; only the stop rule (a PSNR, not a step count) is the suite's.
    """
    from backend.data.capture_dataset import load_capture
    from backend.data.synthetic_capture import write_sphere_capture
    from backend.reconstruct import trainer
    from blender_piva import contract

    device = torch.device(cfg.device)
    write_sphere_capture(work / "capture", num_train=cfg.fit_views, num_eval=8, resolution=cfg.fit_resolution, seed=seed)
    dataset = load_capture(work / "capture")
    settings = contract.ReconstructSettings(steps=cfg.fit_max_steps, rays_per_batch=cfg.rays_per_batch)
    config = trainer.TrainerConfig()
    field_config = config.field or (
        trainer.NGPFieldConfig() if device.type == "cuda" else trainer.NGPFieldConfig.cpu_preset()
    )
    field_config = dataclasses.replace(field_config, aabb=dataset.aabb.tolist())
    make_sampler = trainer.make_sampler
    if device.type == "cuda" and os.environ.get("PIVA_GPU_NERFACC") != "1":
        # nerfacc's CUDA kernels are compiled on first use (nvcc + ninja, minutes), which a bare
        # machine lacks: use the pure-PyTorch twins (backend/render: the same occupancy skipping and
        # weights) on CUDA too. PIVA_GPU_NERFACC=1 uses nerfacc where its kernels are installed.
        from backend.render import volume
        from backend.render.samplers import StratifiedSampler
        from backend.render.weights import render_weight_from_density_torch

        def twin_weights(samples, sigmas):  # (RaySamples, [M]) -> [M], as render_weights
            return render_weight_from_density_torch(
                samples.t_starts, samples.t_ends, sigmas, samples.ray_indices, samples.n_rays)[0]

        trainer.make_sampler = lambda aabb, n, dev, **kw: StratifiedSampler(aabb, n, **kw).to(dev)
        volume.render_weights = twin_weights  # for this process only: the suite runs nothing else
    try:
        state = trainer._setup(field_config, settings, config, device, seed)
    finally:
        trainer.make_sampler = make_sampler
    print(f"  fit sampler: {type(state.sampler).__name__}", file=sys.stderr)
    rays = trainer.TrainingRays.from_capture(dataset, device)
    heldout = dataset.eval if dataset.eval is not None else dataset.train
    seconds, psnr = 0.0, float("nan")
    while state.step < cfg.fit_max_steps:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(cfg.eval_every):
            trainer._step(state, rays, settings, config)
        _sync(device)
        seconds += time.perf_counter() - t0  # evaluation below is not part of the fit's time
        state.field.eval()
        psnr = trainer.evaluate(state.field, heldout, rays.box_size, state.sampler, config.eval_views)["heldout_psnr_db"]
        print(f"  fit step {state.step}: {seconds:.1f} s, held-out {psnr:.2f} dB", file=sys.stderr, flush=True)
        if psnr >= cfg.target_db:
            return {"seconds": seconds, "steps": float(state.step), "psnr": psnr}
    return {"seconds": math.inf, "steps": float(state.step), "psnr": psnr}


# -- the editing step -------------------------------------------------------------------------
def build_model(cfg: SuiteConfig, edit_step: ModuleType, work: Path):  # -> DiffusionModel
    """SD 2.1-base from config (bf16, channels-last, SDPA) on CUDA; the tiny model with the CPU run."""
    from backend.diffusion.memory import apply_memory_mode
    from backend.diffusion.model import DiffusionModel

    device = torch.device(cfg.device)
    if cfg.tiny_model:
        from backend.diffusion.tiny import save_tiny_model

        folder = save_tiny_model(work / "tiny")
        model = DiffusionModel.load(str(folder), controlnet=str(folder / "controlnet"), device=device, dtype=torch.float32)
    else:
        model = edit_step.build_sd21_base(device, torch.bfloat16, controlnet=True)
    for name in ("unet", "controlnet", "vae"):
        module = getattr(model, name, None)
        if module is not None:
            # channels-last: cuDNN's convolutions run NHWC natively on tensor cores (no transposes)
            module.to(memory_format=torch.channels_last)
    for line in apply_memory_mode(model, "fast"):
        print(f"  {line}", file=sys.stderr)
    return model


def edit_figures(cfg: SuiteConfig, edit_step: ModuleType, model) -> dict[str, dict[str, float]]:
    """bench/edit_step.py's side-by-side loop over every method, each step under bf16 autocast on CUDA."""
    base = edit_step.MethodBench

    class AutocastBench(base):  # type: ignore[misc, valid-type]
        """The edit_step bench with its step under bf16 autocast (matmuls of the fp32 adapters in bf16)."""

        def step(self, i: int) -> None:
            use = self.model.device.type == "cuda"
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use else contextlib.nullcontext()
            with ctx:
                super().step(i)

    # bench_methods builds its benches from the module's MethodBench: swap in the autocast one for
    # this call (reusing the loop, the FLOP counting and the memory figures as they are).
    edit_step.MethodBench = AutocastBench
    try:
        return edit_step.bench_methods(list(METHOD_NAMES), model, cfg.edit_resolution, cfg.edit_reps)
    finally:
        edit_step.MethodBench = base


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(cfg: SuiteConfig, work: Path) -> dict[str, float]:
    """Every figure of the module docstring, by name."""
    check_imports()
    t0 = time.perf_counter()
    if cfg.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the fit's fp32 matmuls (the field's MLPs)
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: pick the fastest kernels once
    out: dict[str, float] = {}
    fit = fit_to_target(cfg, work)
    out["gpu_fit_seconds_to_30db"] = fit["seconds"]
    out["gpu_fit_steps_to_30db"] = fit["steps"]
    out["gpu_fit_heldout_psnr_db"] = fit["psnr"]
    edit_step = load_edit_step()
    model = build_model(cfg, edit_step, work)
    figures = edit_figures(cfg, edit_step, model)
    for name in METHOD_NAMES:
        f = figures[name]
        out[f"gpu_edit_step_ms_{name}"] = f["ms"]
        out[f"gpu_edit_step_tflops_{name}"] = f["tflops_per_s"]
        out[f"gpu_edit_step_tflop_{name}"] = f["tflop"]
        # CUDA: max allocated with the weights; CPU: the step's RSS growth (edit_step.PeakMemory)
        out[f"gpu_peak_mem_gb_{name}"] = f["peak_mb"] / 1024.0
    # Extrapolated, not measured: 1000 x the median step (see the module docstring).
    out["gpu_edit_seconds_1000_steps_piva"] = 1000 * figures["piva"]["ms"] / 1000.0  # steps x ms / (ms per s)
    out["gpu_suite_seconds"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-tiny", action="store_true", help="toy sizes on the CPU: proves the suite runs")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--fit-max-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (--cpu-tiny)")
    args = parser.parse_args(argv)
    cfg = CPU_TINY if args.cpu_tiny else GPU
    if args.fit_max_steps:
        cfg = dataclasses.replace(cfg, fit_max_steps=args.fit_max_steps)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        parser.error("torch sees no CUDA device: run on the GPU machine, or pass --cpu-tiny")
    if cfg.device == "cpu":
        torch.set_num_threads(args.threads)
    print(f"gpu_suite_device: {torch.cuda.get_device_name() if cfg.device == 'cuda' else 'cpu (tiny sizes)'}")
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="piva_gpu_")))
        figures = run(cfg, work)
    for name, value in figures.items():
        print(f"{name}: {value:.4g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
