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
    """s7, which neither trainer learns with the course's YAML: the shipped fast config gets around the block.

    Not every seed learns it (docs/obstacle-course.md): of seeds 0-4, seed 0 stays on the penalty-avoidance plateau
    with the current random streams, seeds 1-4 solve it.
    """
    args = [str(ROOT / "configs" / "MobileRobotObstacles-fast.yaml"), "--run-id=ci", "--seed=1",
            "--results-dir", str(tmp_path)]
    assert main(args) == 0
    behavior, summary = validate_in_jax(tmp_path / "ci" / "MobileRobot.onnx", None, episodes=512,
                                        deterministic=False, seed=0, max_steps=2500)
    assert behavior == "MobileRobotObstacles"
    assert summary["success_rate"] >= 0.95, summary
    assert summary["mean_return"] >= 80.0, summary
