"""PPO maths as ML-Agents does it: GAE with bootstrapping, per-dimension Gaussian log-probs, clipped losses, schedules.

Everything is a pure function over arrays so the trainer can jit rollout, GAE and update together.
"""
from __future__ import annotations

import math

import chex
import flax
import jax
import jax.numpy as jnp

from rlrobot.networks import AgentParams, NetworkSpec, NormalizerState, policy_distribution, value_estimate

EPSILON = 1e-7  # ML-Agents' distributions.EPSILON
LR_FLOOR = 1e-10
EPSILON_FLOOR = 0.1
BETA_FLOOR = 1e-5
VALUE_LOSS_COEF = 0.5
ADVANTAGE_EPS = 1e-10
_LOG_SQRT_2PI = math.log(math.sqrt(2.0 * math.pi))


def compute_gae(
    rewards: chex.Array,
    values: chex.Array,
    next_values: chex.Array,
    terminated: chex.Array,
    truncated: chex.Array,
    gamma: float,
    lam: float,
) -> tuple[chex.Array, chex.Array]:
    """Advantages and returns for time-major ``[T, ...]`` data from auto-resetting envs.

    ``next_values[t]`` is V of step t's real next observation (the final one at an episode end), so a truncation
    (time limit or a rollout cut) bootstraps from it while a termination bootstraps 0; no advantage flows across
    any episode end, matching ML-Agents' per-trajectory GAE.
    """
    chex.assert_equal_shape([rewards, values, next_values, terminated, truncated])
    dtype = rewards.dtype
    not_terminal = 1.0 - terminated.astype(dtype)
    not_done = 1.0 - jnp.logical_or(terminated, truncated).astype(dtype)
    deltas = rewards + gamma * next_values * not_terminal - values

    def step(gae_next: chex.Array, xs: tuple[chex.Array, chex.Array]) -> tuple[chex.Array, chex.Array]:
        delta, cont = xs
        gae = delta + gamma * lam * cont * gae_next
        return gae, gae

    _, advantages = jax.lax.scan(step, jnp.zeros_like(rewards[0]), (deltas, not_done), reverse=True)
    return advantages, advantages + values


def normalize_advantages(advantages: chex.Array, mask: chex.Array | None = None) -> chex.Array:
    """Standardise over the whole update buffer once, before the epochs (ML-Agents' ``_update_policy``); with a
    ``mask`` the buffer is the entries where it is set (the others come back as 0)."""
    if mask is None:
        return (advantages - advantages.mean()) / (advantages.std() + ADVANTAGE_EPS)
    count = jnp.maximum(jnp.sum(mask, dtype=advantages.dtype), 1.0)
    mean = jnp.sum(jnp.where(mask, advantages, 0.0)) / count
    std = jnp.sqrt(jnp.sum(jnp.where(mask, (advantages - mean) ** 2, 0.0)) / count)
    return jnp.where(mask, (advantages - mean) / (std + ADVANTAGE_EPS), 0.0)


def gaussian_log_prob(action: chex.Array, mu: chex.Array, log_std: chex.Array) -> chex.Array:
    """Per-dimension log-density, not summed: ML-Agents' ratio is taken per action dimension."""
    std = jnp.exp(log_std)
    return -((action - mu) ** 2) / (2.0 * std**2 + EPSILON) - jnp.log(std + EPSILON) - _LOG_SQRT_2PI


def gaussian_entropy(log_std: chex.Array) -> chex.Array:
    """Entropy per sample: mean over the last (action) axis of ``0.5 * log(2πeσ² + 1e-7)``."""
    std = jnp.exp(log_std)
    return jnp.mean(0.5 * jnp.log(2.0 * math.pi * math.e * std**2 + EPSILON), axis=-1)


def decayed_value(initial: float, minimum: float, step: chex.Numeric, max_steps: int, schedule: str) -> chex.Array:
    """ML-Agents' ``DecayedValue``: linear decay from ``initial`` to ``minimum`` at ``max_steps``, then flat."""
    if schedule == "constant":
        return jnp.asarray(initial, jnp.float32)
    if schedule != "linear":
        raise ValueError(f"unknown schedule {schedule!r}; expected 'linear' or 'constant'")
    progress = jnp.minimum(jnp.asarray(step, jnp.float32), float(max_steps)) / float(max_steps)
    return (initial - minimum) * (1.0 - progress) + minimum


@flax.struct.dataclass
class Schedule:
    """Hyperparameters in force at one step."""

    learning_rate: chex.Array
    beta: chex.Array
    epsilon: chex.Array


