"""Train the embedded toy model and its oracle: render the toy world with the capture code, then train.

    .venv/bin/python scripts/train_toy_model.py [--work build/toy2] [--out backend/models/toy]
        [--oracle-out backend/models/toy_oracle] [--vae-steps N] [--steps N] [--controlnet-steps N]

One resumable command (about 80 minutes on 2 cores): run it again after an interruption; renders
that exist are kept and every phase continues from its last checkpoint in ``--work``.

1. renders (toy_world.renders): the diffusion model's views, the oracle's training views and the
   oracle's held-out views, with disjoint capture seeds;
2. the oracle (backend/toy/oracle_train.py) -> ``--oracle-out``;
3. the autoencoder, the text encoder + UNet on its latents, the depth ControlNet
   (backend/toy/train.py) -> ``--out`` (diffusers layout, safetensors);
4. a sample grid (one row per shape, one column per colour) -> ``docs/toy_samples.png``.

Fine-tuning a trained model: ``--finetune-from backend/models/toy --steps N --controlnet-steps M
--learning-rate LR --out build/toy_ft/model`` keeps that folder's autoencoder and the shipped oracle
(steps 0 and 2 skipped, only the diffusion model's views rendered), continues phases 1 and 2 from its
weights on a fresh schedule, and records the starting model's training.json as ``finetuned_from``.
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


def replace_folder(partial: Path, out: Path) -> None:
    """Move a finished ``partial`` folder to ``out`` (the old one goes only once the new one is whole)."""
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    if old.exists():
        shutil.rmtree(old)


def load_trained(folder: Path) -> dict:
    """The trained parts of a model folder, to fine-tune: loaded by the product's own loader
    (``DiffusionModel.load``: diffusers layout, safetensors only), so nothing else reads a model."""
    import torch

    from backend.diffusion.model import DiffusionModel, ModelLoadError

    if not (folder / "model_index.json").is_file():
        raise SystemExit(f"--finetune-from {folder}: not a model folder (no model_index.json); "
                         "pass the folder that scripts/train_toy_model.py wrote, e.g. backend/models/toy")
    try:
        model = DiffusionModel.load(str(folder), controlnet=str(folder / "controlnet"),
                                    device=torch.device("cpu"), dtype=torch.float32)
    except ModelLoadError as exc:
        raise SystemExit(f"--finetune-from {folder}: {exc}") from exc
    return {"vae": model.vae, "text_encoder": model.text_encoder, "unet": model.unet,
            "controlnet": model.controlnet}


def main(argv: list[str] | None = None) -> int:
    from backend.toy.train import TrainConfig

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae-steps", type=int, default=defaults.vae_steps, help="phase-0 steps (autoencoder)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="phase-1 steps (text encoder + UNet)")
    parser.add_argument("--controlnet-steps", type=int, default=defaults.controlnet_steps, help="phase-2 steps")
    parser.add_argument("--oracle-steps", type=int, default=None, help="oracle steps (default: its config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "toy2", help="renders and checkpoints")
    parser.add_argument("--out", type=Path, default=ROOT / "backend" / "models" / "toy", help="the model folder")
    parser.add_argument("--oracle-out", type=Path, default=ROOT / "backend" / "models" / "toy_oracle")
    parser.add_argument("--grid", type=Path, default=ROOT / "docs" / "toy_samples.png", help="sample grid PNG")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--finetune-from", type=Path, default=None,
                        help="a trained model folder to continue from: its autoencoder is kept (phase 0 "
                             "skipped), phases 1 and 2 start from its weights and run --steps and "
                             "--controlnet-steps more steps on a fresh schedule")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help="peak learning rate of phases 1 and 2 (phase 2 uses half)")
    args = parser.parse_args(argv)

    import toy_world
    from toy_world import renders

    started = time.perf_counter()
    captures = args.work / "captures"
    sets = (("train", renders.DIFFUSION_TRAIN), ("oracle_train", renders.ORACLE_TRAIN),
            ("oracle_held_out", renders.ORACLE_HELD_OUT))
    for name, render in sets[:1] if args.finetune_from is not None else sets:
        renders.render_set(captures / name, render, log=lambda m: print(m, flush=True))
    print(f"renders ready in {time.perf_counter() - started:.0f} s", flush=True)

    import torch
    from PIL import Image
    from transformers import CLIPTokenizer

    from backend.toy.components import ToyModelConfig, count_parameters, save_model, save_tokenizer
    from backend.toy.oracle import OracleConfig, save_oracle
    from backend.toy.oracle_train import OracleTrainConfig, accuracy, load_labelled, train_oracle
    from backend.toy.train import (encode_dataset, image_grid, load_toy_dataset, sample_images, train_base,
                                   train_controlnet, train_vae)

    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda m: print(m, flush=True)  # noqa: E731

    if args.finetune_from is None:  # a fine-tuning run keeps the shipped oracle
        oracle_config = OracleConfig(colors=tuple(toy_world.COLORS), shapes=toy_world.SHAPES)
        oracle_train_config = OracleTrainConfig(seed=args.seed)
        if args.oracle_steps is not None:
            oracle_train_config = dataclasses.replace(oracle_train_config, steps=args.oracle_steps)
        oracle = train_oracle(load_labelled(captures / "oracle_train", oracle_config), oracle_config,
                              oracle_train_config, args.work, log=log)
        color_ok, shape_ok = accuracy(oracle, load_labelled(captures / "oracle_held_out", oracle_config))
        log(f"oracle held-out accuracy: colour {color_ok:.4f}, shape {shape_ok:.4f}")
        partial = args.oracle_out.with_name(args.oracle_out.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        save_oracle(oracle, partial)
        (partial / "training.json").write_text(json.dumps(
            {"training": dataclasses.asdict(oracle_train_config), "held_out_color_accuracy": color_ok,
             "held_out_shape_accuracy": shape_ok}, indent=2))
        replace_folder(partial, args.oracle_out)

    model_config = ToyModelConfig()
    train_config = dataclasses.replace(TrainConfig(), vae_steps=args.vae_steps, steps=args.steps,
                                       controlnet_steps=args.controlnet_steps, seed=args.seed,
                                       learning_rate=args.learning_rate)
    save_tokenizer(args.work / "tokenizer", model_config)
    tokenizer = CLIPTokenizer.from_pretrained(args.work / "tokenizer")
    dataset = load_toy_dataset(captures / "train")
    log(f"dataset: {dataset.images.shape[0]} images of {len(set(dataset.prompts))} prompts")
    start_model = previous_training = None
    if args.finetune_from is not None:
        start_model = load_trained(args.finetune_from)
        previous_training = json.loads((args.finetune_from / "training.json").read_text())
        vae = start_model["vae"]
        log(f"fine-tuning {args.finetune_from}: its autoencoder is kept")
    else:
        vae = train_vae(dataset, model_config, train_config, args.work, log=log)
    latents = encode_dataset(vae, dataset)
    log(f"latents {tuple(latents.latents.shape)}, scaling factor {vae.config.scaling_factor:.4f}")
    text_encoder, unet = train_base(
        latents, tokenizer, model_config, train_config, args.work, log=log,
        init=None if start_model is None else (start_model["text_encoder"], start_model["unet"]))
    log(f"VAE {count_parameters(vae)}, text encoder {count_parameters(text_encoder)}, "
        f"UNet {count_parameters(unet)} parameters")
    controlnet = train_controlnet(latents, tokenizer, text_encoder, unet, model_config, train_config, args.work, log=log,
                                  init=None if start_model is None else start_model["controlnet"])
    partial = args.out.with_name(args.out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    save_model(partial, model_config, text_encoder, vae, unet, controlnet)
    (partial / "training.json").write_text(
        json.dumps(
            {"model": dataclasses.asdict(model_config), "training": dataclasses.asdict(train_config),
             "views_per_object": renders.DIFFUSION_TRAIN.views, "images": int(dataset.images.shape[0]),
             "scaling_factor": float(vae.config.scaling_factor),
             **({} if previous_training is None else {"finetuned_from": previous_training})},
            indent=2,
        )
    )
    replace_folder(partial, args.out)

    prompts = [toy_world.prompt(c, s) for s in toy_world.SHAPES for c in toy_world.COLORS]
    images = sample_images(vae, unet, text_encoder, tokenizer, prompts, model_config, seed=args.seed, guidance_scale=5.0)
    args.grid.parent.mkdir(parents=True, exist_ok=True)
    size = model_config.image_size + 2
    Image.fromarray(image_grid(images, columns=len(toy_world.COLORS))).resize(
        (len(toy_world.COLORS) * size * 2, len(toy_world.SHAPES) * size * 2), Image.NEAREST
    ).save(args.grid)
    log(f"model saved to {args.out}; oracle to {args.oracle_out}; samples in {args.grid}; "
        f"{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
