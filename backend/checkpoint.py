"""Resumable checkpoints without pickle: ``NAME.safetensors`` (tensors) + ``NAME.json`` (the rest).

A checkpoint folder may come from someone else (a shared cache, a copied job folder), so nothing
in it is ever unpickled: tensors are read by ``safetensors`` (a header of JSON and raw bytes) and
everything else (steps, optimiser hyper-parameters, fingerprints) is plain JSON. Old pickle
checkpoints (``NAME.pt``, written by earlier versions) are never opened; :func:`legacy_checkpoint`
finds one so the caller can say that it is ignored.

Writing (:func:`save_checkpoint`), each file atomically (temporary file, fsync, rename), keeps
the previous checkpoint loadable until the new one is complete. The tensors alternate between two
slots, ``NAME.safetensors`` and ``NAME.b.safetensors``:

1. the tensors go to the slot the current JSON does not name;
2. ``NAME.json`` replaces the previous JSON in one rename: it names its slot and records the
   size and SHA-256 of that file, so a present JSON means a complete checkpoint, and a tensors
   file that does not match it (another writer, a reordered write after a power cut, a hand edit)
   is refused instead of being half loaded;
3. the other slot (the previous checkpoint's tensors) is removed.

A crash anywhere leaves the previous checkpoint or the new one, never none: a worker killed while
it saves (as likely as not with a checkpoint every step) resumes from the step before.

Nested state (``optimizer.state_dict()``, a sampler's buffers, RNG states) goes through
:func:`pack_state` / :func:`unpack_state`: every tensor moves into the safetensors dict under its
dotted path (``optimizer.state.0.exp_avg``) and the JSON keeps the structure with a reference in
its place, so int keys, tuples and non-finite floats round-trip exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from blender_piva.contract import write_bytes_atomic

FORMAT = "piva-checkpoint"
"""The ``format`` entry of every checkpoint JSON."""
VERSION = 1
"""Layout version of the checkpoint JSON; a loader refuses others."""
STATE_SUFFIX = ".json"
TENSORS_SUFFIX = ".safetensors"
SECOND_SLOT_SUFFIX = ".b.safetensors"
"""The second tensors slot (module docstring): a save writes the slot the current JSON does not name."""
LEGACY_SUFFIX = ".pt"
"""Suffix of the pickle checkpoints of earlier versions: never loaded."""

_TENSOR, _TUPLE, _DICT, _FLOAT = "__tensor__", "__tuple__", "__dict__", "__float__"
"""Markers of :func:`pack_state`'s JSON: a one-key dict ``{marker: payload}``."""
_MARKERS = frozenset({_TENSOR, _TUPLE, _DICT, _FLOAT})


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be resumed from; ``hint`` says which files to delete."""

    def __init__(self, stem: str | os.PathLike, problem: str, stage: str) -> None:
        json_path, tensors_path = checkpoint_paths(stem)
        self.what = f"cannot resume the {stage} stage: {problem}"
        """What is wrong, naming the file (a stage's StageError message)."""
        self.hint = f"delete {json_path} and {tensors_path} to restart the {stage} stage from scratch"
        """The fix (a stage's StageError hint)."""
        super().__init__(f"{self.what}. Fix: {self.hint}")


def checkpoint_paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    """``DIR/NAME`` -> (``DIR/NAME.json``, the tensors slot that JSON names).

    The slot is ``DIR/NAME.safetensors`` when there is no readable JSON or it names no slot.
    """
    stem = Path(stem)
    json_path = _json_path(stem)
    slots = _slots(stem)
    try:
        named = json.loads(json_path.read_bytes().decode("utf-8")).get("tensors_file")
    except (OSError, ValueError, AttributeError):
        named = None
    return json_path, next((slot for slot in slots if slot.name == named), slots[0])


def _json_path(stem: Path) -> Path:
    """``DIR/NAME`` -> ``DIR/NAME.json`` (no read: the slot is what needs the JSON)."""
    return stem.with_name(stem.name + STATE_SUFFIX)


def _matches(record: dict, blob: bytes) -> bool:
    """Whether ``blob`` is the tensors file ``record`` (a checkpoint JSON) describes."""
    return len(blob) == record.get("tensors_bytes") and hashlib.sha256(blob).hexdigest() == record.get("tensors_sha256")


def _slots(stem: Path) -> tuple[Path, Path]:
    """The two files a checkpoint's tensors may be in (module docstring)."""
    return stem.with_name(stem.name + TENSORS_SUFFIX), stem.with_name(stem.name + SECOND_SLOT_SUFFIX)


def is_checkpoint_json(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint's JSON (a JSON object with ``"format": "piva-checkpoint"``)."""
    try:
        record = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == FORMAT


def stem_of_slot(path: str | os.PathLike) -> Path | None:
    """The checkpoint stem whose tensors slot ``path`` is (``DIR/NAME`` of ``DIR/NAME.safetensors`` or
    ``DIR/NAME.b.safetensors`` beside a checkpoint JSON ``DIR/NAME.json``), None for any other file."""
    path = Path(path)
    for suffix in (SECOND_SLOT_SUFFIX, TENSORS_SUFFIX):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            stem = path.with_name(path.name[: -len(suffix)])
            if is_checkpoint_json(_json_path(stem)):
                return stem
    return None


def read_complete(json_path: str | os.PathLike) -> tuple[bytes, Path, bytes] | None:
    """(the JSON's bytes, its tensors slot, the slot's bytes) of the checkpoint whose JSON is
    ``json_path``, read now and checked against each other (size and SHA-256); None when the file
    is no checkpoint JSON or its slot does not match it (a save is under way: look again later).
    What copies checkpoints elsewhere (``backend/serve/bundle.py``) copies such pairs only, never a
    JSON without its tensors or tensors without the JSON that names them."""
    json_path = Path(json_path)
    if not json_path.name.endswith(STATE_SUFFIX):
        return None
    stem = json_path.with_name(json_path.name[: -len(STATE_SUFFIX)])
    try:
        text = json_path.read_bytes()
        record = json.loads(text.decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    slot = next((p for p in _slots(stem) if p.name == record.get("tensors_file")), None)
    if slot is None:
        return None
    try:
        blob = slot.read_bytes()
    except OSError:
        return None
    return (text, slot, blob) if _matches(record, blob) else None


def checkpoint_exists(stem: str | os.PathLike) -> bool:
    """True when a checkpoint was completed at ``stem`` (its JSON, written last, is there)."""
    return _json_path(Path(stem)).is_file()


def legacy_checkpoint(stem: str | os.PathLike) -> Path | None:
    """The pickle checkpoint an earlier version left at ``stem`` (``NAME.pt``), if any; never to be loaded."""
    stem = Path(stem)
    old = stem.with_name(stem.name + LEGACY_SUFFIX)
    return old if old.exists() else None


# -- the two files -----------------------------------------------------------------------------


def save_checkpoint(stem: str | os.PathLike, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
    """Write ``tensors`` to the free tensors slot and ``state`` (JSON-able) to ``STEM.json``, JSON last.

    Tensors are stored on the CPU with their dtype and shape. Raises TypeError / ValueError before
    touching any file when ``state`` is not JSON or a tensor cannot be stored.
    """
    stem = Path(stem)
    json_path, current = checkpoint_paths(stem)
    slots = _slots(stem)
    tensors_path = slots[1] if json_path.is_file() and current == slots[0] else slots[0]
    blob = save_safetensors(_storable(tensors))
    record = {
        "format": FORMAT,
        "version": VERSION,
        "tensors_file": tensors_path.name,
        "tensors_bytes": len(blob),
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        "state": state,
    }
    text = (json.dumps(record, indent=1, allow_nan=False) + "\n").encode("utf-8")
    write_bytes_atomic(tensors_path, blob)
    _fsync_dir(json_path.parent)  # the tensors' name is durable before a JSON names it
    write_bytes_atomic(json_path, text)
    _fsync_dir(json_path.parent)  # the new JSON is durable before the previous tensors go
    for slot in slots:
        if slot != tensors_path:
            slot.unlink(missing_ok=True)


def load_checkpoint(stem: str | os.PathLike, *, stage: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read the checkpoint at ``stem``: (CPU tensors, state). Never unpickles anything.

    Raises FileNotFoundError when there is no checkpoint (no ``STEM.json``), and
    :class:`CheckpointError` naming the file, the problem and the fix when it is unreadable: not
    JSON, not a checkpoint, a tensors file that is missing, truncated or does not match the JSON.
    """
    json_path = _json_path(Path(stem))
    if not json_path.is_file():
        raise FileNotFoundError(f"no checkpoint at {stem}: {json_path} does not exist")
    try:
        record = json.loads(json_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(stem, f"{json_path} is not text (not a checkpoint JSON)", stage) from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(stem, f"{json_path} is not valid JSON ({exc.msg} at line {exc.lineno})", stage) from None
    except OSError as exc:
        raise CheckpointError(stem, f"{json_path} cannot be read ({exc.strerror or exc})", stage) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(stem, f"{json_path} is not a PIVA checkpoint (no \"format\": \"{FORMAT}\")", stage)
    if record.get("version") != VERSION:
        raise CheckpointError(
            stem, f"{json_path} has checkpoint version {record.get('version')!r}; this backend reads {VERSION}", stage
        )
    for key in ("tensors_bytes", "tensors_sha256", "state"):
        if key not in record:
            raise CheckpointError(stem, f"{json_path} lacks its {key!r} entry", stage)
    if not isinstance(record["state"], dict):
        raise CheckpointError(stem, f"{json_path}: 'state' is a {type(record['state']).__name__}, not an object", stage)
    slots = {slot.name: slot for slot in _slots(Path(stem))}
    named = record.get("tensors_file", next(iter(slots)))  # files of before the two slots name none
    if named not in slots:  # never a path of the JSON's choosing
        raise CheckpointError(stem, f"{json_path} names {named!r} as its tensors file, not one of {sorted(slots)}", stage)
    tensors_path = slots[named]
    try:
        blob = tensors_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(stem, f"{tensors_path} is missing ({json_path} needs it)", stage) from None
    except OSError as exc:
        raise CheckpointError(stem, f"{tensors_path} cannot be read ({exc.strerror or exc})", stage) from None
    if not _matches(record, blob):
        raise CheckpointError(
            stem,
            f"{tensors_path} does not match {json_path} ({len(blob)} bytes, expected {record['tensors_bytes']}, "
            "or another SHA-256): it was truncated, replaced, or its save was interrupted",
            stage,
        )
    try:
        tensors = load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(stem, f"{tensors_path} is not a valid safetensors file ({exc})", stage) from None
    return tensors, record["state"]


def save_state(stem: str | os.PathLike, state: dict[str, Any]) -> None:
    """:func:`save_checkpoint` of a nested state whose leaves may be tensors (see :func:`pack_state`)."""
    tensors, tree = pack_state(state)
    save_checkpoint(stem, tensors, tree)


def load_state(stem: str | os.PathLike, *, stage: str) -> dict[str, Any]:
    """The nested state :func:`save_state` wrote at ``stem`` (tensors on the CPU)."""
    tensors, tree = load_checkpoint(stem, stage=stage)
    try:
        return unpack_state(tree, tensors)
    except ValueError as exc:
        raise CheckpointError(stem, f"{checkpoint_paths(stem)[0]}: {exc}", stage) from None


@contextmanager
def restoring(stem: str | os.PathLike, *, stage: str) -> Iterator[None]:
    """Turn what goes wrong while a loaded state is applied (a missing key, a tensor of the wrong
    shape, a malformed value) into a :class:`CheckpointError` naming the checkpoint."""
    try:
        yield
    except (CheckpointError, torch.cuda.OutOfMemoryError):  # out of memory is no fault of the checkpoint
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        what = f"missing entry {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise CheckpointError(stem, f"{checkpoint_paths(stem)[0]} does not fit this run ({what})", stage) from None


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Raise ValueError when a loaded per-parameter state tensor (Adam's moments) has another shape
    than its parameter (``Optimizer.load_state_dict`` does not check; the next step would fail)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(
                        f"optimizer state {key!r} has shape {tuple(value.shape)}, its parameter {tuple(param.shape)}"
                    )


# -- nested state <-> (tensors, JSON) ---------------------------------------------------------


def pack_state(state: Any) -> tuple[dict[str, Tensor], Any]:
    """Split ``state`` into (tensors by dotted path, a JSON tree referencing them).

    Leaves may be tensors, str, int, float (non-finite too), bool or None; containers dicts (any
    str/int/float/bool/None keys), lists and tuples. Anything else is a TypeError naming its path.
    """
    tensors: dict[str, Tensor] = {}

    def pack(value: Any, path: str) -> Any:
        if isinstance(value, Tensor):
            key = path or "tensor"
            if key in tensors:  # dotted paths can collide ({"a.b": x} and {"a": {"b": y}})
                n = 2
                while f"{key}#{n}" in tensors:
                    n += 1
                key = f"{key}#{n}"
            tensors[key] = value
            return {_TENSOR: key}
        if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {_FLOAT: repr(value)}
        if isinstance(value, tuple):
            return {_TUPLE: [pack(v, _join(path, i)) for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [pack(v, _join(path, i)) for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and not _MARKERS.intersection(value):
                return {k: pack(v, _join(path, k)) for k, v in value.items()}
            for k in value:
                if not (k is None or isinstance(k, (str, int, float, bool))):
                    where = path or "the top"
                    raise TypeError(f"cannot store the dict key {k!r} ({type(k).__name__}) at {where} in a checkpoint")
            return {_DICT: [[pack(k, path), pack(v, _join(path, k))] for k, v in value.items()]}
        raise TypeError(f"cannot store a {type(value).__name__} at {path or 'the top'} in a checkpoint")

    return tensors, pack(state, "")


def unpack_state(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """Rebuild what :func:`pack_state` split; ValueError on a malformed tree or a missing tensor."""

    def unpack(node: Any, path: str) -> Any:
        if isinstance(node, list):
            return [unpack(v, _join(path, i)) for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        if len(node) == 1 and next(iter(node)) in _MARKERS:
            marker, payload = next(iter(node.items()))
            if marker == _TENSOR:
                if not isinstance(payload, str) or payload not in tensors:
                    raise ValueError(f"{path or 'the top'} refers to tensor {payload!r}, which the tensors file lacks")
                return tensors[payload]
            if marker == _FLOAT and payload in ("nan", "inf", "-inf"):
                return float(payload)
            if marker == _TUPLE and isinstance(payload, list):
                return tuple(unpack(v, _join(path, i)) for i, v in enumerate(payload))
            pairs = isinstance(payload, list) and all(isinstance(p, list) and len(p) == 2 for p in payload)
            if marker == _DICT and pairs:
                return {unpack(k, path): unpack(v, _join(path, k)) for k, v in payload}
            raise ValueError(f"{path or 'the top'} holds a malformed {marker!r} entry")
        return {k: unpack(v, _join(path, k)) for k, v in node.items()}

    return unpack(tree, "")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _storable(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU, dense, contiguous tensors that own their storage (safetensors refuses shared memory)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, tensor in tensors.items():
        if not isinstance(key, str) or not isinstance(tensor, Tensor):
            raise TypeError(f"checkpoint tensors must map str to Tensor; got {key!r}: {type(tensor).__name__}")
        t = tensor.detach().to("cpu")
        storage = t.untyped_storage()
        whole = t.storage_offset() == 0 and t.numel() * t.element_size() == storage.nbytes()
        if not t.is_contiguous() or not whole or (storage.data_ptr() in seen and storage.nbytes() > 0):
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _fsync_dir(folder: Path) -> None:
    """Make a rename or removal in ``folder`` durable (POSIX; elsewhere the rename is all there is)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
