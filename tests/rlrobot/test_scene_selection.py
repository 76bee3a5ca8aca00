"""``--env`` / ``env_settings.env_path`` name a built-in scene where ML-Agents names a build."""
from pathlib import Path

import pytest

from rlrobot.checkpoints import read_metadata
from rlrobot.cli import main

COURSE_LIKE = """
behaviors:
  MobileRobot:
    trainer_type: ppo
    hyperparameters: {batch_size: 128, buffer_size: 512, num_epoch: 1}
    network_settings: {hidden_units: 16, num_layers: 1}
    max_steps: 1024
    time_horizon: 32
    summary_freq: 1024
env_settings: {num_envs: 16, seed: 3}
"""


def course_like(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "course.yaml"
    path.write_text(COURSE_LIKE + extra)
    return str(path)


@pytest.mark.parametrize("where", ["flag", "yaml"])
def test_a_scene_name_trains_that_scene_under_the_builds_behavior_name(tmp_path, where):
    """Unity's s7 build reports the behavior MobileRobot; so does the built-in obstacle course chosen by name."""
    if where == "flag":
        args = [course_like(tmp_path), "--env", "MobileRobotObstacles"]
    else:
        args = [course_like(tmp_path)]
        text = Path(args[0]).read_text().replace("seed: 3}", "seed: 3, env_path: MobileRobotObstacles}")
        Path(args[0]).write_text(text)
    assert main([*args, "--run-id", "s7", "--results-dir", str(tmp_path / "results")]) == 0
    checkpoint = tmp_path / "results" / "s7" / "MobileRobot" / "checkpoint.ckpt"
    _, metadata = read_metadata(checkpoint)
    assert metadata["scene"] == "MobileRobotObstacles" and metadata["network"]["obs_size"] == 22


def test_an_unknown_bare_name_lists_the_built_in_scenes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main([course_like(tmp_path), "--env", "MobileRobotObstacle", "--num-envs", "1", "--run-id", "x",
                 "--results-dir", str(tmp_path / "results")])
    captured = capsys.readouterr()
    errors = [line for line in (captured.out + captured.err).splitlines() if "[ERROR]" in line]
    assert code != 0 and len(errors) == 1
    assert "Unity build not found: MobileRobotObstacle" in errors[0]
    assert "built-in scenes: MobileRobot, MobileRobotObstacles, MobileRobotTest2020, MobileRobotTest2021" in errors[0]
    assert not (tmp_path / "results" / "x" / "MobileRobot").exists()
