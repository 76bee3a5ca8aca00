"""Evaluate a policy in a JAX environment: first episodes of a batch of robots, in one compiled loop.

Used by the ONNX fidelity check, by ``rlrobot-validate`` and by tests: each robot's first episode is
recorded (success = ended by termination, its return and length), so every episode counts once and
the slot → arena mapping is the same as in the Unity scene.
"""
from __future__ import annotations

from collections.abc import Callable

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
