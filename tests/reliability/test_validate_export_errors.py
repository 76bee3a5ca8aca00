"""``rlrobot-validate`` and ``rlrobot-export`` against bad input and bad output places: each problem is one
``[ERROR]`` line naming the file or flag, exit code 2, no traceback, and nothing half-written (no ``.tmp``, no empty
file). Also: a killed run is validated from its checkpoint, and any number of episodes runs in batches."""
import contextlib
import dataclasses
import errno
import json
import math
import os
import subprocess
from pathlib import Path

import jax
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rlrobot import validate
from rlrobot.checkpoints import save_checkpoint
from rlrobot.export import export_policy
from rlrobot.export import main as export_main
from rlrobot.networks import NetworkSpec, init_agent
from rlrobot.onnx_policy import load_onnx_policy
from rlrobot.validate import main as validate_main

SPEC = NetworkSpec(obs_size=19, action_size=2, hidden_units=8, num_layers=1, normalize=True)
METADATA = {"behavior": "MobileRobot", "network": dataclasses.asdict(SPEC)}
FAST = ["--episodes", "16", "--max-steps", "4"]


def make_run(root: Path, onnx_file: bool = False, metadata: dict | None = None) -> Path:
    """``root/run`` as a killed run leaves it: ``MobileRobot/checkpoint.ckpt`` (and with ``onnx_file`` the final
    ``MobileRobot.onnx`` of a finished one)."""
    run = root / "run"
    (run / "MobileRobot").mkdir(parents=True)
    agent = init_agent(jax.random.PRNGKey(0), SPEC)
    save_checkpoint(run / "MobileRobot" / "checkpoint.ckpt", {"agent": agent}, 100, metadata or METADATA)
    if onnx_file:
        export_policy(agent, SPEC, run / "MobileRobot.onnx")
    return run


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def one_error(capsys, *needles: str) -> str:
    """The one ``[ERROR]`` line printed, with every needle in it; no traceback anywhere."""
    out = capsys.readouterr()
    errors = [line for line in out.out.splitlines() if line.startswith("[ERROR]")]
    assert len(errors) == 1, out.out + out.err
    assert "Traceback" not in out.out + out.err
    assert all(needle in errors[0] for needle in needles), errors[0]
    return errors[0]


def _skip_unless(proc_or_error, what: str) -> None:
    if isinstance(proc_or_error, Exception) or proc_or_error.returncode != 0:
        reason = proc_or_error if isinstance(proc_or_error, Exception) else proc_or_error.stderr.strip()
        pytest.skip(f"running as root, where chmod does not make a folder read-only, and {what} failed: {reason}")


def _mount(*args: str):
    try:
        return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        return error


@contextlib.contextmanager
def read_only_folder(path: Path, content: dict[str, bytes] | None = None):
    """A read-only folder holding ``content`` that stays read-only for root too: chmod 555, and when that does not
    stop writes (root) a tiny tmpfs mounted there, filled, then remounted ``ro``; skips if it can't be made."""
    path.mkdir(parents=True)
    for name, data in (content or {}).items():
        (path / name).write_bytes(data)
    path.chmod(0o555)
    try:
        if not os.access(path, os.W_OK):  # not root: chmod is enough
            yield path
            return
        _skip_unless(_mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)), "mounting a tmpfs")
        try:
            for name, data in (content or {}).items():
                (path / name).write_bytes(data)
            _skip_unless(_mount("-o", "remount,ro", str(path)), "remounting the tmpfs read-only")
            yield path
        finally:
            subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
    finally:
        path.chmod(0o755)


# --- rlrobot-validate: the policy file ------------------------------------------------------------------------


def broken_onnx(tmp_path: Path) -> dict[str, Path]:
    good = export_policy(init_agent(jax.random.PRNGKey(0), SPEC), SPEC, tmp_path / "good.onnx")

    def variant(name: str, change) -> Path:
        model = onnx.load(str(good))
        change(model)
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        return path

    def no_shape(model):
        model.graph.input[0].CopyFrom(helper.make_tensor_value_info("obs_0", TensorProto.FLOAT, None))

    def scalar_actions(model):  # deterministic_continuous_actions is a 0-d constant
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.0, np.float32), "scalar"))
        for node in model.graph.node:
            if node.output[0] == "deterministic_continuous_actions":
                node.op_type, node.input[:] = "Identity", ["scalar"]

    def unknown_op(model):
        model.graph.node[0].op_type = "Conv"

    def missing_input(model):
        model.graph.node[0].input[0] = "nowhere"

    def no_outputs(model):
        del model.graph.output[:]

    random = tmp_path / "random.onnx"
    random.write_bytes(np.random.default_rng(0).bytes(2000))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    text = tmp_path / "text.onnx"
    text.write_text("not a model\n")
    variants = {name: variant(name, change) for name, change in (
        ("no_shape", no_shape), ("scalar_actions", scalar_actions), ("unknown_op", unknown_op),
        ("missing_input", missing_input), ("no_outputs", no_outputs))}
    return {"random": random, "empty": empty, "text": text, **variants}


