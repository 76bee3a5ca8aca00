import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from rlrobot.checkpoints import CheckpointError, CheckpointManager, load_checkpoint, save_checkpoint
from rlrobot.summaries import TrainingStatus


@struct.dataclass
class State:
    params: dict
    opt_state: optax.OptState
    key: jax.Array
    typed_key: jax.Array
    step: jax.Array
    episodes: int


def make_state(seed: int = 0, width: int = 3) -> State:
    rng = np.random.default_rng(seed)
    params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(4, width)), jnp.float32),
                        "bias": jnp.asarray(rng.normal(size=(width,)), jnp.float32)}}
    return State(params=params, opt_state=optax.adam(1e-3).init(params), key=jax.random.PRNGKey(seed),
                 typed_key=jax.random.key(seed + 1), step=jnp.int32(seed * 10), episodes=seed)


def assert_bit_exact(a, b) -> None:
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert type(x) is type(y)
        assert np.asarray(x).dtype == np.asarray(y).dtype
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_round_trip_is_bit_exact_with_prng_keys(tmp_path):
    saved = make_state(seed=3)
    path = save_checkpoint(tmp_path / "MobileRobot-30.ckpt", saved, 30, {"behavior": "MobileRobot", "reward": 1.5})
    assert path == tmp_path / "MobileRobot-30.ckpt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MobileRobot-30.ckpt"]  # no .tmp left behind

    restored, step, metadata = load_checkpoint(path, make_state(seed=0))
    assert_bit_exact(restored, saved)
    assert (step, metadata) == (30, {"behavior": "MobileRobot", "reward": 1.5})
    # Restored keys still work as keys and give the same numbers.
    assert jnp.array_equal(jax.random.normal(restored.key, (2,)), jax.random.normal(saved.key, (2,)))
    assert jnp.array_equal(jax.random.normal(restored.typed_key, (2,)), jax.random.normal(saved.typed_key, (2,)))


def test_overwrite_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "x.ckpt"
    save_checkpoint(path, make_state(1), 1, {})
    before = path.read_bytes()

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr("rlrobot.checkpoints.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_state(2), 2, {})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]


def test_mismatched_structure_raises_checkpoint_error_naming_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "MobileRobot-10.ckpt", make_state(width=3), 10, {})
    with pytest.raises(CheckpointError) as shape_error:
        load_checkpoint(path, make_state(width=5))
    message = str(shape_error.value)
    assert "\n" not in message and str(path) in message
    assert "params/dense/kernel is float32[4, 3] in the file but the model has float32[4, 5]" in message

    with pytest.raises(CheckpointError, match="missing params/extra") as key_error:
        load_checkpoint(path, make_state().replace(params={**make_state().params, "extra": jnp.zeros(2)},
                                                   opt_state=make_state().opt_state))
    assert str(path) in str(key_error.value)

    with pytest.raises(CheckpointError, match="step is int32\\[\\] in the file but the model has float32\\[\\]"):
        load_checkpoint(path, make_state().replace(step=jnp.float32(0)))


def test_unreadable_or_missing_file_raises_checkpoint_error(tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00\x01not msgpack at all")
    for path in (garbage, tmp_path / "missing.ckpt"):
        with pytest.raises(CheckpointError, match=str(path.name)):
            load_checkpoint(path, make_state())


def manager(tmp_path: Path, keep: int = 5) -> CheckpointManager:
    status_path = tmp_path / "run_logs" / "training_status.json"
    return CheckpointManager(tmp_path / "MobileRobot", "MobileRobot", keep, TrainingStatus.load(status_path),
                             status_path)


def test_manager_keeps_the_newest_checkpoints_and_records_them(tmp_path):
    checkpoints = manager(tmp_path, keep=5)
    assert checkpoints.latest_path() is None
    steps = [1000 * i for i in range(1, 8)]
    for step in steps:
        path = checkpoints.save(make_state(step % 7), step, float(step) / 1000, {"behavior": "MobileRobot"})
        assert path == tmp_path / "MobileRobot" / f"MobileRobot-{step}.ckpt"

    behavior_dir = tmp_path / "MobileRobot"
    assert sorted(p.name for p in behavior_dir.iterdir()) == sorted(
        ["checkpoint.ckpt"] + [f"MobileRobot-{s}.ckpt" for s in steps[2:]])
    status = json.loads((tmp_path / "run_logs" / "training_status.json").read_text())
    entries = status["MobileRobot"]["checkpoints"]
    assert [e["steps"] for e in entries] == steps[2:]
    assert entries[-1]["file_path"] == str(behavior_dir / "MobileRobot-7000.ckpt")
    assert entries[-1]["reward"] == 7.0 and entries[-1]["auxillary_file_paths"] == []

    latest = checkpoints.latest_path()
    assert latest == behavior_dir / "checkpoint.ckpt"
    assert latest.read_bytes() == (behavior_dir / "MobileRobot-7000.ckpt").read_bytes()
    _, step, _ = load_checkpoint(latest, make_state())
    assert step == 7000


def test_manager_records_extra_files_and_deletes_them_with_their_checkpoint(tmp_path):
    def write_onnx(stem: Path) -> list[Path]:
        onnx = stem.with_suffix(".onnx")
        onnx.write_bytes(b"onnx")
        return [onnx]

    checkpoints = manager(tmp_path, keep=2)
    for step in (10, 20, 30):
        checkpoints.save(make_state(), step, None, {}, extra_files=write_onnx)
    behavior_dir = tmp_path / "MobileRobot"
    assert sorted(p.name for p in behavior_dir.iterdir()) == [
        "MobileRobot-20.ckpt", "MobileRobot-20.onnx", "MobileRobot-30.ckpt", "MobileRobot-30.onnx", "checkpoint.ckpt"]
    entry = checkpoints.status.checkpoints("MobileRobot")[-1]
    assert entry["file_path"] == str(behavior_dir / "MobileRobot-30.onnx")
    assert entry["auxillary_file_paths"] == [str(behavior_dir / "MobileRobot-30.ckpt")]
    assert entry["reward"] is None


def test_resumed_manager_continues_the_saved_list(tmp_path):
    first = manager(tmp_path, keep=3)
    for step in (1, 2, 3):
        first.save(make_state(), step, 0.0, {})
    resumed = manager(tmp_path, keep=3)  # reloads training_status.json
    resumed.save(make_state(), 4, 0.0, {})
    resumed.save(make_state(), 4, 1.0, {})  # a stop right after a checkpoint saves the same step again
    assert [e["steps"] for e in resumed.status.checkpoints("MobileRobot")] == [2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "MobileRobot").glob("MobileRobot-*")) == [
        "MobileRobot-2.ckpt", "MobileRobot-3.ckpt", "MobileRobot-4.ckpt"]
