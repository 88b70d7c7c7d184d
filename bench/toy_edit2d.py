"""Every editing method on the toy benchmark's edits, as 2D image edits of rendered views (fast).

    .venv/bin/python bench/toy_edit2d.py [--methods sds,dds,pds,ssd,piva] [--seeds 0,1,2] [--steps 300]
        [--param METHOD.KEY=VALUE ...] [--edits FILE.json] [--tag NAME] [--variants FILE.json]

The sources are Cycles renders (toy_world.renders.BENCHMARK, capture seeds no model saw) of the
four held-out views of each source object. The four views of one run are edited together
(backend/edit2d.py's batch: one method instance, each view its full gradient) from the source
prompt to the target prompt, with each method at its own defaults (one source:
``build_config(name, EditSettings())``), SGD lr 0.01 with a cosine schedule (PIVA's 2D setup), the
same seeds for every method. Judged by the oracle (backend/toy/judge.py: success, drift,
speckle; means with 95% bootstrap intervals).

``--variants FILE.json`` adds columns to the same run, one per entry ``{"tag", "method", "params"}``.
Each run's edited views are kept under ``--work``/edits2d/MODEL (per model weights, a plain ``.npy``
written atomically): a rerun with the same settings and model only scores them, so an interrupted
run resumes, and two processes on different ``--methods`` can share one work folder.
Prints a table, ``toy_edit_seconds`` and per method ``toy_success_M``, ``toy_drift_M``,
``toy_speckle_M`` with ``_ci95`` (figure names shared with bench/toy_edit.py; the 2D figures come
from this script's own output). Writes a gallery (rows: edits at seed 0, view 0; columns: source
then each method) to ``--gallery``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _toy import (benchmark_arguments, benchmark_arms, finish, load_cached_images, load_eval_views, model_tag,  # noqa: E402
                  parse_benchmark, print_run, save_cached_images, source_views)

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    benchmark_arguments(parser, steps=300)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "toy_edit")
    parser.add_argument("--gallery", type=Path, default=ROOT / "docs" / "toy_edit2d_gallery.png")
    args = parser.parse_args(argv)
    methods, seeds, edits, overrides = parse_benchmark(args, parser)
    arms = benchmark_arms(args, parser, methods, overrides)
    with_edit = [a.label for a in arms if a.edit]
    if with_edit:
        parser.error(f"variant(s) {', '.join(with_edit)} set edit settings (\"edit\"), which only the 3D benchmark "
                     "has (2D edits the latents, not a field): run them with bench/toy_edit.py")
    started = time.perf_counter()
    captures = source_views(args.work)

    import torch

    import toy_world
    from backend.diffusion.model import DiffusionModel
    from backend.edit2d import edit_image
    from backend.stages.edit import resolve_model
    from backend.toy.judge import JUDGED_VIEWS, score_run, white_distance_mask
    from backend.toy.oracle import load_oracle
    from blender_piva.contract import EditSettings

    torch.set_num_threads(args.threads)
    oracle = load_oracle()
    model_name = resolve_model(args.model)
    model = DiffusionModel.load(model_name, device=torch.device("cpu"), dtype=torch.float32)
    weights = model_tag(model_name)  # results are the model's: a re-trained model computes anew
    print(f"model {model_name}: {weights}", flush=True)
    runs: dict[str, list] = {}
    gallery: dict[int, list] = {}
    for arm in arms:
        method, label = arm.method, arm.label
        runs[label] = []
        for index, edit in enumerate(edits):
            source, _, _ = load_eval_views(captures[edit.source])
            source = source[:JUDGED_VIEWS]
            source_mask = white_distance_mask(source)
            gallery.setdefault(index, [source[0]])
            for seed in seeds:
                suffix = f"_{arm.tag}" if arm.tag else ""
                name = f"{method}_{'_'.join(edit.source)}_to_{'_'.join(edit.target)}_seed{seed}_s{args.steps}{suffix}"
                cached = args.work / "edits2d" / weights / f"{name}.npy"  # a rerun only scores: runs resume
                edited = load_cached_images(cached)
                if edited is None:
                    settings = EditSettings(method=method, steps=args.steps, method_params=dict(arm.params))
                    edited = edit_image(source.permute(0, 2, 3, 1).numpy(), toy_world.prompt(*edit.source),
                                        toy_world.prompt(*edit.target), method, settings, model, seed=seed)
                    save_cached_images(cached, edited)
                edited = torch.from_numpy(edited).permute(0, 3, 1, 2)
                score = score_run(edit, oracle, edited, white_distance_mask(edited), source, source_mask)
                runs[label].append((edit, seed, score))
                if seed == seeds[0]:
                    gallery[index].append(edited[0])
                print_run(label, edit, seed, score, started)
    finish(runs, gallery, args.gallery, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
