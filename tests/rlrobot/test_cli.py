"""rlrobot-learn end to end on tiny settings: errors, results layout, tags, resume, inference."""
import json
import struct
from pathlib import Path

import jax
import numpy as np
import yaml

from rlrobot.checkpoints import read_metadata
from rlrobot.cli import main
from rlrobot.export import load_agent

TINY = """
behaviors:
  MobileRobot:
    trainer_type: ppo
    hyperparameters: {{batch_size: 128, buffer_size: 512, learning_rate: 0.001, num_epoch: 2,
                      learning_rate_schedule: {schedule}}}
    network_settings: {{normalize: true, hidden_units: 16, num_layers: 2}}
    reward_signals: {{extrinsic: {{gamma: 0.99, strength: 1.0}}}}
    keep_checkpoints: 2
    checkpoint_interval: 1024
    max_steps: {max_steps}
    time_horizon: 32
    summary_freq: 1024
env_settings: {{num_envs: 16, seed: 3}}
environment_parameters: {{max_episode_steps: 48}}
"""
TAGS = ["Environment/Cumulative Reward", "Environment/Episode Length", "Environment/Success Rate", "Policy/Entropy",
        "Policy/Extrinsic Value Estimate", "Policy/Learning Rate", "Policy/Epsilon", "Policy/Beta",
        "Losses/Policy Loss", "Losses/Value Loss"]


def config(tmp_path: Path, max_steps: int = 4096, schedule: str = "linear", name: str = "tiny.yaml") -> str:
    path = tmp_path / name
    path.write_text(TINY.format(max_steps=max_steps, schedule=schedule))
    return str(path)


def learn(tmp_path, *args) -> int:
    return main([*args, "--results-dir", str(tmp_path / "results")])


