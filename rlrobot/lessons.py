"""Curricula on the JAX robot: each run's lessons (host, ``rlrobot.curriculum``) written into its robots' state.

The compiled program reads each robot's lesson from its env state (``envs.sampled.SampledState.lesson``), so moving
to the next lesson is a write of a small int32 array between device calls, never a recompile. At each summary every
run's :class:`~rlrobot.curriculum.Curriculum` sees the period's episode returns and the step; process 0 decides and
broadcasts the lessons (and any ``require_reset``) so that every process writes the same arrays. A reset, as in
ML-Agents, ends every robot's episode without booking it and drops the unfinished trajectories; the robots start
again in their new lessons.
"""
from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlrobot import parallel
from rlrobot.config import RunSettings
from rlrobot.curriculum import Curriculum, parse_environment_parameters
from rlrobot.run import Run
from rlrobot.train import EpisodeTracker, Metrics, TrainState, episode_returns

logger = logging.getLogger("rlrobot")


class Lessons:
    """The lessons of the runs trained together (one per member; ``batched``: a leading run axis in the state)."""

    def __init__(self, trainer, settings: RunSettings, runs: list[Run], batched: bool, members: int) -> None:
        self.trainer, self.batched, self.members = trainer, batched, members
        parameters = parse_environment_parameters(settings.environment_parameters)
        max_steps = settings.behavior(trainer.behavior).max_steps
        self.runs = runs if parameters else []  # process 0 only: the others follow its broadcasts
        self.curricula = [run.attach_curriculum(parameters, max_steps) for run in self.runs]
        self.names = Curriculum(parameters, trainer.behavior, max_steps).names
        if self.curricula and self.names:
            for name in self.curricula[0].names:
                logger.info(self.curricula[0].describe(name))
        self.current = np.zeros((members, len(self.names)), np.int32)
        self._restart_program = None

    def _record(self) -> None:
        """Where a checkpoint and ``training_status.json`` keep the lessons (see ``Run.save``)."""
        for run in self.runs:
            run.record_curriculum()

    def start(self, state: TrainState) -> TrainState:
        """The runs' lessons (restored by ``--resume``) written into the placed state."""
        if not self.names:
            return state
        lessons = self._broadcast(np.asarray([c.vector() for c in self.curricula], np.int32), None)
        self.current = np.full_like(self.current, -1)
        return self._write(state, lessons)

    def update(self, state: TrainState, step: int, metrics: Metrics) -> TrainState:
        """After a summary: feed each run's returns of the period, check its criteria, and write lessons that moved
        (restarting the episodes of runs whose finished lesson asks for a reset)."""
        if not self.names:
            return state
        host = jax.device_get(metrics) if self.curricula else None
        resets = np.zeros(self.members, bool)
        for index, curriculum in enumerate(self.curricula):
            member = jax.tree.map(lambda x, i=index: x[i], host) if self.batched else host
            curriculum.add_returns(episode_returns(member))
            _, resets[index] = curriculum.update(step)
        self._record()
        lessons = self._broadcast(np.asarray([c.vector() for c in self.curricula], np.int32), resets)
        resets = lessons[:, -1].astype(bool)
        state = self._write(state, lessons[:, :-1])
        return self._restart(state, resets) if resets.any() else state

    def _broadcast(self, lessons: np.ndarray, resets: np.ndarray | None) -> np.ndarray:
        """Process 0's ``[members, P (+1 reset flag)]`` decision on every process."""
        columns = len(self.names) + (resets is not None)
        decision = np.zeros((self.members, columns), np.int32)
        if lessons.size:
            decision[:, :len(self.names)] = lessons
            if resets is not None:
                decision[:, -1] = resets
        return np.asarray(parallel.broadcast_from_first(decision))

    def _write(self, state: TrainState, lessons: np.ndarray) -> TrainState:
        if np.array_equal(lessons, self.current):
            return state
        self.current = lessons.copy()
        old = state.env_state.lesson
        host = np.broadcast_to(lessons[:, None, :] if self.batched else lessons[0][None, :], old.shape)
        host = np.ascontiguousarray(host, np.int32)
        new = jax.make_array_from_callback(old.shape, old.sharding, lambda index: host[index])
        return state.replace(env_state=state.env_state.replace(lesson=new))

    def _restart(self, state: TrainState, resets: np.ndarray) -> TrainState:
        logger.info("Resetting the environment: a completed lesson asks for require_reset.")
        if self._restart_program is None:
            self._restart_program = jax.jit(restart_episodes(self.trainer, self.batched))
        mask = jnp.asarray(resets if self.batched else resets[0])
        return self._restart_program(state, parallel.replicate(mask, self.trainer.mesh))


def restart_episodes(trainer, batched: bool):
    """``(state, flag) -> state``: where ``flag``, every robot starts a new episode (an auto-reset that keeps its
    lesson and slot), unbooked, and the open trajectories are dropped (their length goes to 0)."""
    env, params, mesh = trainer.env, trainer.env_params, trainer.mesh

    def one(state: TrainState, flag: jnp.ndarray) -> TrainState:
        keys = jax.random.split(jax.random.fold_in(state.key, 0x7E5E7), state.obs.shape[0])
        obs, env_state = jax.vmap(lambda k, s: env.reset_env(k, params, env.slot_of(s), s))(keys, state.env_state)
        zeros = jnp.zeros_like(state.tracker.returns)
        tracker = EpisodeTracker(returns=zeros, lengths=zeros, trajectory_length=jnp.zeros_like(
            state.tracker.trajectory_length))
        fresh: Any = (env_state, obs, tracker)
        kept = (state.env_state, state.obs, state.tracker)
        env_state, obs, tracker = jax.tree.map(lambda a, b: jnp.where(flag, a, b), fresh, kept)
        return parallel.constrain_state(state.replace(env_state=env_state, obs=obs, tracker=tracker), mesh)

    return jax.vmap(one) if batched else one
