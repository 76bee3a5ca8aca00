"""The product promise on CI's CPU: the shipped fast config teaches the JAX robot to reach the goal."""
from pathlib import Path

import pytest

from rlrobot.cli import main
from rlrobot.validate import validate_in_jax

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fast_config_reaches_the_goal(tmp_path):
    args = [str(ROOT / "configs" / "MobileRobot-fast.yaml"), "--run-id=ci", "--seed=0", "--results-dir", str(tmp_path)]
    assert main(args) == 0
    behavior, summary = validate_in_jax(tmp_path / "ci" / "MobileRobot.onnx", None, episodes=512, deterministic=False,
                                        seed=0, max_steps=1000)
    assert behavior == "MobileRobot"
    assert summary["success_rate"] >= 0.95, summary
    assert summary["mean_return"] >= 7.0, summary


@pytest.mark.slow
def test_obstacle_fast_config_learns_the_obstacle_course_from_scratch(tmp_path):
    """s7, which neither trainer learns with the course's YAML: the shipped fast config gets around the block, with
    sampled actions and with the mean action (whose fixed points trap the car when training stops too soon after the
    goal is found; docs/obstacle-course.md)."""
    args = [str(ROOT / "configs" / "MobileRobotObstacles-fast.yaml"), "--run-id=ci", "--seed=1", "--no-replays",
            "--results-dir", str(tmp_path)]
    assert main(args) == 0
    policy = tmp_path / "ci" / "MobileRobot.onnx"
    behavior, sampled = validate_in_jax(policy, None, episodes=512, deterministic=False, seed=0, max_steps=2500)
    assert behavior == "MobileRobotObstacles"
    assert sampled["success_rate"] >= 0.95, sampled
    assert sampled["mean_return"] >= 80.0, sampled
    # The start of each of the 8 arenas is fixed, so the mean action plays 8 distinct episodes.
    _, deterministic = validate_in_jax(policy, None, episodes=8, deterministic=True, seed=0, max_steps=2500)
    assert deterministic["success_rate"] == 1.0, deterministic
