"""The stand-in's scene: NumPy MobileRobot robots behind the agent semantics a Unity build shows the trainer.

What Unity does and this copies (ML-Agents 3.0 ``Agent`` + ``DecisionRequester`` with ``TakeActionsBetweenDecisions``):

* every Academy step moves every robot with its stored action; an agent requests a decision only every
  ``decision_period`` steps (``StepCount % period == 0``), and its reward accumulates until it reports;
* an episode end is reported in the step it happens (``done``, the reward since the last report, the last
  observation, ``max_step_reached`` for a time-out), and the ended agent's stored action is cleared, so it idles with
  zero actions until its next decision;
* a step in which no agent reports anything is not sent to the trainer at all;
* a RESET restarts every episode and the step count, with no ``done`` for the aborted episodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.numpy_robot import NumpyMobileRobot

DEFAULT_SCENE = "MobileRobot"


def make_robots(scene: str, num_agents: int, seed: int):
    """The robots of a built-in scene: the NumPy port for the reach-goal scene (no compile at start-up), the scene's
    own JAX definition for the others."""
    if scene == DEFAULT_SCENE:
        return NumpyMobileRobot(num_agents, seed=seed)
    from envs.standin.jax_robots import JaxRobots

    return JaxRobots(scene, num_agents, seed=seed)


@dataclass
class Report:
    """What one exchange tells the trainer, by robot index: ended episodes, then decision requests."""

    ended: np.ndarray           # [E] robot indices
    end_reward: np.ndarray      # [E]
    end_obs: np.ndarray         # [E, obs]
    max_step_reached: np.ndarray  # [E] bool
    deciding: np.ndarray        # [D] robot indices, in the order their actions must come back
    decision_reward: np.ndarray  # [D]
    decision_obs: np.ndarray    # [D, obs]
    goals: int                  # episodes that reached the goal in this exchange


class Scene:
    """``num_agents`` robots of a built-in scene (robot ``i`` in arena ``i mod 8``) stepped with Unity's decision
    semantics."""

    def __init__(self, num_agents: int, seed: int, decision_period: int, shuffle_order: bool,
                 scene: str = DEFAULT_SCENE) -> None:
        if decision_period < 1:
            raise ValueError(f"decision period must be at least 1, got {decision_period}")
        self.robots = make_robots(scene, num_agents, seed)
        self.period = decision_period
        self.shuffle = np.random.default_rng(seed + 1) if shuffle_order else None
        self.actions = np.zeros((num_agents, self.robots.action_size), np.float32)
        self.reward = np.zeros(num_agents, np.float32)
        self.obs = np.zeros((num_agents, self.robots.observation_size), np.float32)
        self.step_count = 0

    @property
    def num_agents(self) -> int:
        return self.robots.num_envs

    @property
    def params(self):
        return self.robots.params

    def set_params(self, params) -> None:
        """Swap the scene's constants, keeping every robot where it is (takes effect from the next step)."""
        self.robots = self.robots.with_params(params)

    def reset(self) -> Report:
        self.step_count = 0
        self.actions[:] = 0.0
        self.reward[:] = 0.0
        self.obs = self.robots.reset()
        return self._report(np.empty(0, np.int64), self.obs[:0], np.empty(0, bool), goals=0)

    def step(self, deciding: np.ndarray, actions: np.ndarray) -> Report:
        """Apply ``actions`` (one row per robot in ``deciding``, the last report's order), then run Academy steps
        until some agent has something to report."""
        self.actions[deciding] = actions
        while True:
            self.step_count += 1
            self.obs, reward, terminated, truncated, final_obs = self.robots.step(self.actions)
            self.reward += reward
            ended = np.flatnonzero(terminated | truncated)
            if ended.size or self.step_count % self.period == 0:
                return self._report(ended, final_obs[ended], truncated[ended], goals=int(terminated.sum()))

    def _report(self, ended: np.ndarray, end_obs: np.ndarray, max_step_reached: np.ndarray, goals: int) -> Report:
        end_reward = self.reward[ended].copy()
        self.reward[ended] = 0.0
        self.actions[ended] = 0.0
        if self.step_count % self.period == 0:
            deciding = np.arange(self.num_agents)
            if self.shuffle is not None:
                deciding = self.shuffle.permutation(deciding)
        else:
            deciding = np.empty(0, np.int64)
        decision_reward = self.reward[deciding].copy()
        self.reward[deciding] = 0.0
        return Report(ended, end_reward, end_obs, max_step_reached, deciding, decision_reward, self.obs[deciding],
                      goals)
