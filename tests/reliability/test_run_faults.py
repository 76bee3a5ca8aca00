"""Faults around a whole run, as a user meets them: Ctrl+C / SIGTERM during the compile and mid-run, a full disk,
``--force`` over an old run, and step counts past int32. Each runs ``rlrobot-learn`` as a separate process."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rlrobot.checkpoints import read_metadata

REPO = Path(__file__).resolve().parents[2]
CONFIG = """
behaviors:
  MobileRobot:
    trainer_type: ppo
    hyperparameters: {{batch_size: 128, buffer_size: 512, learning_rate: 0.001, num_epoch: 2}}
    network_settings: {{normalize: true, hidden_units: {hidden}, num_layers: 2}}
    keep_checkpoints: {keep}
    checkpoint_interval: {checkpoint}
    max_steps: {max_steps}
    time_horizon: 32
    summary_freq: 1024
env_settings: {{num_envs: 16, seed: 3}}
"""


def write_config(tmp_path: Path, max_steps: int = 4096, checkpoint: int = 1024, hidden: int = 16,
                 keep: int = 5) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.format(max_steps=max_steps, checkpoint=checkpoint, hidden=hidden, keep=keep))
    return path


def learn(config: Path, results: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-c", "from rlrobot.cli import entry; entry()", str(config), "--results-dir",
               str(results), *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120) -> list[str]:
    """Lines read until one contains ``marker``."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    proc.kill()
    raise AssertionError(f"{marker!r} never came:\n{''.join(lines)}")


def finish(proc: subprocess.Popen, lines: list[str], timeout: float = 120) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(lines) + out


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]])
def test_a_signal_during_the_compile_ends_the_run_cleanly(tmp_path, signals):
    # No compile cache: a program loaded from it is ready in a few hundredths of a second, before the signal.
    proc = learn(write_config(tmp_path), tmp_path / "results", "--run-id=c", "--no-compile-cache")
    lines = wait_for(proc, "agent-steps per update")   # logged right before the compile starts
    time.sleep(0.3)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.2)
    code, out = finish(proc, lines)
    assert code == 130, out
    assert "Interrupted before training started; nothing was saved." in out
    assert "Traceback" not in out and "Step:" not in out
    assert not list((tmp_path / "results" / "c" / "MobileRobot").glob("*.ckpt"))


def test_ctrl_c_mid_run_saves_a_checkpoint_that_resumes(tmp_path):
    config = write_config(tmp_path, max_steps=10**9, checkpoint=512)
    proc = learn(config, tmp_path / "results", "--run-id=m")
    lines = wait_for(proc, "Exported")   # training is under way and saving
    for _ in range(3):  # a second and third Ctrl+C while it saves change nothing
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    code, out = finish(proc, lines)
    assert code == 0 and "Traceback" not in out, out
    assert "nothing was saved" not in out
    latest = tmp_path / "results" / "m" / "MobileRobot" / "checkpoint.ckpt"
    step, _ = read_metadata(latest)
    assert step >= 512 and step % 512 == 0
    resumed = learn(write_config(tmp_path, max_steps=step + 512, checkpoint=512), tmp_path / "results",
                    "--run-id=m", "--resume")
    code, out = finish(resumed, [])
    assert code == 0 and read_metadata(latest)[0] == step + 512, out


def test_force_removes_the_old_runs_checkpoints(tmp_path):
    config, results = write_config(tmp_path, max_steps=1024), tmp_path / "results"
    assert finish(learn(config, results, "--run-id=f"), [])[0] == 0
    proc = learn(config, results, "--run-id=f", "--force")
    lines = wait_for(proc, "agent-steps per update")
    proc.send_signal(signal.SIGINT)   # the forced run stops before its first save
    code, out = finish(proc, lines)
    assert code == 130 and "Deleting MobileRobot/checkpoint.ckpt that was left over from a previous run." in out
    code, out = finish(learn(config, results, "--run-id=f", "--resume"), [])
    assert code == 2 and "no checkpoint to resume from" in out   # never the old weights under the new settings


def _mount_tmpfs(directory: Path, size: str) -> None:
    directory.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot mount a small tmpfs here to fill ({error})")


