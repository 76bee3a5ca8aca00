"""Checkpoint files: any JAX/numpy pytree, its step and a little JSON metadata, in one msgpack file per save.

The trainer's state is saved whole (networks, optimizer, normalizer, env state, PRNG keys), so ``--resume`` continues
exactly. Files are written atomically (temp file, fsync, rename): a Ctrl+C or crash mid-save leaves the previous
checkpoint intact. ``CheckpointManager`` adds ML-Agents' naming (``<Behavior>-<step>.ckpt`` + ``checkpoint.ckpt``,
our ``.pt``), ``training_status.json`` bookkeeping and ``keep_checkpoints`` deletion.

PRNG keys: both raw ``uint32`` keys (``jax.random.PRNGKey``) and typed keys (``jax.random.key``) round-trip; typed keys
are stored as their key data and re-wrapped with the target's implementation. Raw ``uint32`` keys are the simplest for
the trainer (plain arrays everywhere, nothing special on restore).

Integrity: a file is one msgpack map ``{format, step, metadata, state, sha256}`` whose last entry is the SHA-256 of
every byte before the digest, so a flipped byte or a truncation anywhere is a :class:`CheckpointError`, found
before anything is parsed (format 1, the same map without ``sha256``, is still read). Whatever a file holds, a
read fails with a :class:`CheckpointError` of one line naming the file, never with another exception.

Crash leftovers (a ``kill -9`` mid-save): :func:`remove_stale_temporaries` deletes the ``.tmp`` files of
interrupted atomic writes, :meth:`CheckpointManager.adopt_orphans` takes step files that never reached
``training_status.json`` into the list (so ``keep_checkpoints`` deletes them in turn), and
:func:`truncate_metrics` drops ``metrics.jsonl`` lines newer than the step a run resumes from.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, traverse_util

from rlrobot.summaries import TrainingStatus

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1  # no checksum; still read
LATEST_NAME = "checkpoint.ckpt"
SUFFIX = ".ckpt"
TEMP_SUFFIX = ".tmp"
_MAX_LISTED = 3
_FIELDS = ("format", "step", "metadata", "state")
# The map's last key and the header of its value: fixstr "sha256", then bin8 of 32 bytes (the digest).
_DIGEST_KEY = b"\xa6sha256\xc4\x20"
_DIGEST_SIZE = 32
_MAX_DEPTH = 64  # nesting of the saved state; the trainer's is about 8
_MAX_STEP = 2**63 - 1
# The suffixes of the files our atomic writers create (checkpoints, ONNX, status/timers/validation JSON, metrics,
# configuration.yaml).
_TEMP_SUFFIXES = tuple(f"{kind}{TEMP_SUFFIX}" for kind in (".ckpt", ".onnx", ".json", ".jsonl", ".yaml"))


class CheckpointError(Exception):
    """A checkpoint that can't be read or doesn't fit the model; the message is one line naming the file."""


def _one_line(error: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, shortened (a damaged file's message can hold its bytes)."""
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- bytes on disk --------------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX only; Windows can't open directories)."""
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temporary_path(path: Path) -> Path:
    """``<name>.tmp`` beside ``path``: where the atomic writers put a file before renaming it."""
    path = Path(path)
    return path.with_name(path.name + TEMP_SUFFIX)


def _write_temporary_then_rename(path: Path, write: Callable[[Any], None]) -> None:
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through ``<path>.tmp`` + fsync + rename: readers see the old file or the new one,
    never half of one, and no ``.tmp`` is left behind on failure (the ``OSError`` is raised)."""
    path = Path(path)
    _write_temporary_then_rename(path, lambda f: f.write(data))
    return path


_atomic_write = atomic_write_bytes


def atomic_copy(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` atomically (temp file + fsync + rename): a full disk leaves the old ``target``
    (or none), never an empty or partial one, and no ``.tmp``. Raises ``OSError`` as ``shutil.copyfile`` does."""
    source, target = Path(source), Path(target)
    with open(source, "rb") as src:
        _write_temporary_then_rename(target, lambda f: shutil.copyfileobj(src, f, 1 << 20))
    return target


def output_problem(path: Path) -> str | None:
    """Why a file can't be written at ``path`` (missing folder, a file where the folder should be, a folder at the
    path, a read-only place), or None; probes with the ``.tmp`` name the atomic writers use and removes it."""
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        return "is a folder; give a file name"
    if not parent.exists():
        return f"folder {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a folder"
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb"):
            pass
    except OSError as error:
        return f"cannot write there ({error.strerror or _one_line(error)})"
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return None


