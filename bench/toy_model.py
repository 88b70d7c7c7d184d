"""How good the instrument is: the oracle, the toy model's autoencoder, and the model's prompt accuracy.

    .venv/bin/python bench/toy_model.py [--seeds 4] [--steps 30] [--guidance 5] [--model backend/models/toy]

Held-out data: toy_world.renders.ORACLE_HELD_OUT (capture seeds and an evaluation ring that
neither the diffusion model nor the oracle was trained on), rendered by the capture code into
``--work`` the first time (about a minute).

Prints:
  oracle_colour_accuracy, oracle_shape_accuracy   the oracle on every held-out view (goal >= 0.98)
  toy_vae_psnr_db                                  the VAE's reconstruction PSNR on them (goal >= 30)
  toy_model_colour_accuracy, toy_model_shape_accuracy
                                                   for every (colour, shape) prompt and ``--seeds``
                                                   seeds, the fraction of DDIM samples (CFG
                                                   ``--guidance``) the oracle names right (goal >= 0.9)
  toy_model_colour_accuracy_control, toy_model_shape_accuracy_control
                                                   the same with the depth ControlNet on a held-out
                                                   depth map of the prompt's shape (goal >= 0.95)
and writes the sample grid (rows: shapes, columns: colours; left without, right with ControlNet)
to ``--grid``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def held_out(work: Path) -> Path:
    """The held-out captures (rendered on first use)."""
    from toy_world import renders

    return renders.render_set(work / "oracle_held_out", renders.ORACLE_HELD_OUT, log=lambda m: print(m, flush=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "backend" / "models" / "toy")
    parser.add_argument("--oracle", type=Path, default=ROOT / "backend" / "models" / "toy_oracle")
    parser.add_argument("--seeds", type=int, default=4, help="samples per prompt")
    parser.add_argument("--steps", type=int, default=30, help="DDIM steps per sample")
    parser.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance of the samples")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "toy_model_bench")
    parser.add_argument("--grid", type=Path, default=ROOT / "docs" / "toy_samples.png")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    captures = held_out(args.work)

    import numpy as np
    import torch
    from PIL import Image

    import toy_world
    from backend.diffusion.model import DiffusionModel
    from backend.toy.components import ToyModelConfig
    from backend.toy.oracle import load_oracle
    from backend.toy.oracle_train import accuracy, load_labelled
    from backend.toy.train import image_grid, load_toy_dataset, sample_images

    torch.set_num_threads(args.threads)
    oracle = load_oracle(args.oracle)
    data = load_labelled(captures, oracle.config)
    color_ok, shape_ok = accuracy(oracle, data)
    print(f"oracle_colour_accuracy: {color_ok:.4f}")
    print(f"oracle_shape_accuracy: {shape_ok:.4f}")

    model = DiffusionModel.load(str(args.model), controlnet=str(args.model / "controlnet"), device=torch.device("cpu"),
                                dtype=torch.float32)
    with torch.no_grad():
        psnrs = []
        for chunk in data.images.split(128):
            recon = model.decode_latents(model.encode_images(chunk))
            mse = ((recon - chunk) ** 2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
            psnrs.append(-10.0 * torch.log10(mse))
        print(f"toy_vae_psnr_db: {torch.cat(psnrs).mean().item():.2f}")

    raw = json.loads((args.model / "training.json").read_text())["model"]
    config = ToyModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    prompts = [(c, s) for s in toy_world.SHAPES for c in toy_world.COLORS]
    # one held-out depth map per shape, from the evaluation ring (a view the ControlNet never saw)
    eval_views = load_toy_dataset(captures, split="eval")
    depth_of = {shape: eval_views.controls[next(i for i, p in enumerate(eval_views.prompts) if p.endswith(f" {shape}"))]
                for shape in toy_world.SHAPES}
    results = {}
    grids = []
    for use_control in (False, True):
        right_color = right_shape = total = 0
        images_by_seed = []
        for seed in range(args.seeds):
            texts = [toy_world.prompt(c, s) for c, s in prompts]
            control = torch.stack([depth_of[s] for _, s in prompts]) if use_control else None
            images = sample_images(model.vae, model.unet, model.text_encoder, model.tokenizer, texts, config,
                                   steps=args.steps, guidance_scale=args.guidance, seed=seed,
                                   controlnet=model.controlnet if use_control else None, control=control)
            colors, shapes = oracle.classify(images)
            right_color += sum(c == want[0] for c, want in zip(colors, prompts))
            right_shape += sum(s == want[1] for s, want in zip(shapes, prompts))
            total += len(prompts)
            images_by_seed.append(images)
        suffix = "_control" if use_control else ""
        results[f"toy_model_colour_accuracy{suffix}"] = right_color / total
        results[f"toy_model_shape_accuracy{suffix}"] = right_shape / total
        grids.append(image_grid(images_by_seed[0], columns=len(toy_world.COLORS)))
    for name, value in results.items():
        print(f"{name}: {value:.4f}")
    gap = np.ones((grids[0].shape[0], 12, 3), dtype=np.uint8) * 255
    grid = np.concatenate([grids[0], gap, grids[1]], axis=1)
    args.grid.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(args.grid)
    print(f"sample grid: {args.grid}")
    print(f"toy_model_bench_seconds: {time.perf_counter() - started:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
