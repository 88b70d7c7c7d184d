"""Front-to-back pruning of the CPU sampler (``StratifiedSampler._prune``): seconds and densities.

Every render of the fit and of the edit first finds, with no-grad density passes, the samples that
can contribute (transmittance >= eps, alpha >= threshold); on the CPU that pass was a third of an
edit step. This bench renders 64 px views from the edit's camera distribution of an opaque object
(the analytic box of the export tests, or ``--field DIR``, a saved field such as a job's
``reconstruction/field``), with the edit's sampler (96 samples per ray, occupancy grid filled from
every cell), and prints for the reference pass (every sample's density at once) and for each first
chunk ``K``:

* ``sample_ms_reference``, ``sample_ms_chunk_K``: median milliseconds per view of the whole
  ``sample`` call (the comb, the occupancy grid and the pruning; only the pruning differs);
* ``prune_densities_reference``, ``prune_densities_chunk_K``: densities evaluated per view;
* ``prune_same_samples_chunk_K``: 1 when the kept samples equal the reference's exactly.

    .venv/bin/python bench/prune.py [--field DIR] [--views 20] [--chunks 1 2 4 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backend.edit3d import edit_samplers, sample_camera  # noqa: E402
from backend.export.analytic import BoxField  # noqa: E402
from backend.render.rays import generate_rays  # noqa: E402
from blender_piva.contract import CaptureSettings  # noqa: E402


class AnalyticBox(torch.nn.Module):
    """The export tests' box as a field with an aabb (what ``edit_samplers`` needs)."""

    def __init__(self) -> None:
        super().__init__()
        self.box = BoxField()
        self.register_buffer("aabb", torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))

    def density(self, x: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N]
        return self.box.density(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", type=Path, default=None, help="a saved field folder (default: the analytic box)")
    parser.add_argument("--views", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all variants, rotated")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    if args.field is not None:
        from backend.field.ngp_field import load_field

        field = load_field(args.field, device=device).eval().requires_grad_(False)
    else:
        field = AnalyticBox()
    sampler, _ = edit_samplers(field, device, seed=0)
    generator = torch.Generator().manual_seed(0)
    rays = []
    for _ in range(args.views):
        camera = sample_camera(CaptureSettings(), args.resolution, generator, device)
        o, d = generate_rays(camera.c2w, camera.intrinsics)
        rays.append((o.reshape(-1, 3), d.reshape(-1, 3)))

    counted = [0]

    def density(x: torch.Tensor) -> torch.Tensor:
        counted[0] += x.shape[0]
        return field.density(x)

    variants = [0, *args.chunks]  # 0: the reference pass
    seconds: dict[int, list[float]] = {v: [] for v in variants}
    densities: dict[int, int] = {}
    kept: dict[int, list] = {}
    with torch.no_grad():
        for repeat in range(args.repeats):
            order = variants[repeat % len(variants):] + variants[: repeat % len(variants)]
            for chunk in order:
                sampler.prune_chunk = chunk
                counted[0] = 0
                out = []
                started = time.perf_counter()
                for o, d in rays:
                    out.append(sampler.sample(o, d, sigma_fn=density))
                seconds[chunk].append((time.perf_counter() - started) / len(rays))
                densities[chunk] = counted[0] // len(rays)
                kept[chunk] = out
    for chunk in variants:
        name = "reference" if chunk == 0 else f"chunk_{chunk}"
        print(f"sample_ms_{name}: {1000 * statistics.median(seconds[chunk]):.1f}")
        print(f"prune_densities_{name}: {densities[chunk]}")
        if chunk:
            same = all(torch.equal(a.t_starts, b.t_starts) and torch.equal(a.ray_indices, b.ray_indices)
                       for a, b in zip(kept[chunk], kept[0]))
            print(f"prune_same_samples_{name}: {int(same)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
