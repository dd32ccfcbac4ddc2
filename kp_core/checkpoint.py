"""Checkpoints without pickle: safetensors weights plus a JSON file of metadata beside them.

``<stem>.safetensors`` holds the model's tensors; ``<stem>.json`` holds the architecture, keypoint count,
grid size, shape normalization, training config, metrics, code version and the weights' SHA-256, so a
truncated or swapped file is refused. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from . import __version__
from .models import build_model

FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
META_SUFFIX = ".json"
COMMITTED_MAX_BYTES = 25 * 2**20
"""The largest weights file the repository holds (a shipped model, a published run's): larger ones are rebuilt
from the command that made them."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match its metadata."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # open(..., "xb") (not mkstemp, which makes 0600 files) so the file gets the permissions the umask gives.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def update_metadata(path: str | os.PathLike, change) -> Path:
    """Apply ``change`` (a function that edits the dict in place) to a checkpoint's JSON (``path``: .safetensors,
    .json or run folder) and write it back atomically; returns the JSON's path."""
    meta_path = checkpoint_paths(path)[1]
    meta = read_metadata(path)
    change(meta)
    atomic_write_json(meta_path, meta)
    return meta_path


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Atomically write tensors as safetensors; returns the file's SHA-256."""
    data = save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking its SHA-256 when one is given."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise CheckpointError(f"{path} is corrupt or was replaced: its SHA-256 does not match the metadata")
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file: {err}") from err


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, metadata) paths for a ``.safetensors`` file, its ``.json``, a stem, or a run directory (its
    ``model``, which a recipe ends with, else its ``best``)."""
    path = Path(path)
    if path.is_dir():
        path = path / ("model" if (path / "model.json").is_file() else "best")
    if path.suffix in (WEIGHTS_SUFFIX, META_SUFFIX):
        path = path.with_suffix("")
    return path.with_name(path.name + WEIGHTS_SUFFIX), path.with_name(path.name + META_SUFFIX)


def save_checkpoint(path_stem: str | os.PathLike, model: torch.nn.Module, metadata: dict | None = None) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json``; returns the weights' path.

    ``metadata`` is merged into the standard fields (architecture, grid size, format and code version).
    """
    weights_path, meta_path = checkpoint_paths(path_stem)
    state = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    digest = save_tensors(weights_path, state)
    meta = dict(metadata or {})
    meta.update(
        format_version=FORMAT_VERSION,
        architecture=model.arch,
        grid_size=model.arch["grid_size"],
        code_version=__version__,
        weights_file=weights_path.name,
        weights_sha256=digest,
    )
    if getattr(model, "kind", None) == "keypoint":
        meta["num_keypoints"] = model.num_keypoints
    atomic_write_json(meta_path, meta)
    return weights_path


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of a checkpoint (see :func:`checkpoint_paths` for accepted paths)."""
    _, meta_path = checkpoint_paths(path)
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint metadata not found: {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint metadata {meta_path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION or "architecture" not in meta:
        raise CheckpointError(f"{meta_path} is not a kp_training checkpoint of format version {FORMAT_VERSION}")
    return meta


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load a checkpoint as a model in eval mode, with its metadata.

    Raises:
        CheckpointError: missing files, invalid JSON, wrong format, corrupt weights, or weights that do
            not match the architecture in the metadata.
    """
    weights_path, _ = checkpoint_paths(path)
    meta = read_metadata(path)
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights_path}")
    state = load_tensors(weights_path, meta.get("weights_sha256"))
    try:
        model = build_model(meta["architecture"])
    except ValueError as err:
        raise CheckpointError(f"{weights_path}: {err}") from err
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{weights_path} does not match its architecture: missing {missing[:5]}, unexpected {unexpected[:5]},"
            f" wrong shapes {wrong[:5]}"
        )
    model.load_state_dict(state)
    return model.to(device).eval(), meta
