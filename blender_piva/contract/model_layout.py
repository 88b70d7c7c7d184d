"""Whether a local folder holds a usable diffusion model, read from its layout alone (standard library only).

The backend loads a Stable-Diffusion-style folder in the diffusers layout, one sub-folder per
component, and only safetensors weights (``.bin``/``.pt``/``.ckpt`` pickles can run code when
loaded). The extension's "Check model" button and the backend's loader
(``backend/diffusion/model.py``) both ask :func:`check_model_folder`, so they agree on what is
missing and say the same fix; neither imports torch for it.

    report = check_model_folder("~/models/sd21")
    report.ok          # False
    report.missing     # ["vae", "tokenizer"]   (vae is optional: absent = pixel-space model)
    report.message     # "model folder ... lacks tokenizer/; expected the diffusers layout ..."
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

INDEX_FILE = "model_index.json"
"""The pipeline's index (diffusers writes it; the backend loads component by component and does not need it)."""
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "controlnet")
"""Sub-folders of the diffusers layout the backend uses."""
REQUIRED = ("unet", "text_encoder", "tokenizer", "scheduler")
"""Components the backend cannot do without (no ``vae/`` = a pixel-space model, like the toy)."""
WEIGHTED = ("unet", "vae", "text_encoder", "controlnet")
"""Components that hold weights (checked to be safetensors)."""
PICKLE_SUFFIXES = (".bin", ".pt", ".ckpt", ".pth")
"""Weight files that are pickles: never loaded."""

LAYOUT_HELP = "unet/, text_encoder/, tokenizer/, scheduler/ and optionally vae/ and controlnet/"
SAVE_FIX = "save the pipeline with StableDiffusionPipeline.save_pretrained(folder, safe_serialization=True)"
CONVERT_FIX = (
    "convert once with `Model.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)` "
    "or download the .safetensors files"
)


def weights_kind(folder: Path) -> str:
    """``"safetensors"`` when ``folder`` holds a ``*.safetensors`` file, ``"pickle"`` when it holds
    only pickle weights, ``"none"`` when it holds no weights at all."""
    folder = Path(folder)
    if any(folder.glob("*.safetensors")):
        return "safetensors"
    if any(p.suffix in PICKLE_SUFFIXES for p in folder.iterdir() if p.is_file()):
        return "pickle"
    return "none"


def pickle_only_message(folder: Path) -> str:
    return (
        f"{folder} has only pickle weights (.bin/.pt/.ckpt); this backend loads safetensors only. "
        f"Fix: {CONVERT_FIX}"
    )


def no_weights_message(folder: Path) -> str:
    return f"{folder} has no weights (*.safetensors); re-download or re-save the model there"


@dataclass
class ModelLayoutReport:
    """What :func:`check_model_folder` found in one folder."""

    folder: str
    """The folder checked (as given, ``~`` expanded)."""
    exists: bool = True
    """Whether the folder exists at all."""
    present: list[str] = field(default_factory=list)
    """Components found (in :data:`COMPONENTS` order), then ``model_index.json`` when there."""
    missing: list[str] = field(default_factory=list)
    """Required components that are absent (:data:`REQUIRED`)."""
    pickle_only: list[str] = field(default_factory=list)
    """Weighted components holding only pickle weights (``"."`` = the folder itself)."""
    no_weights: list[str] = field(default_factory=list)
    """Weighted components holding no weights at all (``"."`` = the folder itself)."""
    single: bool = False
    """A one-model folder (a ControlNet: ``config.json`` and weights at its root), not a pipeline."""

    @property
    def absent(self) -> list[str]:
        """Every component of :data:`COMPONENTS` not found, the optional ones included."""
        return [name for name in COMPONENTS if name not in self.present] if self.exists else list(COMPONENTS)

    @property
    def ok(self) -> bool:
        return self.exists and not (self.missing or self.pickle_only or self.no_weights)

    def _sub(self, name: str) -> Path:
        return Path(self.folder) if name == "." else Path(self.folder) / name

    @property
    def message(self) -> str:
        """The first problem with its fix (what the loader raises), or a one-line summary when none."""
        if not self.exists:
            return f"model folder {self.folder} does not exist; pass an existing diffusers folder or a hub id"
        if self.single and self.missing:
            return f"ControlNet folder {self.folder} has no config.json; pass the folder holding it"
        if self.missing:
            also = " (and no vae/: without it the model runs in pixel space)" if "vae" in self.absent else ""
            return (
                f"model folder {self.folder} lacks {', '.join(m + '/' for m in self.missing)}{also}; expected the "
                f"diffusers layout ({LAYOUT_HELP}). Fix: {SAVE_FIX}"
            )
        if self.pickle_only:
            names = ", ".join(f"{n}/" for n in self.pickle_only)
            first = self._sub(self.pickle_only[0])
            return pickle_only_message(first) if len(self.pickle_only) == 1 else (
                f"{names} of {self.folder} have only pickle weights (.bin/.pt/.ckpt); this backend loads "
                f"safetensors only. Fix: {CONVERT_FIX}"
            )
        if self.no_weights:
            return no_weights_message(self._sub(self.no_weights[0]))
        if self.single:
            return f"ControlNet folder {self.folder} looks complete: config.json and safetensors weights"
        kind = "latent" if "vae" in self.present else "pixel-space (no vae/)"
        net = ", with its own ControlNet" if "controlnet" in self.present else ""
        return f"model folder {self.folder} looks complete: a {kind} model{net}, safetensors weights"

    def lines(self) -> list[str]:
        """Lines for the preferences: each component's state, then the verdict."""
        verdict = ("OK: " if self.ok else "PROBLEM: ") + self.message
        if self.single or not self.exists:
            return [verdict]
        out = []
        for name in COMPONENTS:
            if name in self.pickle_only:
                state = "PICKLE ONLY (.bin/.pt/.ckpt): refused"
            elif name in self.no_weights:
                state = "NO WEIGHTS"
            elif name in self.present:
                state = "ok"
            elif name in self.missing:
                state = "MISSING"
            else:
                state = "absent (optional)"
            out.append(f"{name}/: {state}")
        out.append(f"{INDEX_FILE}: {'ok' if INDEX_FILE in self.present else 'absent (optional)'}")
        return [*out, verdict]


def check_model_folder(folder: str | Path, required: tuple[str, ...] = REQUIRED) -> ModelLayoutReport:
    """Read ``folder``'s layout (nothing is loaded): components present, required ones missing,
    weighted ones whose weights are pickles only or absent. A folder whose root has a
    ``config.json`` (a single model, e.g. a ControlNet folder) has its root's weights checked too."""
    root = Path(folder).expanduser()
    report = ModelLayoutReport(folder=str(root))
    if not root.is_dir():
        report.exists = False
        return report
    report.present = [name for name in COMPONENTS if (root / name).is_dir()]
    if (root / INDEX_FILE).is_file():
        report.present.append(INDEX_FILE)
    report.missing = [name for name in required if name not in report.present]
    weighted = [name for name in WEIGHTED if name in report.present]
    if (root / "config.json").is_file():
        weighted.append(".")
    for name in weighted:
        kind = weights_kind(report._sub(name))
        if kind == "pickle":
            report.pickle_only.append(name)
        elif kind == "none":
            report.no_weights.append(name)
    return report


def check_single_model_folder(folder: str | Path) -> ModelLayoutReport:
    """A one-model folder (a ControlNet): ``config.json`` and safetensors weights at its root."""
    report = check_model_folder(folder, required=())
    report.single = True
    if report.exists and not (Path(report.folder) / "config.json").is_file():
        report.missing = ["config.json"]
    return report
