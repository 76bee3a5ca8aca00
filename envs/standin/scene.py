"""The stand-in's scene: NumPy MobileRobot robots behind the agent semantics a Unity build shows the trainer.

What Unity does and this copies (ML-Agents 3.0 ``Agent`` + ``DecisionRequester`` with ``TakeActionsBetweenDecisions``):

* every Academy step moves every robot with its stored action; an agent requests a decision only every
  ``decision_period`` steps (``StepCount % period == 0``), and its reward accumulates until it reports;
* an episode end is reported in the step it happens (``done``, the reward since the last report, the last
  observation, ``max_step_reached`` for a time-out), and the ended agent's stored action is cleared, so it idles with
  zero actions until its next decision;
* a step in which no agent reports anything is not sent to the trainer at all;
* a RESET restarts every episode and the step count, with no ``done`` for the aborted episodes;
* each agent's ``OnEpisodeBegin`` (after a RESET, and when its episode ended) reads the environment parameters the
  trainer sent as samplers (:class:`envs.standin.samplers.EnvironmentParameters`) for the numeric fields of the
  scene's params: one new draw per agent and parameter, as ``GetWithDefault`` draws in Unity. The robots share one
  params, so a draw is set for all of them, from the next step, and the last agent's draw stands (with one agent,
  ``--agents 1``, every episode runs under its own draw). Float parameters apply when they arrive.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from envs.numpy_robot import NumpyMobileRobot
from envs.standin.samplers import EnvironmentParameters

DEFAULT_SCENE = "MobileRobot"

log = logging.getLogger("envs.standin")


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
        self.parameters = EnvironmentParameters()

    @property
    def num_agents(self) -> int:
        return self.robots.num_envs

    @property
    def params(self):
        return self.robots.params

    def set_params(self, params) -> None:
        """Swap the scene's constants, keeping every robot where it is (takes effect from the next step)."""
        self.robots = self.robots.with_params(params)

    def field_type(self, key: str) -> type | None:
        """``int`` or ``float`` for a numeric field of the scene's params (what a parameter can set), else None."""
        field = next((f for f in dataclasses.fields(self.params) if f.name == key), None)
        default = None if field is None else field.default
        if not isinstance(default, (int, float)) or isinstance(default, bool):
            return None
        return int if isinstance(default, int) else float

    def set_parameter(self, key: str, value: float) -> tuple[float, float]:
        """Set the numeric field ``key`` from the next step (an int field takes ``(int)value``, as C# casts);
        returns ``(old, new)``."""
        old, new = getattr(self.params, key), self.field_type(key)(value)
        if new != old:
            self.set_params(self.params.replace(**{key: new}))
        return old, new

    def _begin_episodes(self, agents: np.ndarray) -> None:
        """The agents' ``OnEpisodeBegin``: each reads every sampled parameter that names a numeric field (one new
        draw per agent and key, in agent order); the last draw of each key is set for all robots."""
        keys = [key for key in self.parameters.sampled_keys() if self.field_type(key) is not None]
        if not keys or not agents.size:
            return
        drawn = {}
        for agent in agents.tolist():
            for key in keys:
                drawn[key] = self.parameters.get_with_default(key, float(getattr(self.params, key)))
                log.info(f"agent {agent} begins an episode: {key} drawn {drawn[key]!r}")
        for key, value in drawn.items():
            self.set_parameter(key, value)

    def reset(self) -> Report:
        self.step_count = 0
        self.actions[:] = 0.0
        self.reward[:] = 0.0
        self.obs = self.robots.reset()
        self._begin_episodes(np.arange(self.num_agents))
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
            self._begin_episodes(ended)
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