def event_tags(directory: Path) -> set[str]:
    """Scalar tags in TensorBoard event files, read with tensorboardX's protobufs (no TensorFlow needed)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for file in directory.glob("events.out.tfevents.*"):
        data = file.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            tags |= {v.tag for v in event.summary.value}
            offset += 12 + length + 4
    return tags


def test_results_layout_tags_checkpoints_and_onnx(tmp_path, capsys):
    assert learn(tmp_path, config(tmp_path), "--run-id=run") == 0
    out = capsys.readouterr().out
    assert "[INFO] MobileRobot. Step: 1024. Time Elapsed: " in out and "Training." in out
    run = tmp_path / "results" / "run"
    assert (run / "configuration.yaml").is_file() and (run / "run_logs" / "timers.json").is_file()
    saved = yaml.safe_load((run / "configuration.yaml").read_text())
    assert saved["behaviors"]["MobileRobot"]["max_steps"] == 4096
    status = json.loads((run / "run_logs" / "training_status.json").read_text())["MobileRobot"]
    assert [c["steps"] for c in status["checkpoints"]] == [3072, 4096]  # keep_checkpoints: 2
    assert status["final_checkpoint"]["file_path"].endswith("MobileRobot.onnx")
    behavior = run / "MobileRobot"
    assert sorted(p.name for p in behavior.glob("MobileRobot-*")) == [
        "MobileRobot-3072.ckpt", "MobileRobot-3072.onnx", "MobileRobot-4096.ckpt", "MobileRobot-4096.onnx"]
    assert (run / "MobileRobot.onnx").is_file() and (behavior / "checkpoint.ckpt").is_file()
    assert set(TAGS) <= event_tags(behavior)  # episodes end: environment_parameters set a 48-step limit
    lines = [json.loads(line) for line in (behavior / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1024, 2048, 3072, 4096]
    assert all(line["steps_per_second"] > 0 and "Losses/Value Loss" in line for line in lines)
    step, metadata = read_metadata(behavior / "checkpoint.ckpt")
    assert step == 4096 and metadata["network"]["hidden_units"] == 16


def test_existing_run_needs_force_or_resume(tmp_path, capsys):
    cfg = config(tmp_path, max_steps=1024)
    assert learn(tmp_path, cfg, "--run-id=a") == 0
    capsys.readouterr()
    assert learn(tmp_path, cfg, "--run-id=a") == 2
    assert "Previous data from this run ID was found." in capsys.readouterr().out
    assert learn(tmp_path, cfg, "--run-id=b", "--resume") == 2
    assert "Previous data from this run ID was not found." in capsys.readouterr().out
    assert learn(tmp_path, cfg, "--run-id=a", "--force") == 0


def test_config_errors_are_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("behaviors:\n  MobileRobot:\n    trainer_type: ppo\n    hyperparameters: {bogus: 1}\n")
    assert learn(tmp_path, str(bad)) == 2
    err = capsys.readouterr().out.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and "bogus" in err[0] and err[0].startswith("[ERROR]")
    assert learn(tmp_path, str(tmp_path / "missing.yaml")) == 2


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    assert learn(tmp_path, config(tmp_path, 4096, "constant"), "--run-id=whole") == 0
    assert learn(tmp_path, config(tmp_path, 2048, "constant", "half.yaml"), "--run-id=split") == 0
    assert learn(tmp_path, config(tmp_path, 4096, "constant"), "--run-id=split", "--resume") == 0
    results = tmp_path / "results"
    whole, _, _ = load_agent(results / "whole" / "MobileRobot" / "checkpoint.ckpt")
    split, _, _ = load_agent(results / "split" / "MobileRobot" / "checkpoint.ckpt")
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split)):
        np.testing.assert_array_equal(a, b)
    log = (results / "split" / "MobileRobot" / "metrics.jsonl").read_text()
    steps = [json.loads(line)["step"] for line in log.splitlines()]
    assert steps == [1024, 2048, 3072, 4096]  # the resumed run appends to the same log


def test_initialize_from_and_inference(tmp_path, capsys):
    assert learn(tmp_path, config(tmp_path, 2048), "--run-id=src") == 0
    source, _, _ = load_agent(tmp_path / "results" / "src" / "MobileRobot" / "checkpoint.ckpt")
    capsys.readouterr()
    assert learn(tmp_path, config(tmp_path, 1024), "--run-id=inf", "--initialize-from=src", "--inference") == 0
    out = capsys.readouterr().out
    assert "Not Training." in out
    assert not list((tmp_path / "results" / "inf" / "MobileRobot").glob("*.ckpt"))  # --inference never saves
    events = sorted((tmp_path / "results" / "src" / "MobileRobot").glob("events.out*"))
    assert learn(tmp_path, config(tmp_path, 1024), "--run-id=src", "--inference") == 0  # on the finished run
    assert sorted((tmp_path / "results" / "src" / "MobileRobot").glob("events.out*"))[:len(events)] == events
    assert yaml.safe_load((tmp_path / "results" / "src" / "configuration.yaml").read_text())["behaviors"][
        "MobileRobot"]["max_steps"] == 2048  # the trained run's configuration is kept
    assert learn(tmp_path, config(tmp_path, 1024), "--run-id=init", "--initialize-from=src") == 0
    step, _ = read_metadata(tmp_path / "results" / "init" / "MobileRobot" / "checkpoint.ckpt")
    assert step == 1024  # the step restarts at 0, unlike --resume
    assert learn(tmp_path, config(tmp_path, 1024), "--run-id=x", "--initialize-from=nope") == 2


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    assert learn(tmp_path, config(tmp_path, 1024, "constant"), "--run-id=r") == 0
    latest = tmp_path / "results" / "r" / "MobileRobot" / "checkpoint.ckpt"
    before = latest.read_bytes()
    exploding = tmp_path / "explode.yaml"
    exploding.write_text(TINY.format(max_steps=4096, schedule="constant").replace("learning_rate: 0.001",
                                                                                 "learning_rate: 1.0e+30"))
    capsys.readouterr()
    assert learn(tmp_path, str(exploding), "--run-id=r", "--resume") == 1
    assert "NaN/inf" in capsys.readouterr().out
    assert latest.read_bytes() == before


def test_environment_parameters_must_name_scene_fields(tmp_path, capsys):
    cfg = tmp_path / "bad_env.yaml"
    cfg.write_text(TINY.format(max_steps=1024, schedule="linear").replace("max_episode_steps: 48", "gravity: 9.8"))
    assert learn(tmp_path, str(cfg), "--run-id=e") == 2
    assert "environment_parameters.gravity" in capsys.readouterr().out
