"""Checkpoint files against damage and crash leftovers: a checksum that catches every flipped byte and truncation,
crafted msgpack content that is always a one-line CheckpointError, and what a ``kill -9`` leaves behind (``.tmp``
files, step files missing from training_status.json, metrics lines past the checkpoint, a partial copy)."""
import contextlib
import errno
import hashlib
import json
import os
import subprocess
from pathlib import Path

import jax
import msgpack
import numpy as np
import optax
import pytest
from flax import serialization

from rlrobot.checkpoints import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointManager,
    atomic_copy,
    atomic_write_bytes,
    load_checkpoint,
    read_metadata,
    remove_stale_temporaries,
    save_checkpoint,
    truncate_metrics,
)
from rlrobot.networks import NetworkSpec, init_agent
from rlrobot.summaries import TrainingStatus

SPEC = NetworkSpec(obs_size=19, action_size=2, hidden_units=8, num_layers=1, normalize=True)
METADATA = {"behavior": "MobileRobot", "network": {"obs_size": 19, "action_size": 2, "hidden_units": 8,
                                                   "num_layers": 1, "normalize": True}}


def real_state() -> dict:
    """A trainer-like state: networks, Adam state, a PRNG key, a step."""
    agent = init_agent(jax.random.PRNGKey(0), SPEC)
    return {"agent": agent, "opt_state": optax.adam(1e-3).init(agent.params), "key": jax.random.PRNGKey(7),
            "step": np.int64(12345)}


def assert_one_line_error(path: Path, load) -> str:
    with pytest.raises(CheckpointError) as caught:
        load(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    return message


def all_loaders(path: Path, target, metadata_readable: bool = False) -> None:
    """Every way the project reads a checkpoint fails with a one-line CheckpointError naming the file (but the
    step and metadata of a file whose state is well-formed, only not the model's, can be read)."""
    assert_one_line_error(path, lambda p: load_checkpoint(p, target))
    assert_one_line_error(path, lambda p: load_checkpoint(p, target["agent"], field="agent"))
    if metadata_readable:
        assert read_metadata(path) == (10, METADATA)
    else:
        assert_one_line_error(path, read_metadata)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[bytes, dict]:
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "MobileRobot-12345.ckpt", real_state(), 12345, METADATA)
    return path.read_bytes(), real_state()


def test_a_good_checkpoint_loads_and_carries_its_checksum(tmp_path, saved):
    data, target = saved
    path = tmp_path / "good.ckpt"
    path.write_bytes(data)
    _, step, metadata = load_checkpoint(path, target)
    assert (step, metadata) == (12345, METADATA)
    payload = serialization.msgpack_restore(data)  # still a plain msgpack map with the state in it
    assert payload["format"] == FORMAT_VERSION and set(payload["state"]) == set(target)
    assert payload["sha256"] == hashlib.sha256(data[:-32]).digest()


