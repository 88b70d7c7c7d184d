"""Time and peak memory of ONE editing step of every method on a full-size SD 2.1-base model.

The UNet, the VAE and (for PIVA) a depth ControlNet are built from the SD 2.1-base configs with
random weights (nothing is downloaded; random weights cost exactly what trained ones cost). No
CLIP text encoder is built: the prompt embeddings are random [1, 77, 1024] tensors placed in
``DiffusionModel._prompt_cache``, which ``encode_prompt`` reads first.

One step is what the 2D/3D edit loop runs (``backend/edit3d.py``): a differentiable image
[1, 3, R, R] (a leaf standing in for the render) -> ``model.encode_images`` -> ``method.step`` ->
``loss.backward()``, with the source image encoded under ``no_grad``. PIVA trains its two LoRA
adapters inside the step and runs them on the ControlNet path with a depth image (appendix D.1);
the other methods ignore the control input (their calls never run the ControlNet).

All methods run in ONE process on ONE model (built once, with the ControlNet when a method uses
it), side by side: every method's warm-up step (counted with
``torch.utils.flop_counter.FlopCounterMode``), then ``--reps`` rounds of one timed step of each
method, the order rotated every round, so the slow phases of a shared machine hit all methods
alike. The memory figures stay per method: the peak is reset before each timed step. PIVA's
adapters sit on the UNet during the other methods' steps, switched off (peft then calls the base
layer directly, after a flag check per LoRA layer).

Printed per method:
  edit_step_ms_METHOD            median wall time of one step (ms)
  edit_step_peak_mb_METHOD       CPU: the largest, over the method's timed steps, peak RSS
                                 during the step minus the RSS just before it (activations and
                                 temporaries; Linux VmHWM reset before each timed step, free heap
                                 trimmed first so its reuse counts).
                                 CUDA: torch.cuda.max_memory_allocated (weights included).
  edit_step_base_mb_METHOD       memory held before the method's first timed step (CPU RSS incl.
                                 the Python process / CUDA memory_allocated): the shared model's
                                 weights (the ControlNet included when PIVA runs), the adapters
                                 and their Adam state
  edit_step_tflop_METHOD         matmul/conv/attention TFLOP of one step (forward + backward),
                                 torch's FlopCounterMode formulas (CPU fused attention added)
  edit_step_tflops_per_s_METHOD  achieved rate, tflop / time
  CUDA only:
  edit_step_floor_ms_METHOD      tflop at the ~790 TFLOP/s bf16 an H100 measures
                                 (/work/shared/notes/performance.md: the physical floor)
  edit_step_x_floor_METHOD       measured / floor
and edit_step_seconds (wall time of all warm-ups and rounds), and, when both ran:
edit_step_ratio_piva_dds = ms_piva / ms_dds (goal <= 1.8, the FLOP ratio is
about 1.67), edit_step_tflop_ratio_piva_dds. ``--unbatched`` also times ``piva_unbatched`` (PIVA
with one model call per adapter, ``backend.editing.piva.PIVAUnbatched``, the code before the
batching) on ``piva``'s own adapters, alternating with it: edit_step_ratio_piva_unbatched_dds
and edit_step_speedup_piva = ms_piva_unbatched / ms_piva. ``--separate`` times ``piva_separate``
(``fused_call="separate"``: three calls a step, as before the fused call that ``auto`` picks on the
CPU) the same way: edit_step_ratio_piva_separate_dds and edit_step_speedup_piva_fused =
ms_piva_separate / ms_piva.

    .venv/bin/python bench/edit_step.py                 # CPU, 64x64 renders, 2 threads (~5 min)
    .venv/bin/python bench/edit_step.py --device cuda   # 512x512, bfloat16
    [--methods sds dds pds ssd piva] [--unbatched] [--resolution R] [--reps N]
    [--dtype float32|bfloat16|float16]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.diffusion.model import DiffusionModel  # noqa: E402
from backend.editing.base import MethodInputs  # noqa: E402
from backend.editing.base import EditMethod  # noqa: E402
from backend.editing.piva import PIVA, PIVAUnbatched  # noqa: E402
from backend.editing.registry import METHODS, build_config, build_method  # noqa: E402
from blender_piva.contract import EditSettings  # noqa: E402

H100_BF16_TFLOPS = 790.0
"""Dense bf16 matmul rate an H100 measures here (performance.md); the floor divides by it."""
PROMPTS = ("", "a photo of a cat", "a photo of a tiger")
"""Empty (CFG's null), source and target prompt: keys of the random embedding cache."""
TOKENS, TEXT_WIDTH = 77, 1024
"""SD 2.x prompt embeddings: 77 OpenCLIP-H tokens of width 1024."""
SCALING_FACTOR = 0.18215
"""SD VAE latent scaling."""
CONTROL_METHODS = ("piva", "piva_unbatched", "piva_separate")
"""Methods that use the depth ControlNet in 3D (appendix D.1); the others ignore ``control``."""
REFERENCES: dict[str, tuple[str, type[EditMethod], dict[str, Any]]] = {
    "piva_unbatched": ("piva", PIVAUnbatched, {}),
    "piva_separate": ("piva", PIVA, {"fused_call": "separate"}),
}
"""Reference paths timed with ``--unbatched`` / ``--separate``: name -> (method whose config and
adapters they take, class, config changes)."""


# -- the model --------------------------------------------------------------------------------
def build_sd21_modules(*, controlnet: bool) -> tuple[Any, Any, Any]:
    """SD 2.1-base UNet, VAE and (or None) depth ControlNet from their configs, float32, random.

    Built on the current default device (wrap in ``with torch.device(...)``; ``meta`` builds the
    shapes alone, as the test does).
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=TEXT_WIDTH,
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=SCALING_FACTOR,
    )
    # the SD 2.x depth ControlNet (thibaud/controlnet-sd21-depth-diffusers) copies the UNet's encoder
    cnet = ControlNetModel.from_unet(unet) if controlnet else None
    return unet, vae, cnet


def build_sd21_base(device: torch.device, dtype: torch.dtype, *, controlnet: bool, seed: int = 0) -> DiffusionModel:
    """A frozen :class:`DiffusionModel` of SD 2.1-base with random weights and cached random prompts."""
    from diffusers import DDPMScheduler
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    torch.manual_seed(seed)
    with torch.device(device):  # initialise in place: no 3.5 GB host copy of the UNet on CUDA
        unet, vae, cnet = build_sd21_modules(controlnet=controlnet)
    for module in (unet, vae, cnet):
        if module is not None:
            module.requires_grad_(False).eval()
            if dtype != torch.float32:
                module.to(dtype=dtype)  # SD 2.1 keeps no module in fp32 (diffusers warns needlessly)
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    model = DiffusionModel(
        unet=unet,
        text_encoder=None,  # never called: every prompt used below is in the cache
        tokenizer=None,
        alphas_cumprod=scheduler.alphas_cumprod.to(device=device, dtype=torch.float32),
        prediction_type="epsilon",
        device=device,
        dtype=dtype,
        vae=vae,
        controlnet=cnet,
        scaling_factor=SCALING_FACTOR,
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    for text in PROMPTS:
        model._prompt_cache[text] = torch.randn(1, TOKENS, TEXT_WIDTH, generator=generator, device=device).to(dtype)
    return model


# -- memory -----------------------------------------------------------------------------------
def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"/proc/self/status has no {key} line")


def _malloc_trim() -> None:
    """Return glibc's free heap pages to the OS (no-op with another C library)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the RSS base may include some freed heap, the peak delta reads low


class PeakMemory:
    """Peak memory over a block: CUDA allocator stats, or Linux RSS high-water mark (VmHWM)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base_mb = 0.0

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return
        _malloc_trim()  # freed heap pages would otherwise be reused unseen by the RSS
        try:
            # "5" resets the RSS high-water mark to the current RSS (Linux >= 4.0, proc(5))
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
        except OSError as exc:
            raise RuntimeError(
                f"cannot reset the peak RSS ({exc}); the CPU memory figure needs Linux /proc/self/clear_refs"
            ) from exc
        self.base_mb = _proc_status_mb("VmRSS")

    def peak_mb(self) -> float:
        """CUDA: max allocated (weights included). CPU: peak RSS minus the RSS at :meth:`start`."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return _proc_status_mb("VmHWM") - self.base_mb


def _cpu_attention_flops() -> dict[Any, Any]:
    """FLOP formulas of the CPU's fused attention, which FlopCounterMode does not know (it counts 0).

    Same formulas torch uses for the CUDA flash/efficient kernels.
    """
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(q, k, v, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:  # shapes [B, H, N, d]
        return sdpa_flop_count(q, k, v)

    def backward(grad_out, q, k, v, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return sdpa_backward_flop_count(grad_out, q, k, v)

    return {
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }


# -- one method (worker process) --------------------------------------------------------------
class MethodBench:
    """One method on the shared model: its inputs, its counted warm-up step, its timed steps.

    Renders are [1, 3, resolution, resolution]; PIVA gets a depth control image when the model has a
    ControlNet. ``piva_unbatched`` is the reference view on a ``piva`` bench's own adapters
    (``PIVAUnbatched.beside``): the two paths then alternate on one UNet, step by step.
    """

    def __init__(self, name: str, model: DiffusionModel, resolution: int, *, beside: "MethodBench | None" = None) -> None:
        self.name = name
        self.model = model
        device = model.device
        use_control = name in CONTROL_METHODS and model.controlnet is not None
        if name in REFERENCES:
            of, cls, changes = REFERENCES[name]
            if beside is not None:
                self.method: EditMethod = cls.beside(beside.method, **changes)
            else:
                self.method = cls(dataclasses.replace(build_config(of, EditSettings(method=of)), **changes), model)
        else:
            self.method = build_method(name, model, EditSettings(method=name))
        self.owns_method = beside is None  # a view on another bench's adapters must not remove them
        self.generator = torch.Generator(device=device).manual_seed(0)
        R, g = resolution, self.generator
        self.image = torch.rand(1, 3, R, R, generator=g, device=device).requires_grad_(True)  # the render
        self.source_image = torch.rand(1, 3, R, R, generator=g, device=device)  # the original's render
        self.control = torch.rand(1, 3, R, R, generator=g, device=device) if use_control else None  # depth
        self.conds = tuple(model.encode_prompt(p) for p in PROMPTS)  # null, source, target
        self.times: list[float] = []
        self.peaks: list[float] = []
        self.bases: list[float] = []
        self.tflop = 0.0

    def step(self, i: int) -> None:
        """One editing step as the edit loop runs it (encode, method step, backward)."""
        model = self.model
        cond_null, cond_src, cond_tgt = self.conds
        with torch.no_grad():
            source = model.encode_images(self.source_image)
        x = model.encode_images(self.image)
        result = self.method.step(
            MethodInputs(
                x=x, cond_src=cond_src, cond_tgt=cond_tgt, cond_null=cond_null, step=i, total_steps=1000,
                source=source, control=self.control, source_control=self.control, generator=self.generator,
            )
        )
        self.image.grad = None
        result.loss.backward()
        if self.image.grad is None or not bool(torch.isfinite(self.image.grad).all()):
            raise RuntimeError(f"{self.name}: the step left no finite gradient on the image")

    def _sync(self) -> None:
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)

    def warm_up(self) -> None:
        """Step 0, counted: first-call allocations, library code pages, Adam state, kernel selection."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops())
        with counter:
            self.step(0)
        self._sync()
        self.tflop = counter.get_total_flops() / 1e12

    def timed_step(self, i: int) -> None:
        """Step ``i``, timed, with its own peak memory (reset just before it: after the warm-up the
        delta holds no one-time cost, and the trim makes freed heap that the step reuses count)."""
        memory = PeakMemory(self.model.device)
        memory.start()
        self._sync()
        t0 = time.perf_counter()
        self.step(i)
        self._sync()
        self.times.append(time.perf_counter() - t0)
        self.peaks.append(memory.peak_mb())
        self.bases.append(memory.base_mb)

    def figures(self) -> dict[str, float]:
        """The figures named in the module docstring (without prefix and method name)."""
        ms = statistics.median(self.times) * 1000.0
        figures = {
            "ms": ms, "peak_mb": max(self.peaks), "base_mb": self.bases[0], "tflop": self.tflop,
            "tflops_per_s": self.tflop / (ms / 1000.0),
        }
        if self.model.device.type == "cuda":
            floor_ms = self.tflop / H100_BF16_TFLOPS * 1000.0
            figures.update({"floor_ms": floor_ms, "x_floor": ms / floor_ms})
        return figures

    def close(self) -> None:
        if self.owns_method:
            self.method.close()  # the next method on this model must find no adapters


def bench_methods(names: list[str], model: DiffusionModel, resolution: int, reps: int) -> dict[str, dict[str, float]]:
    """Every method of ``names`` on ``model``: all warm-ups, then ``reps`` rounds of one timed step
    of each, the order rotated every round, so slow phases of a shared machine hit all methods alike.
    Returns name -> figures. ``piva_unbatched`` shares ``piva``'s adapters when both are listed.
    """
    benches: dict[str, MethodBench] = {}
    try:
        for name in names:
            beside = benches.get(REFERENCES[name][0]) if name in REFERENCES else None
            benches[name] = MethodBench(name, model, resolution, beside=beside)
        for bench in benches.values():
            bench.warm_up()
        for r in range(reps):
            for k in range(len(names)):
                benches[names[(r + k) % len(names)]].timed_step(r + 1)
        return {name: bench.figures() for name, bench in benches.items()}
    finally:
        for bench in reversed(list(benches.values())):
            bench.close()


def bench_method(name: str, model: DiffusionModel, resolution: int, reps: int) -> dict[str, float]:
    """One method alone: a counted warm-up step, then ``reps`` timed steps (figures as above)."""
    return bench_methods([name], model, resolution, reps)[name]


# -- driver -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--unbatched", action="store_true",
                        help="also time piva_unbatched (one model call per adapter: the code before batching)")
    parser.add_argument("--separate", action="store_true",
                        help="also time piva_separate (fused_call='separate': three calls a step, the CPU's before fusing)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="model dtype (default: float32 on the CPU, bfloat16 on CUDA)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="side R of the render [1, 3, R, R] (default: 64 on the CPU, 512 on CUDA)")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed steps after the warm-up (default: 3 CPU, 10 CUDA)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device; run on the GPU machine or use --device cpu")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    if not cuda and args.dtype == "float16":
        parser.error("float16 is not supported on the CPU; use float32 or bfloat16")
    args.resolution = args.resolution or (512 if cuda else 64)
    if args.resolution % 64:
        parser.error(f"--resolution must be a multiple of 64 (8x VAE, 8x UNet down-sampling), got {args.resolution}")
    args.reps = args.reps or (10 if cuda else 3)
    if (args.unbatched or args.separate) and "piva" not in args.methods:
        parser.error("--unbatched and --separate compare against piva: add piva to --methods")
    return args


def run_order(methods: list[str], unbatched: bool, separate: bool = False) -> list[str]:
    """The methods in the given order, piva's reference paths right after piva (side by side) when asked."""
    order: list[str] = []
    for name in methods:
        order.append(name)
        if name == "piva" and unbatched:
            order.append("piva_unbatched")
        if name == "piva" and separate:
            order.append("piva_separate")
    return order


def ratios(ms: dict[str, float], tflop: dict[str, float]) -> dict[str, float]:
    """The side-by-side figures of one run: PIVA (and its unbatched reference) over DDS."""
    out: dict[str, float] = {}
    if "piva" in ms and "dds" in ms:
        out["ratio_piva_dds"] = ms["piva"] / ms["dds"]
        out["tflop_ratio_piva_dds"] = tflop["piva"] / tflop["dds"]
    if "piva_unbatched" in ms and "dds" in ms:
        out["ratio_piva_unbatched_dds"] = ms["piva_unbatched"] / ms["dds"]
    if "piva_unbatched" in ms and "piva" in ms:
        out["speedup_piva"] = ms["piva_unbatched"] / ms["piva"]
    if "piva_separate" in ms and "dds" in ms:
        out["ratio_piva_separate_dds"] = ms["piva_separate"] / ms["dds"]
    if "piva_separate" in ms and "piva" in ms:
        out["speedup_piva_fused"] = ms["piva_separate"] / ms["piva"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    order = run_order(args.methods, args.unbatched, args.separate)
    print(f"edit_step_device: {args.device}")
    print(f"edit_step_dtype: {args.dtype}")
    print(f"edit_step_resolution: {args.resolution}")
    print(f"edit_step_latent: {args.resolution // 8}")
    print(f"edit_step_reps: {args.reps}")
    print(f"edit_step_threads: {args.threads}", flush=True)
    device = torch.device(args.device)
    # one model for all methods: the ControlNet is built when a method uses it (the others never call it)
    model = build_sd21_base(device, getattr(torch, args.dtype), controlnet=any(m in CONTROL_METHODS for m in order))
    t0 = time.perf_counter()
    figures = bench_methods(order, model, args.resolution, args.reps)
    print(f"edit_step_seconds: {time.perf_counter() - t0:.1f}", flush=True)
    for name in order:
        for key, value in figures[name].items():
            print(f"edit_step_{key}_{name}: {value:.4g}", flush=True)
    ms = {name: f["ms"] for name, f in figures.items()}
    tflop = {name: f["tflop"] for name, f in figures.items()}
    for key, value in ratios(ms, tflop).items():
        print(f"edit_step_{key}: {value:.3g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