def schedule_at(
    step: chex.Numeric,
    max_steps: int,
    learning_rate: float,
    beta: float,
    epsilon: float,
    learning_rate_schedule: str = "linear",
    beta_schedule: str = "linear",
    epsilon_schedule: str = "linear",
) -> Schedule:
    """Learning rate, beta and epsilon at ``step`` (agent transitions), each with ML-Agents' floor."""
    return Schedule(
        learning_rate=decayed_value(learning_rate, LR_FLOOR, step, max_steps, learning_rate_schedule),
        beta=decayed_value(beta, BETA_FLOOR, step, max_steps, beta_schedule),
        epsilon=decayed_value(epsilon, EPSILON_FLOOR, step, max_steps, epsilon_schedule),
    )


@flax.struct.dataclass
class Batch:
    """Flat, minibatch-ready experience: obs [B, obs], raw_action/log_prob [B, act], the rest [B]."""

    obs: chex.Array
    raw_action: chex.Array
    log_prob: chex.Array
    value: chex.Array
    advantage: chex.Array
    returns: chex.Array


def ppo_loss(
    params: AgentParams,
    actor_norm: NormalizerState,
    critic_norm: NormalizerState,
    batch: Batch,
    epsilon: chex.Numeric,
    beta: chex.Numeric,
    spec: NetworkSpec,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """ML-Agents' PPO loss ``policy + 0.5 * value - beta * entropy``; differentiate w.r.t. ``params`` only.

    Metrics: ``policy_loss`` (absolute, as ML-Agents reports it), ``value_loss``, ``entropy``,
    ``approx_kl`` (mean of ``(r - 1) - log r`` over batch and action dims) and ``clip_fraction``.
    """
    policy, policy_metrics = actor_loss(params, actor_norm, critic_norm, batch, epsilon, beta, spec)
    value, value_metrics = critic_loss(params, actor_norm, critic_norm, batch, epsilon, beta, spec)
    return policy + value, {**policy_metrics, **value_metrics}


def _check_batch(batch: Batch, spec: NetworkSpec) -> None:
    size = batch.obs.shape[0]
    chex.assert_shape(batch.obs, (size, spec.obs_size))
    chex.assert_shape([batch.raw_action, batch.log_prob], (size, spec.action_size))
    chex.assert_shape([batch.value, batch.advantage, batch.returns], (size,))


def actor_loss(params: AgentParams, actor_norm: NormalizerState, critic_norm: NormalizerState, batch: Batch,
               epsilon: chex.Numeric, beta: chex.Numeric,
               spec: NetworkSpec) -> tuple[chex.Array, dict[str, chex.Array]]:
    """The policy's part of ``ppo_loss``, ``policy - beta * entropy``: all that reaches the actor's parameters
    (without ``shared_critic``), with the policy's metrics. Takes ``ppo_loss``'s arguments."""
    _check_batch(batch, spec)
    mu, log_std = policy_distribution(params, actor_norm, batch.obs, spec)
    log_ratio = gaussian_log_prob(batch.raw_action, mu, log_std) - batch.log_prob
    ratio = jnp.exp(log_ratio)
    advantage = batch.advantage[:, None]
    surrogate = jnp.minimum(ratio * advantage, jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon) * advantage)
    policy_loss = -jnp.mean(surrogate)
    entropy = jnp.mean(gaussian_entropy(log_std))
    metrics = {
        "policy_loss": jnp.abs(policy_loss),
        "entropy": entropy,
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > epsilon).astype(jnp.float32)),
    }
    return policy_loss - beta * entropy, metrics


def critic_loss(params: AgentParams, actor_norm: NormalizerState, critic_norm: NormalizerState, batch: Batch,
                epsilon: chex.Numeric, beta: chex.Numeric,
                spec: NetworkSpec) -> tuple[chex.Array, dict[str, chex.Array]]:
    """The value's part of ``ppo_loss``, ``0.5 * value``, with ML-Agents' clipped value loss as its metric. Takes
    ``ppo_loss``'s arguments."""
    _check_batch(batch, spec)
    value = value_estimate(params, critic_norm, batch.obs, spec)
    clipped_value = batch.value + jnp.clip(value - batch.value, -epsilon, epsilon)
    value_loss = jnp.mean(jnp.maximum((batch.returns - value) ** 2, (batch.returns - clipped_value) ** 2))
    return VALUE_LOSS_COEF * value_loss, {"value_loss": value_loss}