def test_every_flipped_byte_is_caught(tmp_path, saved):
    data, target = saved
    path = tmp_path / "flipped.ckpt"
    rng = np.random.default_rng(0)
    offsets = sorted({*range(0, len(data), max(1, len(data) // 400)), *range(len(data) - 64, len(data)),
                      *rng.integers(0, len(data), 200).tolist()})
    for offset in offsets:
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[offset] ^= mask
            path.write_bytes(bytes(damaged))
            assert_one_line_error(path, lambda p: load_checkpoint(p, target))
    path.write_bytes(bytes(damaged))
    all_loaders(path, target)


def test_every_truncation_is_caught(tmp_path, saved):
    data, target = saved
    path = tmp_path / "truncated.ckpt"
    lengths = sorted({*range(0, len(data), max(1, len(data) // 300)), *range(len(data) - 50, len(data))})
    for length in lengths:
        path.write_bytes(data[:length])
        message = assert_one_line_error(path, lambda p: load_checkpoint(p, target))
        if length == 0:
            assert "empty" in message
    all_loaders(path, target)


def test_appended_bytes_and_random_files_are_caught(tmp_path, saved):
    data, target = saved
    path = tmp_path / "other.ckpt"
    rng = np.random.default_rng(1)
    contents = [data + b"\x00", data + data, b"\x85", b"\xc0", rng.bytes(10), rng.bytes(len(data)),
                b"\x85" + rng.bytes(100) + data[-42:], msgpack.packb({"format": 2}) + data[-42:]]
    contents += [rng.bytes(int(n)) for n in rng.integers(1, 3000, 50)]
    for content in contents:
        path.write_bytes(content)
        all_loaders(path, target)


class Packed(bytes):
    """A value already in msgpack form (for nesting deeper than the msgpack packer allows)."""


def pack_map(payload: dict) -> bytes:
    """A msgpack map (fewer than 16 entries) of ``payload``, with ``Packed`` values copied as they are."""
    assert len(payload) < 16
    parts = [bytes([0x80 | len(payload)])]
    for key, value in payload.items():
        parts += [msgpack.packb(key), value if isinstance(value, Packed) else msgpack.packb(value, use_bin_type=True)]
    return b"".join(parts)


def signed(payload: dict) -> bytes:
    """A format-2 file with a valid checksum around any payload: what a crafted (not a damaged) file looks like."""
    body = pack_map(payload)
    prefix = bytes([body[0] + 1]) + body[1:] + b"\xa6sha256\xc4\x20"
    return prefix + hashlib.sha256(prefix).digest()


def nested(depth: int) -> Packed:
    """``{"a": {"a": ... {"leaf": 1}}}``, ``depth`` maps deep."""
    return Packed(b"\x81\xa1a" * depth + msgpack.packb({"leaf": 1}))


def ndarray_ext(shape, dtype: bytes, buffer: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb((shape, dtype, buffer), use_bin_type=True))


GOOD_METADATA = json.dumps(METADATA)
CRAFTED_STATES = {
    "list": [1, 2, 3], "int": 5, "none": None, "string": "state", "ragged": {"a": [[1], [1, 2]]},
    "nested 100": nested(100), "nested 3000": nested(3000), "nested 100000": nested(100_000),
    "huge": {str(i): i for i in range(200_000)},
    "int keys": {1: {"x": 2}}, "bytes keys": {b"k": 1}, "unknown ext": {"a": msgpack.ExtType(42, b"xx")},
    "bad ndarray": {"a": ndarray_ext([1_000_000_000], b"<f4", b"\x00" * 8)},
    "object ndarray": {"a": ndarray_ext([2], b"|O", b"\x00" * 16)},
    "bad dtype": {"a": ndarray_ext([2], b"nonsense", b"\x00" * 16)},
    "chunked": {"a": {"__msgpack_chunked_array__": True, "shape": {"0": 10**9}, "chunks": {"0": [1]}}},
    "wrong agent": {"agent": {"params": [1.0]}, "opt_state": 1, "key": "k", "step": {"x": None}},
    "float leaves": {"agent": 1.5},
}
CRAFTED_FIELDS = {
    "step string": {"step": "abc"}, "step negative": {"step": -1}, "step float": {"step": 1.5},
    "step huge": {"step": 2**64 - 1}, "step none": {"step": None}, "step bool": {"step": True},
    "step list": {"step": [1]}, "metadata int": {"metadata": 5}, "metadata not json": {"metadata": "{nope"},
    "metadata list": {"metadata": "[1, 2]"}, "metadata bytes": {"metadata": b"{}"},
    "metadata deep": {"metadata": "[" * 100_000 + "]" * 100_000},
    "format string": {"format": "2"}, "format float": {"format": 2.0}, "format 3": {"format": 3},
    "format bool": {"format": True}, "extra key": {"extra": 1},
}


def crafted_payloads() -> list[tuple[str, bytes]]:
    base = {"format": FORMAT_VERSION, "step": 10, "metadata": GOOD_METADATA, "state": {}}
    legacy = {**base, "format": 1}
    out = []
    for name, state in CRAFTED_STATES.items():
        out += [(f"state {name}", signed({**base, "state": state})),
                (f"legacy state {name}", pack_map({**legacy, "state": state}))]
    for name, change in CRAFTED_FIELDS.items():
        out += [(name, signed({**base, **change})), (f"legacy {name}", pack_map({**legacy, **change}))]
    for missing in ("step", "metadata", "state", "format"):
        out.append((f"missing {missing}", signed({k: v for k, v in base.items() if k != missing})))
    out += [("format 2 without checksum", pack_map(base)), ("signed twice", signed({**base, "sha256": b"0" * 32})),
            ("top-level list", msgpack.packb([1, 2, 3])), ("top-level int", msgpack.packb(7)),
            ("top-level nil", msgpack.packb(None)), ("top-level string", msgpack.packb("checkpoint")),
            ("deep arrays", b"\x91" * 100_000 + b"\x00"), ("array of 2**32", b"\xdd\xff\xff\xff\xff"),
            ("map of 2**32", b"\xdf\xff\xff\xff\xff"), ("bin of 2**32", b"\xc6\xff\xff\xff\xff")]
    return out


CRAFTED = crafted_payloads()
WELL_FORMED_STATES = {"state int", "state none", "state string", "state huge", "state float leaves"}


@pytest.mark.parametrize("name,content", CRAFTED, ids=[name for name, _ in CRAFTED])
def test_crafted_content_is_a_checkpoint_error(tmp_path, saved, name, content):
    _, target = saved
    path = tmp_path / "crafted.ckpt"
    path.write_bytes(content)
    # a scalar or a big flat map is a well-formed tree (save_checkpoint takes any pytree), only not the model's
    all_loaders(path, target, metadata_readable=name.removeprefix("legacy ") in WELL_FORMED_STATES)


def test_the_crafting_helper_makes_loadable_files(tmp_path, saved):
    """The crafted files above are refused for their content, not for their wrapping."""
    _, target = saved
    path = tmp_path / "crafted.ckpt"
    state = Packed(serialization.msgpack_serialize(serialization.to_state_dict(target)))
    for content in (signed({"format": 2, "step": 10, "metadata": GOOD_METADATA, "state": state}),
                    pack_map({"format": 1, "step": 10, "metadata": GOOD_METADATA, "state": state})):
        path.write_bytes(content)
        assert load_checkpoint(path, target)[1:] == (10, METADATA)


def test_a_folder_or_an_unreadable_path_is_a_checkpoint_error(tmp_path, saved):
    _, target = saved
    all_loaders(tmp_path, target)
    all_loaders(tmp_path / "missing.ckpt", target)


def test_format_1_files_without_a_checksum_still_load(tmp_path, saved):
    """What rlrobot wrote before checksums: the same map, format 1, no sha256."""
    _, target = saved
    state = serialization.to_state_dict(real_state())
    legacy = serialization.msgpack_serialize({"format": 1, "step": 77, "metadata": GOOD_METADATA, "state": state})
    path = tmp_path / "old.ckpt"
    path.write_bytes(legacy)
    restored, step, metadata = load_checkpoint(path, target)
    assert (step, metadata) == (77, METADATA)
    assert np.array_equal(restored["key"], real_state()["key"])
    assert read_metadata(path) == (77, METADATA)


def test_export_and_validate_report_a_damaged_checkpoint_in_one_line(tmp_path, saved, capsys):
    from rlrobot.export import main as export_main
    from rlrobot.validate import main as validate_main

    data, _ = saved
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x10
    behavior = tmp_path / "run" / "MobileRobot"
    behavior.mkdir(parents=True)
    (behavior / "checkpoint.ckpt").write_bytes(bytes(damaged))
    assert export_main([str(tmp_path / "run")]) == 2
    assert validate_main([str(tmp_path / "run")]) == 2
    out = capsys.readouterr()
    errors = [line for line in out.out.splitlines() if line.startswith("[ERROR]")]
    assert len(errors) == 2 and all("checksum" in line and "checkpoint.ckpt" in line for line in errors)
    assert "Traceback" not in out.out + out.err
    assert sorted(p.name for p in behavior.iterdir()) == ["checkpoint.ckpt"]


# --- crash leftovers --------------------------------------------------------------------------------------------


def test_remove_stale_temporaries_removes_only_our_temp_files(tmp_path):
    run, behavior = tmp_path / "run", tmp_path / "run" / "MobileRobot"
    (run / "run_logs").mkdir(parents=True)
    behavior.mkdir()
    ours = [behavior / "MobileRobot-2048.ckpt.tmp", behavior / "checkpoint.ckpt.tmp",
            behavior / "MobileRobot-2048.onnx.tmp", behavior / "metrics.jsonl.tmp", run / "MobileRobot.onnx.tmp",
            run / "configuration.yaml.tmp", run / "run_logs" / "training_status.json.tmp"]
    theirs = [behavior / "notes.tmp", behavior / "MobileRobot-2048.ckpt", run / "data.tmp", run / "x.tmp.ckpt",
              behavior / "sub" / "inner.ckpt.tmp"]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    (run / "folder.ckpt.tmp").mkdir()
    (run / "link.onnx.tmp").symlink_to(behavior / "MobileRobot-2048.ckpt")

    removed = remove_stale_temporaries(run, run / "run_logs", behavior, tmp_path / "missing")
    assert sorted(removed) == sorted(ours)
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs) and (run / "folder.ckpt.tmp").is_dir()
    assert (run / "link.onnx.tmp").is_symlink()
    assert remove_stale_temporaries(run, behavior) == []


def manager(root: Path, keep: int) -> CheckpointManager:
    status_path = root / "run_logs" / "training_status.json"
    return CheckpointManager(root / "MobileRobot", "MobileRobot", keep, TrainingStatus.load(status_path), status_path)


def write_onnx(stem: Path) -> list[Path]:
    path = stem.with_suffix(".onnx")
    path.write_bytes(b"onnx")
    return [path]


def test_adopt_orphans_lists_unrecorded_step_files_and_trims_them(tmp_path):
    first = manager(tmp_path, keep=3)
    state = {"w": np.zeros(3, np.float32)}
    for step in (100, 200, 300):
        first.save(state, step, 1.0, {}, extra_files=write_onnx)
    behavior = tmp_path / "MobileRobot"
    # A kill -9 between writing the step files and the status update, twice (the second before the .onnx).
    for step, onnx in ((400, True), (500, False)):
        save_checkpoint(behavior / f"MobileRobot-{step}.ckpt", state, step, {})
        if onnx:
            write_onnx(behavior / f"MobileRobot-{step}")
    save_checkpoint(behavior / "MobileRobot-50.ckpt", state, 50, {})  # an older orphan: sorted first, then trimmed
    unrelated = [behavior / "MobileRobot-final.ckpt", behavior / "Other-600.ckpt", behavior / "MobileRobot-7.ckpt.bak",
                 behavior / "MobileRobot-x7.onnx", behavior / "MobileRobot-700.pt"]
    for path in unrelated:
        path.write_bytes(b"keep me")

    resumed = manager(tmp_path, keep=3)
    assert resumed.adopt_orphans() == [50, 400, 500]
    entries = resumed.status.checkpoints("MobileRobot")
    assert [e["steps"] for e in entries] == [300, 400, 500]
    assert entries[1]["file_path"] == str(behavior / "MobileRobot-400.onnx")
    assert entries[1]["auxillary_file_paths"] == [str(behavior / "MobileRobot-400.ckpt")]
    assert entries[2]["file_path"] == str(behavior / "MobileRobot-500.ckpt") and entries[2]["reward"] is None
    assert all(isinstance(e["creation_time"], float) for e in entries)
    step_files = sorted(p.name for p in behavior.glob("MobileRobot-*") if p not in unrelated)
    assert step_files == ["MobileRobot-300.ckpt", "MobileRobot-300.onnx", "MobileRobot-400.ckpt",
                          "MobileRobot-400.onnx", "MobileRobot-500.ckpt"]
    assert all(p.read_bytes() == b"keep me" for p in unrelated)
    on_disk = json.loads((tmp_path / "run_logs" / "training_status.json").read_text())
    assert [e["steps"] for e in on_disk["MobileRobot"]["checkpoints"]] == [300, 400, 500]
    assert manager(tmp_path, keep=3).adopt_orphans() == []  # nothing left to adopt

    resumed.save(state, 600, 2.0, {}, extra_files=write_onnx)  # keep_checkpoints now deletes the adopted in turn
    resumed.save(state, 700, 2.0, {}, extra_files=write_onnx)
    assert not (behavior / "MobileRobot-400.ckpt").exists() and not (behavior / "MobileRobot-400.onnx").exists()
    assert [e["steps"] for e in resumed.status.checkpoints("MobileRobot")] == [500, 600, 700]


def test_adopt_orphans_without_a_status_file_and_with_keep_all(tmp_path):
    behavior = tmp_path / "MobileRobot"
    behavior.mkdir()
    for step in (30, 10, 20):
        save_checkpoint(behavior / f"MobileRobot-{step}.ckpt", {"w": np.zeros(1)}, step, {})
    checkpoints = manager(tmp_path, keep=0)
    assert checkpoints.adopt_orphans() == [10, 20, 30]
    assert [e["steps"] for e in checkpoints.status.checkpoints("MobileRobot")] == [10, 20, 30]
    assert len(list(behavior.glob("*.ckpt"))) == 3


def write_metrics(path: Path, steps: list[int], tail: str = "") -> None:
    path.write_text("".join(json.dumps({"step": s, "wall_time": 1.0}) + "\n" for s in steps) + tail)


def test_truncate_metrics_keeps_the_lines_up_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_metrics(path, [1000, 2000, 3000, 4000, 5000], tail='{"step": 6000, "wall_t')  # a torn last line
    assert truncate_metrics(path, 3000) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1000, 2000, 3000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]

    before = path.stat()
    assert truncate_metrics(path, 3000) == 0  # nothing to drop: the file is not rewritten
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    write_metrics(path, [1000, 2000], tail="not json\n[1, 2]\n{\"step\": \"3\"}\n\n")
    assert truncate_metrics(path, 10_000) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1000, 2000]
    assert truncate_metrics(path, 0) == 2 and path.read_text() == ""
    assert truncate_metrics(tmp_path / "missing.jsonl", 5) == 0
    assert not (tmp_path / "missing.jsonl").exists()


def test_truncate_metrics_failure_leaves_the_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    write_metrics(path, [1, 2, 3])
    before = path.read_bytes()

    def fail(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("rlrobot.checkpoints.os.replace", fail)
    with pytest.raises(OSError):
        truncate_metrics(path, 1)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_atomic_copy_never_leaves_a_partial_target_or_a_temp_file(tmp_path, monkeypatch):
    source, target = tmp_path / "MobileRobot-100.onnx", tmp_path / "MobileRobot.onnx"
    source.write_bytes(os.urandom(300_000))
    assert atomic_copy(source, target) == target and target.read_bytes() == source.read_bytes()

    def copy_half_then_fail(src, dst, length=0):
        dst.write(src.read(1000))
        raise OSError(errno.ENOSPC, "No space left on device")

    old = target.read_bytes()
    source.write_bytes(os.urandom(300_000))
    monkeypatch.setattr("rlrobot.checkpoints.shutil.copyfileobj", copy_half_then_fail)
    with pytest.raises(OSError, match="No space"):
        atomic_copy(source, target)
    assert target.read_bytes() == old
    target.unlink()
    with pytest.raises(OSError):
        atomic_copy(source, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MobileRobot-100.onnx"]
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing.onnx", target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MobileRobot-100.onnx"]


@contextlib.contextmanager
def tmpfs(directory: Path, options: str):
    """A tiny tmpfs at ``directory`` (root only); skips the test when it can't be mounted."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot mount a tmpfs to test a full disk / read-only folder: {error}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to test a full disk / read-only folder: {proc.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], capture_output=True, timeout=30)


def test_a_full_disk_leaves_no_empty_copy_and_no_temp_file(tmp_path):
    source = tmp_path / "MobileRobot-100.onnx"
    source.write_bytes(os.urandom(256 * 1024))
    with tmpfs(tmp_path / "disk", "size=64k") as disk:
        with pytest.raises(OSError) as caught:
            atomic_copy(source, disk / "MobileRobot.onnx")
        assert caught.value.errno == errno.ENOSPC
        with pytest.raises(OSError):
            atomic_write_bytes(disk / "checkpoint.ckpt", os.urandom(256 * 1024))
        assert list(disk.iterdir()) == []
        atomic_write_bytes(disk / "small.json", b"{}")  # what fits is still written
        assert [p.name for p in disk.iterdir()] == ["small.json"]
