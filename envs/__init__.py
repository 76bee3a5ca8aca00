"""Environments behind one functional API (see :mod:`envs.api`)."""
from __future__ import annotations

from envs.api import Environment

_REGISTRY = {
    "MobileRobot": ("envs.mobile_robot", "MobileRobot"),
    "MobileRobotObstacles": ("envs.mobile_robot_obstacles", "MobileRobotObstacles"),
}


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


__all__ = ["Environment", "make", "registered"]
