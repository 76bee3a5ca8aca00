"""Checkpoint replays: a tiny training run writes ``<Behavior>/replays/<Behavior>-<step>.gif`` and the same GIF as a
TensorBoard image at every checkpoint; the YAML key and ``--no-replays`` turn them off; without Pillow training goes
on with one warning."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import yaml
from PIL import Image

from rlrobot.cli import main

TINY = """
behaviors:
  MobileRobot:
    trainer_type: ppo
    hyperparameters: {batch_size: 128, buffer_size: 512, learning_rate: 0.001, num_epoch: 1}
    network_settings: {normalize: true, hidden_units: 16, num_layers: 1}
    keep_checkpoints: 1
    checkpoint_interval: 1024
    max_steps: 2048
    time_horizon: 32
    summary_freq: 1024
env_settings: {num_envs: 16, seed: 3}
environment_parameters: {max_episode_steps: 30}
"""


def learn(tmp_path: Path, run_id: str, *args: str, extra: str = "") -> Path:
    config = tmp_path / f"{run_id}.yaml"
    config.write_text(TINY + extra)
    assert main([str(config), f"--run-id={run_id}", "--results-dir", str(tmp_path / "results"), *args]) == 0
    return tmp_path / "results" / run_id


def image_summaries(directory: Path) -> dict[int, bytes]:
    """``{step: encoded image}`` of the ``Replay`` tag, read with tensorboardX's protobufs."""
    from tensorboardX.proto import event_pb2

    images = {}
    for file in directory.glob("events.out.tfevents.*"):
        data, offset = file.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            for value in event.summary.value:
                if value.tag == "Replay":
                    images[event.step] = value.image.encoded_image_string
            offset += 12 + length + 4
    return images


def test_every_checkpoint_writes_a_replay_gif_and_a_tensorboard_image(tmp_path):
    run = learn(tmp_path, "on")
    replays = run / "MobileRobot" / "replays"
    assert sorted(p.name for p in replays.iterdir()) == ["MobileRobot-1024.gif", "MobileRobot-2048.gif"]
    for gif in replays.iterdir():
        with Image.open(gif) as image:
            assert image.format == "GIF" and image.n_frames > 1 and image.size[0] >= 4 * 60
    images = image_summaries(run / "MobileRobot")
    assert sorted(images) == [1024, 2048]
    assert images[2048] == (replays / "MobileRobot-2048.gif").read_bytes()
    # A default run's configuration.yaml stays ML-Agents' (mlagents-learn has no replay_settings).
    assert "replay_settings" not in yaml.safe_load((run / "configuration.yaml").read_text())
    # --force removes the old run's replays with its checkpoints.
    learn(tmp_path, "on", "--force", "--no-replays")
    assert not list(replays.glob("*.gif"))


def test_the_flag_and_the_yaml_key_turn_replays_off(tmp_path):
    run = learn(tmp_path, "flag", "--no-replays")
    assert not (run / "MobileRobot" / "replays").exists() and not image_summaries(run / "MobileRobot")
    saved = yaml.safe_load((run / "configuration.yaml").read_text())
    assert saved["replay_settings"]["enabled"] is False  # retraining from configuration.yaml keeps them off
    run = learn(tmp_path, "key", extra="replay_settings: {enabled: false}\n")
    assert not (run / "MobileRobot" / "replays").exists()


def test_a_bad_replay_setting_is_one_config_error_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(TINY + "replay_settings: {episodes: 0}\n")
    assert main([str(config), "--run-id=bad", "--results-dir", str(tmp_path / "results")]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"[ERROR] {config}: replay_settings.episodes (0) must be a positive integer."]
    assert not (tmp_path / "results").exists()


def test_without_pillow_training_goes_on_with_one_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL raises ImportError
    run = learn(tmp_path, "nopil")
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "replays" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith("[WARNING] Checkpoint replays are skipped")
    assert (run / "MobileRobot.onnx").is_file() and not (run / "MobileRobot" / "replays").exists()
