"""Tiny environments with known answers (after rejax/bsuite probes): if PPO fails here, the bug is in PPO."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.api import Environment


@struct.dataclass
class ProbeState:
    slot: jnp.ndarray
    t: jnp.ndarray
    target: jnp.ndarray


@struct.dataclass
class ProbeParams:
    episode_length: int = 1


class TargetProbe(Environment[ProbeState, ProbeParams]):
    """Observe a random target in [-0.8, 0.8]; reward -(action - target)^2; one-step episodes.

    The optimal policy copies the observation (so the actor must learn from obs), V = −E[residual error].
    """

    observation_size = 1
    action_size = 1

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams()

    def reset_env(self, key, params, slot, prev_state):
        target = jax.random.uniform(key, (), minval=-0.8, maxval=0.8)
        return target[None], ProbeState(slot=slot, t=jnp.int32(0), target=target)

    def step_env(self, key, state, action, params):
        reward = -((jnp.clip(action[0], -1, 1) - state.target) ** 2)
        return state.target[None], state.replace(t=state.t + 1), reward, jnp.bool_(True), jnp.bool_(False)


class DiscountProbe(Environment[ProbeState, ProbeParams]):
    """Reward 1 only at the last of ``episode_length`` steps, observation = steps left: V(k left) = gamma^(k-1).

    Episodes end by truncation when ``truncate`` is set, and the final observation is then the first one of the
    next cycle (k = episode_length): the value must bootstrap from it, never be cut to 0.
    """

    observation_size = 1
    action_size = 1

    def __init__(self, truncate: bool = False):
        self.truncate = truncate

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(episode_length=4)

    def reset_env(self, key, params, slot, prev_state):
        return jnp.float32([params.episode_length]), ProbeState(slot=slot, t=jnp.int32(0), target=jnp.float32(0))

    def step_env(self, key, state, action, params):
        t = state.t + 1
        last = t >= params.episode_length
        left = (params.episode_length - t).astype(jnp.float32)
        if self.truncate:
            left = jnp.where(last, jnp.float32(params.episode_length), left)
        reward = jnp.where(last, 1.0, 0.0)
        terminated = last & (not self.truncate)
        truncated = last & self.truncate
        return left[None], state.replace(t=t), reward, terminated, truncated