def remove_stale_temporaries(*directories: Path) -> list[Path]:
    """Delete the ``.tmp`` files an interrupted atomic write (``kill -9``, power loss) left in ``directories``
    (not below them): only regular files named ``*.ckpt.tmp``, ``*.onnx.tmp``, ``*.json.tmp``, ``*.jsonl.tmp``
    or ``*.yaml.tmp``, the names rlrobot's writers use. Call it before anything writes there. Returns the removed."""
    removed = []
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if not path.name.endswith(_TEMP_SUFFIXES) or path.is_symlink() or not path.is_file():
                continue
            try:
                path.unlink()
            except OSError as error:
                logger.warning(f"{path}: left over from an interrupted write and could not be removed "
                               f"({_one_line(error)}).")
                continue
            logger.info(f"Removed {path}, left over from an interrupted write.")
            removed.append(path)
    return removed


def truncate_metrics(path: Path, after_step: int) -> int:
    """Rewrite ``metrics.jsonl`` atomically keeping only the lines of steps ``<= after_step`` (the step a run
    resumes from), so a resumed run does not repeat the steps the killed one logged after its checkpoint; a torn
    or unreadable line goes too. A missing file is left missing. Returns the number of lines dropped."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    kept, dropped = [], 0
    for line in data.splitlines(keepends=True):
        step = _line_step(line)
        if step is not None and step <= after_step and line.endswith(b"\n"):
            kept.append(line)
        elif line.strip():
            dropped += 1
    new = b"".join(kept)
    if new != data:
        atomic_write_bytes(path, new)
    if dropped:
        logger.info(f"Removed {dropped} line(s) after step {after_step} from {path} (written after the checkpoint "
                    "this run resumes from).")
    return dropped


def _line_step(line: bytes) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


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
    body = serialization.msgpack_serialize({
        "format": FORMAT_VERSION,
        "step": int(step),
        "metadata": json.dumps(metadata),
        "state": serialization.to_state_dict(_raw_keys(tree)),
    })
    if body[0] != 0x80 | len(_FIELDS):  # msgpack packs a map of four entries as a fixmap, always
        raise AssertionError("unexpected msgpack map header")
    # One more entry in the map (fixmap header 0x85), the digest last, so the file is still a plain msgpack map.
    signed = bytes([0x80 | (len(_FIELDS) + 1)]) + body[1:] + _DIGEST_KEY
    return signed + hashlib.sha256(signed).digest()


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file.") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file.") from None
    except (OSError, MemoryError) as error:
        raise CheckpointError(f"{path}: cannot be read ({_one_line(error)}).") from None
    if not data:
        raise CheckpointError(f"{path}: the checkpoint file is empty (an interrupted write?).")
    return data


def _has_digest(data: bytes) -> bool:
    return len(data) > len(_DIGEST_KEY) + _DIGEST_SIZE and \
        data[-_DIGEST_SIZE - len(_DIGEST_KEY):-_DIGEST_SIZE] == _DIGEST_KEY


def _decode(path: Path) -> dict[str, Any]:
    """The checked payload: checksum (format 2), then the fields' types and the state's structure."""
    data = _read(path)
    signed = _has_digest(data)
    if signed and hashlib.sha256(data[:-_DIGEST_SIZE]).digest() != data[-_DIGEST_SIZE:]:
        raise CheckpointError(f"{path}: the checkpoint is damaged (its SHA-256 checksum does not match).")
    try:
        payload = serialization.msgpack_restore(data)
    except Exception as error:  # msgpack raises many types for a damaged file; all mean the same to the user
        raise CheckpointError(f"{path}: not a readable rlrobot checkpoint, damaged or truncated "
                              f"({_one_line(error)}).") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"{path}: not an rlrobot checkpoint.")
    version = payload["format"]
    fields = (*_FIELDS, "sha256") if version == FORMAT_VERSION else _FIELDS
    if type(version) is not int or version not in (FORMAT_VERSION, LEGACY_FORMAT_VERSION):
        raise CheckpointError(f"{path}: not an rlrobot checkpoint of a known format ({FORMAT_VERSION} or "
                              f"{LEGACY_FORMAT_VERSION}).")
    if version == FORMAT_VERSION and not signed:
        raise CheckpointError(f"{path}: the checkpoint is damaged or truncated (its checksum is missing).")
    if version == FORMAT_VERSION and data[0] != 0x80 | (len(_FIELDS) + 1):  # e.g. a key given twice
        raise CheckpointError(f"{path}: the checkpoint is damaged (not a map of {len(_FIELDS) + 1} fields).")
    if set(payload) != set(fields):
        raise CheckpointError(f"{path}: the checkpoint is damaged (fields {_listed([str(k) for k in payload])}; "
                              f"expected {', '.join(fields)}).")
    step = payload["step"]
    if type(step) is not int or not 0 <= step <= _MAX_STEP:
        raise CheckpointError(f"{path}: the checkpoint is damaged (its step is not a count of steps).")
    metadata = payload["metadata"]
    try:
        payload["metadata"] = json.loads(metadata) if isinstance(metadata, str) else None
    except (ValueError, RecursionError):
        payload["metadata"] = None
    if not isinstance(payload["metadata"], dict):
        raise CheckpointError(f"{path}: the checkpoint is damaged (its metadata is not a JSON object).")
    problem = _state_problem(payload["state"])
    if problem:
        raise CheckpointError(f"{path}: the checkpoint is damaged ({problem}).")
    return payload


_LEAF_TYPES = (np.ndarray, np.generic, bool, int, float, complex, str, bytes, type(None))


def _state_problem(state: Any) -> str | None:
    """What is wrong with a restored state tree: nested string-keyed maps with array or scalar leaves only."""
    stack: list[tuple[Any, str, int]] = [(state, "state", 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, dict):
            if depth >= _MAX_DEPTH:
                return f"{where} is nested more than {_MAX_DEPTH} levels deep"
            for key, value in node.items():
                if not isinstance(key, str):
                    return f"{where} has a key that is not a string ({type(key).__name__})"
                stack.append((value, f"{where}/{key}", depth + 1))
        elif not isinstance(node, _LEAF_TYPES):
            return f"{where} is a {type(node).__name__}, not an array"
        elif isinstance(node, np.ndarray) and node.dtype.hasobject:
            return f"{where} is an array of Python objects"
    return None


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
    try:
        problems = _differences(serialization.to_state_dict(target), stored)
        if problems:
            raise CheckpointError(f"{path}: checkpoint does not match the model: {'; '.join(problems)}.")
        restored = serialization.from_state_dict(target, stored)
        tree = jax.tree.map(_like, target_tree, restored)
    except CheckpointError:
        raise
    except Exception as error:  # whatever a crafted file makes flax or numpy raise, the user sees one line
        raise CheckpointError(f"{path}: checkpoint does not match the model ({_one_line(error)}).") from None
    return tree, payload["step"], payload["metadata"]


def read_metadata(path: Path) -> tuple[int, dict]:
    """The step and metadata of a checkpoint, without restoring its tree (the file is checked all the same)."""
    payload = _decode(Path(path))
    return payload["step"], payload["metadata"]


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

    def _step_files(self) -> Iterator[tuple[int, Path]]:
        """``<Behavior>-<step>.ckpt`` / ``.onnx`` in the behavior folder, with their steps."""
        pattern = re.compile(rf"{re.escape(self.behavior)}-(\d+)\.(?:ckpt|onnx)")
        if not self.behavior_dir.is_dir():
            return
        for path in self.behavior_dir.iterdir():
            match = pattern.fullmatch(path.name)
            if match and path.is_file() and not path.is_symlink():
                yield int(match.group(1)), path

    def adopt_orphans(self) -> list[int]:
        """Take step files that never reached ``training_status.json`` (a kill between writing them and the status
        update) into the list, ordered by step, then trim it to ``keep_checkpoints`` as a save would, so they are
        deleted in turn rather than forever. Only files named ``<Behavior>-<int>.ckpt|.onnx`` are considered; each
        orphan step's entry names its ``.onnx`` with the ``.ckpt`` as auxiliary file, as :meth:`save` does.
        Call it at the start of a resumed run; returns the adopted steps."""
        listed = {int(e["steps"]) for e in self.status.checkpoints(self.behavior) if isinstance(e.get("steps"), int)}
        orphans: dict[int, list[Path]] = {}
        for step, path in self._step_files():
            if step not in listed:
                orphans.setdefault(step, []).append(path)
        if not orphans:
            return []
        entries = self.status.checkpoints(self.behavior)
        created = {int(e["steps"]): e.get("creation_time") for e in entries}
        for step, paths in orphans.items():
            paths.sort(key=lambda p: p.suffix != ".onnx")  # the .onnx first: the entry's file_path
            created[step] = max(p.stat().st_mtime for p in paths)
            entries.append({"steps": step, "file_path": str(paths[0]), "reward": None,
                            "auxillary_file_paths": [str(p) for p in paths[1:]]})
        # add_checkpoint replaces an entry of the same step and appends: re-adding all by step sorts the list.
        for entry in sorted(entries, key=lambda e: e["steps"]):
            self.status.add_checkpoint(self.behavior, entry["steps"], entry.get("file_path", ""), entry.get("reward"),
                                       entry.get("auxillary_file_paths") or [])
        for entry in self.status.checkpoints(self.behavior):
            if created.get(entry["steps"]) is not None:
                entry["creation_time"] = created[entry["steps"]]
        adopted = sorted(orphans)
        logger.info(f"Found checkpoint files of step(s) {', '.join(map(str, adopted))} missing from "
                    f"{self.status_path.name}; listed them (keep_checkpoints: {self.keep}).")
        self._delete(self.status.trim(self.behavior, self.keep))
        self.status.save(self.status_path)
        return adopted

    def latest_path(self) -> Path | None:
        """``checkpoint.ckpt``, the resume / ``--initialize-from`` source, if one has been written."""
        latest = self.behavior_dir / LATEST_NAME
        return latest if latest.is_file() else None