def test_a_full_disk_stops_the_run_with_one_error_and_keeps_the_last_checkpoint(tmp_path):
    results = tmp_path / "results"
    _mount_tmpfs(results, "1500k")
    try:
        # 128 hidden units: a checkpoint file is ~0.46 MB, so the second checkpoint does not fit in 1.5 MB.
        config = write_config(tmp_path, max_steps=8192, checkpoint=1024, hidden=128, keep=1)
        code, out = finish(learn(config, results, "--run-id=d"), [], timeout=300)
        assert code == 1, out
        errors = [line for line in out.splitlines() if line.startswith("[ERROR]")]
        assert len(errors) == 1 and "No space left on device" in errors[0], out
        assert "Traceback" not in out
        behavior = results / "d" / "MobileRobot"
        files = [p for p in results.rglob("*") if p.is_file()]
        assert not [p for p in files if p.name.endswith(".tmp")], files
        assert not [p for p in files if p.stat().st_size == 0 and p.suffix in (".onnx", ".ckpt", ".json")], files
        step, _ = read_metadata(behavior / "checkpoint.ckpt")   # the last good checkpoint loads
        assert step >= 1024 and str(behavior / "checkpoint.ckpt") in errors[0]
        assert (results / "d" / "configuration.yaml").is_file()
    finally:
        subprocess.run(["umount", str(results)], check=False)


def test_step_counts_past_int32_stay_exact(tmp_path):
    """A GPU run passes 2**31 agent steps in minutes: the device counts rollouts, the host multiplies."""
    from rlrobot.config import load_run_settings
    from rlrobot.trainer import build_jax_trainer

    config = tmp_path / "big.yaml"
    config.write_text(CONFIG.format(max_steps=2**40, checkpoint=2**30, hidden=16, keep=5))
    trainer = build_jax_trainer(load_run_settings(str(config)))
    state = trainer.init_state(seed=2**40 + 7)   # seeds past 32 bits are folded into the key
    state = state.replace(iteration=np.int32(2**22))
    assert trainer.steps(state) == 2**22 * 512 == 2**31
    program = trainer.compile(state)
    state, metrics = program(state, np.int32(1), None)
    assert trainer.steps(state) == 2**31 + 512
    lr = float(metrics.learning_rate)   # the linear schedule at 2**31 of 2**40 steps
    assert lr == pytest.approx(0.001 * (1 - 2**31 / 2**40), rel=1e-5)


def test_a_seed_past_32_bits_runs(tmp_path):
    code, out = finish(learn(write_config(tmp_path, max_steps=512), tmp_path / "results", "--run-id=s",
                             "--seed", str(2**31 + 1)), [])
    assert code == 0, out
    assert read_metadata(tmp_path / "results" / "s" / "MobileRobot" / "checkpoint.ckpt")[1]["seed"] == 2**31 + 1


def test_resume_after_kill_9_cleans_what_the_killed_run_left(tmp_path):
    """A kill -9 can leave a torn ``.tmp``, step files the status never listed, and summaries past the checkpoint."""
    results = tmp_path / "results"
    assert finish(learn(write_config(tmp_path, max_steps=2048, keep=2), results, "--run-id=k"), [])[0] == 0
    behavior = results / "k" / "MobileRobot"
    (behavior / "checkpoint.ckpt.tmp").write_bytes(b"torn")
    (results / "k" / "run_logs" / "training_status.json.tmp").write_bytes(b"{")
    for suffix in (".ckpt", ".onnx"):   # a save the status never recorded, then the process died
        (behavior / f"MobileRobot-4096{suffix}").write_bytes((behavior / f"MobileRobot-2048{suffix}").read_bytes())
    with open(behavior / "metrics.jsonl", "a") as metrics:
        metrics.write('{"step": 3072}\n{"step": 4096}\n{"st')
    code, out = finish(learn(write_config(tmp_path, max_steps=4096, keep=2), results, "--run-id=k", "--resume"), [])
    assert code == 0, out
    assert not list(results.rglob("*.tmp"))
    steps = [json.loads(line)["step"] for line in (behavior / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1024, 2048, 3072, 4096]   # no step twice
    status = json.loads((results / "k" / "run_logs" / "training_status.json").read_text())["MobileRobot"]
    assert [c["steps"] for c in status["checkpoints"]] == [3072, 4096]   # keep_checkpoints: 2, the orphan adopted
    assert sorted(p.name for p in behavior.glob("MobileRobot-*.ckpt")) == ["MobileRobot-3072.ckpt",
                                                                          "MobileRobot-4096.ckpt"]


@pytest.mark.parametrize("flags, key", [
    (["--seeds", "100000"], "--seeds"),
    (["--num-envs", "1000000000"], "num_envs"),
    (["--seed", str(2**64)], "seed"),
    (["--run-id", "../escape"], "run_id"),
])
def test_sizes_and_ids_that_cannot_run_are_one_line_before_any_work(tmp_path, flags, key):
    code, out = finish(learn(write_config(tmp_path), tmp_path / "results", *flags), [], timeout=60)
    errors = [line for line in out.splitlines() if line.startswith("[ERROR]")]
    assert code == 2 and len(errors) == 1 and key in errors[0], out
    assert "Traceback" not in out and not (tmp_path / "escape").exists()
