"""Each model call of a PIVA step timed on its own, on the full-size SD 2.1-base (+ depth ControlNet).

Why: ``bench/edit_step.py`` finds a PIVA step 4x a DDS step on the CPU while its FLOPs are 1.9x.
This splits the step into its calls and times each beside the same rows on the base model, so
what peft's mixed-adapter path adds (over the FLOPs) is measured, not guessed. Built as in
``bench/edit_step.py`` (random weights from the configs, random prompt embeddings), latents of a
``--resolution`` px image, ``--reps`` rounds with the order rotated every round; medians printed.

Printed (ms, median):
  call_ms_base_4rows            the DDS/PIVA base call: 4 rows, no adapter, ControlNet
  call_ms_base_2rows            2 rows, no adapter, ControlNet (what the adapter call costs in FLOPs)
  call_ms_psi_2rows             2 rows through one adapter (psi), ControlNet
  call_ms_mixed_2rows           psi's row and phi's row in one call (peft's mixed batch), ControlNet
  call_ms_base_2rows_train      2 rows, forward + backward to the adapters' weights, one adapter
  call_ms_mixed_2rows_train     the same through the mixed batch (PIVA's train_steps)
  call_ms_plain_4rows           4 rows, no adapter, no ControlNet (PIVA's eq.-9 base rows, as DDS's call)
  call_ms_fused_8rows_train     PIVA's fused call: those 4 base rows, psi's and phi's prediction rows
                                and their 2 training rows in one forward and backward pass, the
                                ControlNet on the 4 adapter rows only (``LoraPair.predict_rows_and_train``)
  piva_three_calls_ms           plain_4rows + mixed_2rows + mixed_2rows_train (PIVA's step unfused)
  fused_over_three_calls        call_ms_fused_8rows_train / piva_three_calls_ms
  mixed_over_base_2rows         call_ms_mixed_2rows / call_ms_base_2rows
  train_over_forward_2rows      call_ms_mixed_2rows_train / call_ms_mixed_2rows
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from edit_step import build_sd21_base  # noqa: E402  (the same model as the step benchmark)

from backend.diffusion.lora import SOURCE, TARGET, AdapterBatch, LoraPair, LoraSettings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=64, help="image px (latents are 1/8)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    model = build_sd21_base(device, torch.float32, controlnet=True)
    pair = LoraPair(model, LoraSettings())
    h = args.resolution // 8
    gen = torch.Generator().manual_seed(0)
    x = {n: torch.randn(n, 4, h, h, generator=gen) for n in (2, 4)}
    t = {n: torch.full((n,), 500, dtype=torch.long) for n in (2, 4)}
    cond = {n: torch.randn(n, 77, 1024, generator=gen) for n in (2, 4)}
    control = {n: torch.rand(n, 3, args.resolution, args.resolution, generator=gen) for n in (2, 4)}

    def base(n: int):
        def call():
            with torch.no_grad():
                model.predict_noise(x[n], t[n], cond[n], control=control[n])
        return call

    def psi():
        pair.predict(SOURCE, x[2], t[2], cond[2], control=control[2])

    def mixed():
        pair.predict_rows([SOURCE, TARGET], x[2], t[2], cond[2], control=control[2])

    def train_one():
        pair.train_step(SOURCE, x[2], cond[2], control=control[2], generator=torch.Generator().manual_seed(1))

    def train_mixed():
        pair.train_steps(
            [AdapterBatch(SOURCE, x[2][:1], cond[2][:1], control[2][:1]),
             AdapterBatch(TARGET, x[2][1:], cond[2][1:], control[2][1:])],
            generator=torch.Generator().manual_seed(1),
        )

    def plain4():
        with torch.no_grad():
            model.predict_noise(x[4], t[4], cond[4])

    def fused():
        pair.predict_rows_and_train(
            [None] * 4 + [SOURCE, TARGET], torch.cat([x[4], x[2]]), torch.cat([t[4], t[2]]), torch.cat([cond[4], cond[2]]),
            [AdapterBatch(SOURCE, x[2][:1], cond[2][:1], control[2][:1]),
             AdapterBatch(TARGET, x[2][1:], cond[2][1:], control[2][1:])],
            control=control[2], controlled=torch.tensor([False] * 4 + [True] * 2),
            generator=torch.Generator().manual_seed(1),
        )

    calls = {
        "plain_4rows": plain4, "fused_8rows_train": fused,
        "base_4rows": base(4), "base_2rows": base(2), "psi_2rows": psi, "mixed_2rows": mixed,
        "base_2rows_train": train_one, "mixed_2rows_train": train_mixed,
    }
    for call in calls.values():  # warm-up: allocator, oneDNN kernels
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - start) * 1000.0)
    ms = {name: statistics.median(v) for name, v in times.items()}
    for name, value in ms.items():
        print(f"call_ms_{name}: {value:.1f}")
    print(f"mixed_over_base_2rows: {ms['mixed_2rows'] / ms['base_2rows']:.3f}")
    three = ms["plain_4rows"] + ms["mixed_2rows"] + ms["mixed_2rows_train"]
    print(f"piva_three_calls_ms: {three:.1f}")
    print(f"fused_over_three_calls: {ms['fused_8rows_train'] / three:.3f}")
    print(f"train_over_forward_2rows: {ms['mixed_2rows_train'] / ms['mixed_2rows']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
