"""Any registered JAX scene behind the stand-in's robot interface (the one :class:`envs.numpy_robot.NumpyMobileRobot`
has): ``reset()`` and ``step(actions)`` on NumPy arrays for all robots at once.

The reach-goal scene keeps its NumPy port (no compiler at start-up); the other scenes (the obstacle course, the test
scenes) are served by their JAX definition itself, jitted once, so the stand-in cannot drift from the simulator the
trainer uses. Robot ``i`` starts in slot ``i``, as agent ``i`` of a Unity scene.
"""
from __future__ import annotations

import copy
from typing import Any

import jax
import numpy as np

import envs


class JaxRobots:
    """``num_envs`` robots of the registered scene ``name``, stepped with its auto-reset."""

    def __init__(self, name: str, num_envs: int, seed: int = 0, params: Any = None) -> None:
        self.name = name
        self.env = envs.make(name)
        self.num_envs = num_envs
        self.params = self.env.default_params if params is None else params
        self.observation_size = self.env.observation_size
        self.action_size = self.env.action_size
        self.key = jax.random.PRNGKey(seed)
        self.state = None
        self._reset = jax.jit(lambda key, params: self.env.reset_batch(key, params, num_envs))
        self._step = jax.jit(lambda key, state, action, params: self.env.step_batch(key, state, action, params))

    def with_params(self, params: Any) -> JaxRobots:
        """The same robots, where they are, under other constants (from the next step); the compiled reset and step
        are kept (params are their arguments), so a sampled parameter does not recompile them."""
        robots = copy.copy(self)
        robots.params = params
        return robots

    def reset(self) -> np.ndarray:
        self.key, key = jax.random.split(self.key)
        obs, self.state = self._reset(key, self.params)
        return np.asarray(obs)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """``obs, reward, terminated, truncated, final_obs`` after one step of every robot."""
        self.key, key = jax.random.split(self.key)
        obs, self.state, reward, terminated, truncated, info = self._step(
            key, self.state, np.asarray(actions, np.float32), self.params)
        return tuple(np.asarray(x) for x in (obs, reward, terminated, truncated, info["final_obs"]))