def test_a_broken_onnx_is_one_error_line(tmp_path, capsys):
    for name, path in broken_onnx(tmp_path).items():
        with pytest.raises(ValueError) as caught:
            load_onnx_policy(path)
        assert "\n" not in str(caught.value) and str(path) in str(caught.value), name
        assert validate_main([str(path), *FAST]) == 2, name
        one_error(capsys, str(path))
    assert not list(tmp_path.glob("*.json"))


def test_missing_policy_and_wrong_kinds_of_file(tmp_path, capsys):
    (tmp_path / "policy.txt").write_text("x")
    (tmp_path / "emptyrun").mkdir()
    for path in (tmp_path / "missing.onnx", tmp_path / "policy.txt", tmp_path / "emptyrun"):
        assert validate_main([str(path), *FAST]) == 2
        one_error(capsys, str(path))


# --- rlrobot-validate: a killed run ---------------------------------------------------------------------------


def test_a_killed_run_is_validated_from_its_checkpoint(tmp_path, capsys):
    run = make_run(tmp_path)
    assert validate.resolve_policy_file(run) == run / "MobileRobot" / "checkpoint.ckpt"
    assert "checkpoint.ckpt" in capsys.readouterr().out  # it says which file it uses
    assert validate.resolve_policy_file(run / "MobileRobot") == run / "MobileRobot" / "checkpoint.ckpt"

    (run / "MobileRobot.onnx").write_bytes(b"")  # a full disk during the final copy
    assert validate.resolve_policy_file(run) == run / "MobileRobot" / "checkpoint.ckpt"
    out = capsys.readouterr().out
    assert "MobileRobot.onnx: skipped, the file is empty" in out and "checkpoint.ckpt" in out

    assert validate_main([str(run), *FAST]) == 0
    table = json.loads((run / "MobileRobot" / "checkpoint.validation.json").read_text())
    assert table["policy"] == str(run / "MobileRobot" / "checkpoint.ckpt") and table["behavior"] == "MobileRobot"
    assert not list(run.rglob("*.tmp"))


def test_a_finished_run_uses_its_onnx(tmp_path, capsys):
    run = make_run(tmp_path, onnx_file=True)
    assert validate.resolve_policy_file(run) == run / "MobileRobot.onnx"
    assert "[WARNING]" not in capsys.readouterr().out


# --- rlrobot-validate: arguments and the JSON -----------------------------------------------------------------


@pytest.mark.parametrize("args,flag", [
    (["--max-steps", "0"], "--max-steps 0"), (["--max-steps", "-1"], "--max-steps -1"),
    (["--max-steps", str(2**31)], "--max-steps"), (["--episodes", "0"], "--episodes 0"),
    (["--episodes", "-5"], "--episodes -5"), (["--seed", str(2**64)], "--seed")])
def test_bad_numbers_are_refused(tmp_path, capsys, args, flag):
    run = make_run(tmp_path)
    before = files(tmp_path)
    assert validate_main([str(run), *args]) == 2
    one_error(capsys, flag)
    assert files(tmp_path) == before


