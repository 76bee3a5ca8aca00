"""Gymnasium and Stable-Baselines3 wrappers of the NumPy MobileRobot, so library PPO runs on the same scene.

* :class:`RobotEnv` is one robot as a ``gymnasium.Env`` (no auto-reset: the caller resets after ``terminated`` or
  ``truncated``, as Gymnasium's API expects); it passes ``gymnasium.utils.env_checker.check_env``.
* :class:`RobotVecEnv` is an SB3 ``VecEnv`` over the whole NumPy batch: one ``NumpyMobileRobot.step`` call steps every
  robot, which is the fair way to feed SB3 (a ``DummyVecEnv`` of ``RobotEnv`` would loop over robots in Python). It
  auto-resets as SB3 expects: ``infos[i]["terminal_observation"]`` holds a finished robot's last observation,
  ``infos[i]["TimeLimit.truncated"]`` says the time limit (not the goal) ended it, so SB3 bootstraps from it, and
  ``infos[i]["is_success"]``/``infos[i]["episode"]`` feed SB3's success and reward logs.

Both use the scene's own spaces: 19 observations in ``[-1, 1]`` (signed angle to the goal / 180, ray distances / 4 m)
and 2 actions in ``[-1, 1]`` (forward, turn); robot ``i`` lives in arena ``i mod 8``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from envs.numpy_robot import NumpyMobileRobot

Indices = int | Sequence[int] | None  # VecEnv's sub-environment selector


def observation_space() -> spaces.Box:
    return spaces.Box(-1.0, 1.0, (NumpyMobileRobot.observation_size,), np.float32)


def action_space() -> spaces.Box:
    return spaces.Box(-1.0, 1.0, (NumpyMobileRobot.action_size,), np.float32)


class RobotEnv(gymnasium.Env):
    """One MobileRobot robot in arena ``slot mod 8``; episodes end on reaching the goal or after 1000 steps."""

    metadata = {"render_modes": []}

    def __init__(self, slot: int = 0):
        self.observation_space = observation_space()
        self.action_space = action_space()
        self.robot = NumpyMobileRobot(1)
        self.robot.slot[:] = slot

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.robot.rng = self.np_random  # so reset(seed=s) replays the same spawn
        return self.robot.reset()[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        r = self.robot
        obs, r.pos, r.yaw, r.t, reward, terminated, truncated = r.transition(
            r.pos, r.yaw, r.goal, r.t, np.asarray(action, np.float32).reshape(1, -1))
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {"is_success": bool(terminated[0])}


class RobotVecEnv(VecEnv):
    """``num_envs`` robots stepped by one :class:`NumpyMobileRobot`; auto-resets with SB3's info conventions."""

    render_mode = None

    def __init__(self, num_envs: int, seed: int = 0):
        self.robots = NumpyMobileRobot(num_envs, seed=seed)
        self.returns = np.zeros(num_envs, np.float64)
        self.lengths = np.zeros(num_envs, np.int64)
        self.actions = np.zeros((num_envs, NumpyMobileRobot.action_size), np.float32)
        super().__init__(num_envs, observation_space(), action_space())

    def reset(self) -> np.ndarray:
        if self._seeds[0] is not None:  # one generator for the batch: the first robot's seed reseeds it
            self.robots.rng = np.random.default_rng(self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        self.returns[:] = 0.0
        self.lengths[:] = 0
        return self.robots.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = np.asarray(actions, np.float32)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        obs, reward, terminated, truncated, final_obs = self.robots.step(self.actions)
        self.returns += reward
        self.lengths += 1
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(done):
            infos[i] = {"terminal_observation": final_obs[i], "TimeLimit.truncated": bool(truncated[i]),
                        "is_success": bool(terminated[i]),
                        "episode": {"r": float(self.returns[i]), "l": int(self.lengths[i])}}
        self.returns[done] = 0.0
        self.lengths[done] = 0
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    # The batch is one object, not a list of sub-environments: attribute and method access goes to it.
    def get_attr(self, attr_name: str, indices: Indices = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Indices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Indices = None,
                   **method_kwargs: Any) -> list[Any]:
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class: type, indices: Indices = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices: Indices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)
