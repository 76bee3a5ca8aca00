"""Environments behind one functional API (see :mod:`envs.api`)."""
from __future__ import annotations

from envs.api import Environment

_REGISTRY = {
    "MobileRobot": ("envs.mobile_robot", "MobileRobot"),
    "MobileRobotObstacles": ("envs.mobile_robot_obstacles", "MobileRobotObstacles"),
    "MobileRobotTest2020": ("envs.test_scenes", "MobileRobotTest2020"),
    "MobileRobotTest2021": ("envs.test_scenes", "MobileRobotTest2021"),
}
# The scene a policy of each observation size is trained in, where nothing else names one (the test scenes share the
# obstacle course's 22 observations).
TRAINING_SCENES = {19: "MobileRobot", 22: "MobileRobotObstacles"}


def registered() -> list[str]:
    """Names ``make`` accepts."""
    return sorted(_REGISTRY)


def make(name: str, **kwargs) -> Environment:
    """Build a registered environment by its ML-Agents behavior name."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown environment {name!r}; known: {', '.join(registered())}")
    import importlib

    module_name, class_name = _REGISTRY[name]
    return getattr(importlib.import_module(module_name), class_name)(**kwargs)


__all__ = ["TRAINING_SCENES", "Environment", "make", "registered"]
