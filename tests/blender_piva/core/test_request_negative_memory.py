"""The negative prompt and the memory mode from the command line (and the panel's names) into the request."""

from __future__ import annotations

import types

from blender_piva import contract
from blender_piva.cli import _parser
from blender_piva.core.request import make_request


def test_the_command_line_carries_the_negative_prompt_and_the_memory_mode():
    args = _parser().parse_args([
        "edit", "scene.blend", "--object", "Cube", "--source", "a red cube", "--target", "a blue cube",
        "--negative", "blurry, low quality", "--memory", "low", "--model", "toy",
    ])
    request = make_request("Cube", args.source, args.target, args, model=contract.ModelSettings(model=args.model))
    assert request.negative_prompt == "blurry, low quality"
    assert request.model.memory == "low" and request.model.model == "toy"


def test_defaults_are_no_negative_prompt_and_balanced():
    args = _parser().parse_args(["edit", "scene.blend", "--object", "Cube", "--source", "a", "--target", "b"])
    request = make_request("Cube", args.source, args.target, args)
    assert request.negative_prompt == "" and request.model.memory == "balanced"


def test_choices_without_the_new_names_keep_working():
    """An older caller's choices (no negative_prompt, no memory): today's behaviour."""
    choices = types.SimpleNamespace(method="dds", steps=0, seed=1, lambda_identity=None, preset="preview", use_cache=True)
    model = contract.ModelSettings(memory="fast")
    request = make_request("Cube", "a", "b", choices, model=model)
    assert request.negative_prompt == "" and request.model.memory == "fast"
