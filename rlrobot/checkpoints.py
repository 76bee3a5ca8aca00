"""Checkpoint files: any JAX/numpy pytree, its step and a little JSON metadata, in one msgpack file per save.

The trainer's state is saved whole (networks, optimizer, normalizer, env state, PRNG keys), so ``--resume`` continues
exactly. Files are written atomically (temp file, fsync, rename): a Ctrl+C or crash mid-save leaves the previous
checkpoint intact. ``CheckpointManager`` adds ML-Agents' naming (``<Behavior>-<step>.ckpt`` + ``checkpoint.ckpt``,
our ``.pt``), ``training_status.json`` bookkeeping and ``keep_checkpoints`` deletion.

PRNG keys: both raw ``uint32`` keys (``jax.random.PRNGKey``) and typed keys (``jax.random.key``) round-trip; typed keys
are stored as their key data and re-wrapped with the target's implementation. Raw ``uint32`` keys are the simplest for
the trainer (plain arrays everywhere, nothing special on restore).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, traverse_util

from rlrobot.summaries import TrainingStatus

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
LATEST_NAME = "checkpoint.ckpt"
SUFFIX = ".ckpt"
_MAX_LISTED = 3


class CheckpointError(Exception):
    """A checkpoint that can't be read or doesn't fit the model; the message is one line naming the file."""


# --- bytes on disk --------------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX only; Windows can't open directories)."""
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one; no ``.tmp`` is left behind on failure."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


# --- pytree <-> state dict ------------------------------------------------------------------------------------


def _is_typed_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _raw_keys(tree: Any) -> Any:
    """msgpack can't hold typed PRNG keys; their uint32 key data can."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_typed_key(x) else x, tree)


def _like(target: Any, loaded: Any) -> Any:
    """Give a restored leaf the target's kind: typed key, device array, or as stored (numpy / Python scalar)."""
    if _is_typed_key(target):
        return jax.random.wrap_key_data(jnp.asarray(loaded), impl=jax.random.key_impl(target))
    return jnp.asarray(loaded) if isinstance(target, jax.Array) else loaded


def _encode(tree: Any, step: int, metadata: dict) -> bytes:
    return serialization.msgpack_serialize({
        "format": FORMAT_VERSION,
        "step": int(step),
        "metadata": json.dumps(metadata),
        "state": serialization.to_state_dict(_raw_keys(tree)),
    })


def _decode(path: Path) -> dict[str, Any]:
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file.") from None
    except Exception as error:  # msgpack raises many types for a damaged file; all mean the same to the user
        raise CheckpointError(f"{path}: not a readable rlrobot checkpoint ({type(error).__name__}: {error}).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not an rlrobot checkpoint (format {FORMAT_VERSION} expected).")
    return payload


def _signature(leaf: Any) -> str:
    if leaf is traverse_util.empty_node:
        return "{}"
    dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
    return f"{dtype}{list(np.shape(leaf))}"


def _flat(state: Any) -> dict[str, Any]:
    return traverse_util.flatten_dict(state, keep_empty_nodes=True, sep="/") if isinstance(state, dict) else {"": state}


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def _differences(expected: Any, stored: Any) -> list[str]:
    """What differs between the model's state dict and the file's, by path, shape and dtype."""
    want, have = _flat(expected), _flat(stored)
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    changed = [f"{k} is {_signature(have[k])} in the file but the model has {_signature(want[k])}"
               for k in want if k in have and _signature(want[k]) != _signature(have[k])]
    return ([f"missing {_listed(missing)}"] if missing else []) + (
        [f"unexpected {_listed(unexpected)}"] if unexpected else []) + ([_listed(changed)] if changed else [])


# --- public API -----------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, tree: Any, step: int, metadata: dict) -> Path:
    """Write ``tree`` (any pytree), ``step`` and JSON-able ``metadata`` to ``path`` atomically."""
    path = Path(path)
    _atomic_write(path, _encode(tree, step, metadata))
    return path


def load_checkpoint(path: Path, target_tree: Any, field: str | None = None) -> tuple[Any, int, dict]:
    """Restore into the structure of ``target_tree``; any difference in keys, shapes or dtypes is a CheckpointError.

    With ``field``, only that top-level part of the saved tree is restored (e.g. ``"agent"`` for export), so a
    reader needs no template of the rest.
    """
    path = Path(path)
    payload = _decode(path)
    stored = payload["state"]
    if field is not None:
        if not isinstance(stored, dict) or field not in stored:
            raise CheckpointError(f"{path}: checkpoint has no {field!r} part.")
        stored = stored[field]
    target = _raw_keys(target_tree)
    problems = _differences(serialization.to_state_dict(target), stored)
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match the model: {'; '.join(problems)}.")
    try:
        restored = serialization.from_state_dict(target, stored)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: checkpoint does not match the model: {error}.") from None
    tree = jax.tree.map(_like, target_tree, restored)
    return tree, int(payload["step"]), json.loads(payload["metadata"])


def read_metadata(path: Path) -> tuple[int, dict]:
    """The step and metadata of a checkpoint, without restoring its tree."""
    payload = _decode(Path(path))
    return int(payload["step"]), json.loads(payload["metadata"])


class CheckpointManager:
    """ML-Agents' checkpoint routine for one behavior: step file, latest copy, status entry, keep the newest N."""

    def __init__(self, behavior_dir: Path, behavior: str, keep: int, status: TrainingStatus, status_path: Path) -> None:
        self.behavior_dir = Path(behavior_dir)
        self.behavior = behavior
        self.keep = keep
        self.status = status
        self.status_path = Path(status_path)

    def save(self, tree: Any, step: int, reward: float | None, metadata: dict,
             extra_files: Callable[[Path], list[Path]] | None = None) -> Path:
        """Write ``<Behavior>-<step>.ckpt`` and ``checkpoint.ckpt``; returns the step file.

        ``extra_files(stem)`` may write files for the same step (e.g. ``stem.onnx``) and return their paths; as in
        ML-Agents the first becomes the entry's ``file_path`` and the checkpoint an auxiliary file.
        """
        self.behavior_dir.mkdir(parents=True, exist_ok=True)
        stem = self.behavior_dir / f"{self.behavior}-{step}"
        ckpt = stem.with_name(stem.name + SUFFIX)
        data = _encode(tree, step, metadata)
        _atomic_write(ckpt, data)
        _atomic_write(self.behavior_dir / LATEST_NAME, data)
        written = [Path(p) for p in extra_files(stem)] if extra_files else []
        file_path, aux = (written[0], [*written[1:], ckpt]) if written else (ckpt, [])
        self.status.add_checkpoint(self.behavior, step, str(file_path), reward, [str(p) for p in aux])
        self._delete(self.status.trim(self.behavior, self.keep))
        self.status.save(self.status_path)
        return ckpt

    def _delete(self, dropped: list[dict[str, Any]]) -> None:
        """Remove the files of forgotten checkpoints, sparing any file a kept entry still names."""
        kept = {p for e in self.status.checkpoints(self.behavior) for p in [e["file_path"], *e["auxillary_file_paths"]]}
        for entry in dropped:
            for name in [entry["file_path"], *entry["auxillary_file_paths"]]:
                if name not in kept and Path(name).is_file():
                    Path(name).unlink()
                    logger.debug(f"Removed checkpoint model {name}.")

    def latest_path(self) -> Path | None:
        """``checkpoint.ckpt``, the resume / ``--initialize-from`` source, if one has been written."""
        latest = self.behavior_dir / LATEST_NAME
        return latest if latest.is_file() else None
