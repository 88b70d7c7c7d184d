"""Train the embedded toy model: render the toy world with the project's capture code, then train.

    .venv/bin/python scripts/train_toy_model.py [--steps 3000] [--controlnet-steps 800]
        [--work build/toy] [--out backend/models/toy] [--views 64]

Reproducible: the renders use fixed capture seeds, training uses ``--seed``. Resumable: run the same
command again after an interruption; renders that exist are kept and training continues from its
last checkpoint in ``--work``. Writes the model (diffusers layout, safetensors) to ``--out`` and a
sample grid (one row per shape, one column per colour) to ``docs/toy_samples.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def render_world(capture_root: Path, views: int, resolution: int) -> None:
    """One capture per (colour, shape): ``views`` training views from the paper's camera distribution."""
    import bpy

    import toy_world
    from blender_piva import contract
    from blender_piva.scene.capture import capture_object

    for index, (color, shape) in enumerate(toy_world.all_prompts()):
        folder = capture_root / f"{color}_{shape}"
        if (folder / "transforms.json").is_file() and (folder / "prompt.json").is_file():
            continue
        bpy.ops.wm.read_factory_settings(use_empty=True)
        obj = toy_world.add_object(color, shape)
        settings = contract.CaptureSettings(
            num_views=views, num_eval_views=0, resolution=resolution, samples=8, denoise=True, seed=1000 + index
        )
        if folder.exists():
            shutil.rmtree(folder)
        capture_object(obj, settings, folder)
        contract.write_json_atomic(folder / "prompt.json", {"prompt": toy_world.prompt(color, shape)})
        print(f"rendered {toy_world.prompt(color, shape)} ({views} views)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="phase-1 steps (text encoder + UNet)")
    parser.add_argument("--controlnet-steps", type=int, default=800, help="phase-2 steps (depth ControlNet)")
    parser.add_argument("--views", type=int, default=64, help="training views per toy object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "toy", help="renders and checkpoints")
    parser.add_argument("--out", type=Path, default=ROOT / "backend" / "models" / "toy", help="the model folder")
    parser.add_argument("--grid", type=Path, default=ROOT / "docs" / "toy_samples.png", help="sample grid PNG")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)

    from backend.toy.components import ToyModelConfig, count_parameters, save_model, save_tokenizer
    from backend.toy.train import TrainConfig, image_grid, load_toy_dataset, sample_images, train_base, train_controlnet

    model_config = ToyModelConfig()
    train_config = TrainConfig(steps=args.steps, controlnet_steps=args.controlnet_steps, seed=args.seed)
    capture_root = args.work / "captures"
    started = time.perf_counter()
    render_world(capture_root, args.views, model_config.image_size)
    print(f"renders ready in {time.perf_counter() - started:.0f} s", flush=True)

    import torch
    from PIL import Image
    from transformers import CLIPTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    save_tokenizer(args.work / "tokenizer", model_config)
    tokenizer = CLIPTokenizer.from_pretrained(args.work / "tokenizer")
    dataset = load_toy_dataset(capture_root)
    print(f"dataset: {dataset.images.shape[0]} images of {len(set(dataset.prompts))} prompts", flush=True)
    text_encoder, unet = train_base(dataset, tokenizer, model_config, train_config, args.work)
    print(f"text encoder {count_parameters(text_encoder)} + UNet {count_parameters(unet)} parameters", flush=True)
    controlnet = train_controlnet(dataset, tokenizer, text_encoder, unet, model_config, train_config, args.work)
    partial = args.out.with_name(args.out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    save_model(partial, model_config, text_encoder, unet, controlnet)
    (partial / "training.json").write_text(
        json.dumps(
            {"model": dataclasses.asdict(model_config), "training": dataclasses.asdict(train_config),
             "views_per_object": args.views, "images": int(dataset.images.shape[0])},
            indent=2,
        )
    )
    if args.out.exists():
        shutil.rmtree(args.out)
    partial.rename(args.out)

    import toy_world

    prompts = [toy_world.prompt(c, s) for s in toy_world.SHAPES for c in toy_world.COLORS]
    images = sample_images(unet, text_encoder, tokenizer, prompts, model_config, seed=args.seed, guidance_scale=3.0)
    args.grid.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images, columns=len(toy_world.COLORS))).resize(
        (len(toy_world.COLORS) * 34 * 4, len(toy_world.SHAPES) * 34 * 4), Image.NEAREST
    ).save(args.grid)
    print(f"model saved to {args.out}; samples in {args.grid}; {time.perf_counter() - started:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