def test_json_into_a_place_that_cannot_hold_it(tmp_path, capsys):
    run = make_run(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    before = files(tmp_path)
    for target, needle in ((tmp_path / "missing" / "v.json", "does not exist"), (blocker / "v.json", "not a folder"),
                           (run, "is a folder"), (tmp_path / "emptydir", "is a folder")):
        if target.name == "emptydir":
            target.mkdir()
            before = files(tmp_path)
        assert validate_main([str(run), *FAST, "--json", str(target)]) == 2
        one_error(capsys, f"--json {target}", needle)
        assert files(tmp_path) == before


def test_json_into_a_read_only_folder(tmp_path, capsys):
    run = make_run(tmp_path)
    with read_only_folder(tmp_path / "ro") as folder:
        assert validate_main([str(run), *FAST, "--json", str(folder / "v.json")]) == 2
        one_error(capsys, f"--json {folder / 'v.json'}", "cannot write")
        assert list(folder.iterdir()) == []


def test_a_failed_json_write_leaves_nothing(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path)
    out = tmp_path / "v.json"

    def fail(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("rlrobot.checkpoints.os.replace", fail)
    assert validate_main([str(run), *FAST, "--json", str(out)]) == 2
    one_error(capsys, f"--json {out}", "No space left on device")
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


# --- rlrobot-validate: many episodes in batches ---------------------------------------------------------------


def test_the_batch_keeps_the_arena_of_every_robot():
    assert validate.JAX_BATCH % 8 == 0  # robot offset + i plays in arena i mod 8 of its batch


def test_episode_totals_match_episode_summary():
    rng = np.random.default_rng(0)
    n = 1000
    success, finished = rng.random(n) < 0.7, rng.random(n) < 0.9
    returns, lengths = rng.normal(1.0, 2.0, n).astype(np.float32), rng.integers(1, 300, n).astype(np.float32)
    expected = validate.episode_summary(success[finished], returns[finished], lengths[finished])
    totals = validate.EpisodeTotals()
    for lo, hi in ((0, 1), (1, 1), (1, 333), (333, 334), (334, 1000)):
        totals.add(success[lo:hi], returns[lo:hi], lengths[lo:hi], finished[lo:hi])
    got = totals.summary()
    assert got.pop("unfinished") == int((~finished).sum()) and totals.played == n
    assert got.keys() == expected.keys() and got["episodes"] == expected["episodes"]
    for key in expected:
        np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(expected[key], float), rtol=1e-6,
                                   err_msg=key)
    empty = validate.EpisodeTotals()
    empty.add(success[:3], returns[:3], lengths[:3], np.zeros(3, bool))
    assert empty.summary()["episodes"] == 0 and math.isnan(empty.summary()["success_rate"])


def test_batches_are_independent_first_episodes(shared_data, monkeypatch):
    """32 episodes in batches of 16 are two first_episodes runs with folded keys, summarised together (with
    Unity's trained policy, so that episodes end)."""
    import envs
    from envs.rollout import first_episodes

    policy_file = shared_data / "MobileRobot-19obs.onnx"
    monkeypatch.setattr(validate, "JAX_BATCH", 16)
    _, summary = validate.validate_in_jax(policy_file, None, 32, True, 3, 60)

    policy = validate.load_policy(policy_file)
    env = envs.make("MobileRobot")
    run = jax.jit(lambda key: first_episodes(env, env.default_params, lambda obs, _: policy.act(obs), key, 16, 60))
    parts = [jax.device_get(run(jax.random.fold_in(jax.random.PRNGKey(3), i))) for i in range(2)]
    finished = np.concatenate([p.finished for p in parts])
    expected = validate.episode_summary(np.concatenate([p.success for p in parts])[finished],
                                        np.concatenate([p.returns for p in parts])[finished],
                                        np.concatenate([p.lengths for p in parts])[finished])
    assert summary["unfinished"] == int((~finished).sum())
    assert summary["episodes"] == expected["episodes"] > 0
    for key_name in ("success_rate", "mean_return", "std_return", "mean_length"):
        np.testing.assert_allclose(summary[key_name], expected[key_name], rtol=1e-5, err_msg=key_name)


def test_many_episodes_never_simulate_more_than_a_batch(tmp_path, monkeypatch):
    """The simulator sees at most JAX_BATCH robots at once whatever --episodes says (a stand-in rollout here; the
    jitted batch is traced once per size)."""
    import envs.rollout
    from envs.rollout import EpisodeStats

    sizes = []

    def fake_first_episodes(env, params, policy, key, num_envs, max_steps):
        sizes.append(num_envs)
        ones = np.ones(num_envs, bool)
        return EpisodeStats(success=ones, finished=ones, returns=np.full(num_envs, 2.0, np.float32),
                            lengths=np.full(num_envs, 20.0, np.float32), obs_sum=np.zeros(19), obs_sq_sum=np.zeros(19),
                            obs_count=np.float32(0))

    monkeypatch.setattr(envs.rollout, "first_episodes", fake_first_episodes)
    monkeypatch.setattr(validate, "JAX_BATCH", 3_000_000)  # 4 batches: the test stays quick
    policy_file = make_run(tmp_path) / "MobileRobot" / "checkpoint.ckpt"
    _, summary = validate.validate_in_jax(policy_file, None, 10_000_000, True, 0, 10)
    assert sizes == [3_000_000, 1_000_000] and summary["episodes"] == 10_000_000
    assert summary["success_rate"] == 1.0 and summary["mean_length"] == 20.0 and summary["unfinished"] == 0


# --- rlrobot-export -------------------------------------------------------------------------------------------


def test_export_output_that_cannot_be_written(tmp_path, capsys):
    run = make_run(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    (tmp_path / "outdir").mkdir()
    before = files(tmp_path)
    for target, needle in ((tmp_path / "missing" / "p.onnx", "does not exist"), (blocker / "p.onnx", "not a folder"),
                           (tmp_path / "outdir", "is a folder")):
        assert export_main([str(run), "-o", str(target)]) == 2
        one_error(capsys, f"-o {target}", needle)
        assert files(tmp_path) == before  # no <dir>.tmp, no empty file


def test_export_into_a_read_only_folder(tmp_path, capsys):
    run = make_run(tmp_path)
    with read_only_folder(tmp_path / "ro") as folder:
        assert export_main([str(run), "-o", str(folder / "p.onnx")]) == 2
        one_error(capsys, f"-o {folder / 'p.onnx'}", "cannot write")
        assert list(folder.iterdir()) == []


def test_export_beside_a_read_only_checkpoint(tmp_path, capsys):
    data = (make_run(tmp_path) / "MobileRobot" / "checkpoint.ckpt").read_bytes()
    with read_only_folder(tmp_path / "ro", {"checkpoint.ckpt": data}) as folder:
        assert export_main([str(folder / "checkpoint.ckpt")]) == 2
        one_error(capsys, str(folder / "MobileRobot.onnx"), "cannot write")
        assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.ckpt"]


def test_a_failed_onnx_write_leaves_the_old_file_and_no_temp(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path)
    out = tmp_path / "p.onnx"
    out.write_bytes(b"old")

    def fail(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("rlrobot.checkpoints.os.replace", fail)
    assert export_main([str(run), "-o", str(out)]) == 2
    one_error(capsys, f"-o {out}", "No space left on device")
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx", "run"]


@pytest.mark.parametrize("metadata,needle", [
    ({"behavior": "MobileRobot"}, "no network description"),
    ({"network": [1, 2]}, "no network description"),
    ({"network": {**METADATA["network"], "hidden_units": "8"}}, "bad values for hidden_units"),
    ({"network": {**METADATA["network"], "num_layers": 0}}, "bad values for num_layers"),
    ({"network": {**METADATA["network"], "normalize": 1}}, "bad values for normalize"),
    ({"network": {**METADATA["network"], "colour": "red"}}, "unknown colour"),
    ({"network": {"obs_size": 19}}, "missing action_size"),
    ({"network": {**METADATA["network"], "hidden_units": 10**6}}, "implausibly large"),
    ({**METADATA, "observation_sizes": 19}, "observation_sizes"),
    ({**METADATA, "observation_sizes": [1, 17]}, "observation_sizes"),
    ({**METADATA, "observation_sizes": ["19"]}, "observation_sizes"),
])
def test_export_refuses_damaged_metadata(tmp_path, capsys, metadata, needle):
    run = make_run(tmp_path, metadata=metadata)
    before = files(tmp_path)
    assert export_main([str(run)]) == 2
    one_error(capsys, "checkpoint.ckpt", needle)
    assert files(tmp_path) == before


def test_export_names_its_file_safely(tmp_path, capsys):
    run = make_run(tmp_path, metadata={**METADATA, "behavior": "../../escape"})
    assert export_main([str(run)]) == 0
    assert (run / "MobileRobot" / "policy.onnx").is_file() and not (tmp_path / "escape.onnx").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_export_with_several_behaviors_asks_which(tmp_path, capsys):
    run = make_run(tmp_path)
    other = run / "Other"
    other.mkdir()
    (other / "checkpoint.ckpt").write_bytes((run / "MobileRobot" / "checkpoint.ckpt").read_bytes())
    assert export_main([str(run)]) == 2
    one_error(capsys, str(run), "several behaviors")
