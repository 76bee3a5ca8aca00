"""Evaluate a policy in a JAX environment: first episodes of a batch of robots, in one compiled loop.

Used by the ONNX fidelity check, by ``rlrobot-validate`` and by tests: each robot's first episode is
recorded (success = ended by termination, its return and length), so every episode counts once and
the slot → arena mapping is the same as in the Unity scene.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from envs.api import Environment


@struct.dataclass
class EpisodeStats:
    success: jnp.ndarray   # [N] bool: the first episode ended by termination
    finished: jnp.ndarray  # [N] bool: the first episode ended (terminated or truncated)
    returns: jnp.ndarray   # [N] sum of rewards of the first episode
    lengths: jnp.ndarray   # [N] decisions in the first episode
    obs_sum: jnp.ndarray   # [obs] sum of the observations the policy saw (for distribution checks)
    obs_sq_sum: jnp.ndarray
    obs_count: jnp.ndarray


def first_episodes(env: Environment, params, policy: Callable[[jnp.ndarray, chex.PRNGKey], jnp.ndarray],
                   key: chex.PRNGKey, num_envs: int, max_steps: int) -> EpisodeStats:
    """Run ``policy(obs[N, n], key) -> action[N, k]`` until every robot has finished one episode (or ``max_steps``)."""
    key_reset, key_run = jax.random.split(key)
    obs, state = env.reset_batch(key_reset, params, num_envs)
    zeros = jnp.zeros(num_envs)
    stats = EpisodeStats(success=zeros.astype(bool), finished=zeros.astype(bool), returns=zeros, lengths=zeros,
                         obs_sum=jnp.zeros(obs.shape[-1]), obs_sq_sum=jnp.zeros(obs.shape[-1]),
                         obs_count=jnp.float32(0))

    def body(carry):
        obs, state, stats, key, t = carry
        key, key_act, key_step = jax.random.split(key, 3)
        active = ~stats.finished
        action = policy(obs, key_act)
        obs_next, state, reward, terminated, truncated, _ = env.step_batch(key_step, state, action, params)
        w = active.astype(jnp.float32)
        stats = stats.replace(
            success=stats.success | (active & terminated),
            finished=stats.finished | (active & (terminated | truncated)),
            returns=stats.returns + w * reward,
            lengths=stats.lengths + w,
            obs_sum=stats.obs_sum + jnp.sum(w[:, None] * obs, 0),
            obs_sq_sum=stats.obs_sq_sum + jnp.sum(w[:, None] * obs**2, 0),
            obs_count=stats.obs_count + jnp.sum(w),
        )
        return obs_next, state, stats, key, t + 1

    def cond(carry):
        return (carry[4] < max_steps) & ~jnp.all(carry[2].finished)

    _, _, stats, _, _ = jax.lax.while_loop(cond, body, (obs, state, stats, key_run, jnp.int32(0)))
    return stats


@struct.dataclass
class EpisodeSteps:
    """Each robot's first episode, step by step (``[T, N, ...]``; ``active`` marks the steps that belong to it)."""

    state: Any             # the state after each step's move (before any reset)
    reward: jnp.ndarray    # [T, N]
    terminated: jnp.ndarray
    truncated: jnp.ndarray
    active: jnp.ndarray    # [T, N] bool


def first_episode_steps(env: Environment, params, policy: Callable[[jnp.ndarray, chex.PRNGKey], jnp.ndarray],
                        key: chex.PRNGKey, num_envs: int, num_steps: int) -> EpisodeSteps:
    """Play ``num_steps`` decisions of ``num_envs`` robots without auto-reset, keeping every step's state, so a
    trajectory can be written out (``rlrobot-validate --trajectory-csv``) or drawn."""
    key_reset, key_run = jax.random.split(key)
    obs, state = env.reset_batch(key_reset, params, num_envs)
    step_env = jax.vmap(lambda k, s, a: env.step_env(k, s, a, params))

    def body(carry, step_key):
        obs, state, finished = carry
        key_act, key_step = jax.random.split(step_key)
        action = policy(obs, key_act)
        obs, state, reward, terminated, truncated = step_env(jax.random.split(key_step, num_envs), state, action)
        steps = EpisodeSteps(state=state, reward=reward, terminated=terminated, truncated=truncated,
                             active=~finished)
        return (obs, state, finished | terminated | truncated), steps

    _, steps = jax.lax.scan(body, (obs, state, jnp.zeros(num_envs, bool)), jax.random.split(key_run, num_steps))
    return steps
