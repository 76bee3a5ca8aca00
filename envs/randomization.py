"""Domain randomisation for the real robot: actuation noise and scale, observation noise, ray dropout, sensor range.

Pure helpers over a scene's params; every one is off at its default, and then costs nothing and changes no bit: a
field that is a Python number equal to its "off" value (a constant, as the trainer closes over the params) is
skipped when tracing (:func:`is_off`). A traced field (a per-robot draw of ``environment_parameters``, see
``envs.sampled``) always takes the general path, which at the off value selects the unperturbed value
(``jnp.where`` on the value, never ``x + 0·noise``): the same episodes, with observations equal up to XLA's rounding
of a differently fused program.

Draws take their key from :func:`stream`: ``fold_in`` of the step's (or reset's) key with a per-purpose constant
above 2³¹, beyond every counter the scenes' own draws use from that key, so a scene that draws nothing else
(``step_uses_key = False``) keeps its key schedule and its reset draws when noise is switched on.
"""
from __future__ import annotations

import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np


def is_off(value, off: float) -> bool:
    """Whether ``value`` is known when tracing to equal ``off`` (a Python or NumPy number, not a traced array)."""
    return isinstance(value, (int, float, np.number, np.bool_)) and float(value) == off


def stream(key: chex.PRNGKey, purpose: str) -> chex.PRNGKey:
    """An independent key for one purpose (``"action"``, ``"observation"``, ...) derived from ``key``."""
    return jax.random.fold_in(key, (zlib.crc32(purpose.encode()) | 0x80000000) & 0xFFFFFFFF)


def draws_noise(params) -> bool:
    """Whether a step may draw on its key: some noise (action, observation, ray dropout) is not known to be off."""
    return not all(is_off(value, 0.0) for value in (params.action_noise, params.observation_noise, params.ray_dropout))


def actuation(params) -> tuple:
    """``forward_step, turn_step, wheel_speed`` times the robot's ``actuation_scale`` (wheel slip, motor strength:
    < 1 moves and turns less than commanded, > 1 more)."""
    scale = params.actuation_scale
    if is_off(scale, 1.0):
        return params.forward_step, params.turn_step, params.wheel_speed
    return params.forward_step * scale, params.turn_step * scale, params.wheel_speed * scale


def noisy_action(key: chex.PRNGKey, action: jnp.ndarray, params) -> jnp.ndarray:
    """The action clipped to [-1, 1] plus N(0, ``action_noise``²) per component (the scene clips it again: the motors
    saturate)."""
    std = params.action_noise
    if is_off(std, 0.0):
        return action
    clipped = jnp.clip(action, -1.0, 1.0)
    noise = jax.random.normal(stream(key, "action"), action.shape, action.dtype)
    return jnp.where(std > 0.0, clipped + std * noise, action)


def sensed_distances(distances: jnp.ndarray, params) -> jnp.ndarray:
    """Ray distances as the sensors report them: nothing (inf) beyond ``sensor_range`` metres (0 = ``ray_length``).
    Only the observation uses this; the reward keeps the scene's own rays."""
    limit = params.sensor_range
    if is_off(limit, 0.0):
        return distances
    return jnp.where((limit > 0.0) & (distances > limit), jnp.inf, distances)


def noisy_observation(key: chex.PRNGKey, obs: jnp.ndarray, first_ray: int, params) -> jnp.ndarray:
    """The observation as a real robot's sensors give it: each ray (``obs[first_ray:]``, 0..1) reads 1.0 (nothing)
    with probability ``ray_dropout``; then every entry gets N(0, ``observation_noise``²), the rays clipped to [0, 1]
    and the facing angle to [-1, 1]."""
    dropout, std = params.ray_dropout, params.observation_noise
    if not is_off(dropout, 0.0):
        u = jax.random.uniform(stream(key, "dropout"), (obs.shape[-1] - first_ray,))
        obs = obs.at[first_ray:].set(jnp.where(u < dropout, 1.0, obs[first_ray:]))
    if not is_off(std, 0.0):
        noise = jax.random.normal(stream(key, "observation"), obs.shape, obs.dtype)
        low = jnp.where(jnp.arange(obs.shape[-1]) < first_ray, -1.0, 0.0)
        obs = jnp.where(std > 0.0, jnp.clip(obs + std * noise, low, 1.0), obs)
    return obs.astype(jnp.float32)
