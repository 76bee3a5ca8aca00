"""The functional environment protocol every rlrobot environment follows.

An environment is a stateless object; everything that changes lives in a ``flax.struct``
state and everything that configures lives in a ``flax.struct`` params dataclass, so that
``reset`` and ``step`` are pure functions that ``jax.jit`` and ``jax.vmap`` transform freely::

    env = envs.make("MobileRobot")
    params = env.default_params                       # every constant, overridable with .replace()
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

``step`` auto-resets: when an episode ends (``terminated`` = a real end, ``truncated`` = the
time limit), the returned ``obs``/``state`` already belong to the next episode and the last
observation of the finished one is in ``info["final_obs"]`` (the trainer bootstraps
truncated episodes from it). Subclasses implement ``reset_env`` and ``step_env``.
"""
from __future__ import annotations

from typing import Any, Generic, TypeVar

import chex
import jax
import jax.numpy as jnp

State = TypeVar("State")
Params = TypeVar("Params")


class Environment(Generic[State, Params]):
    """Base class: auto-reset and batching on top of ``reset_env``/``step_env``."""

    observation_size: int
    action_size: int
    #: Whether ``step_env`` draws on its key. Scenes whose transition is deterministic say False, and ``step`` then
    #: hands the whole key to the auto-reset instead of splitting it: one threefry hash less per robot and step.
    step_uses_key: bool = True

    @property
    def default_params(self) -> Params:
        raise NotImplementedError

    def reset_env(self, key: chex.PRNGKey, params: Params, slot: chex.Array,
                  prev_state: State | None) -> tuple[chex.Array, State]:
        """Start an episode for the robot in ``slot`` (its index in a batch; scenes use it to pick the arena,
        and a negative slot lets them pick one at random).

        ``prev_state`` is the finished episode's state on an auto-reset (None on the first reset), for scenes whose
        reset depends on where the robot was.
        """
        raise NotImplementedError

    def step_env(self, key: chex.PRNGKey, state: State, action: chex.Array,
                 params: Params) -> tuple[chex.Array, State, chex.Array, chex.Array, chex.Array]:
        """One transition without auto-reset: ``obs, state, reward, terminated, truncated``."""
        raise NotImplementedError

    def slot_of(self, state: State) -> chex.Array:
        """The batch slot a state was reset for (kept across auto-resets)."""
        return state.slot

    def reset(self, key: chex.PRNGKey, params: Params | None = None,
              slot: chex.Array | int = -1) -> tuple[chex.Array, State]:
        params = self.default_params if params is None else params
        return self.reset_env(key, params, jnp.asarray(slot, jnp.int32), None)

    def step(
        self, key: chex.PRNGKey, state: State, action: chex.Array, params: Params | None = None
    ) -> tuple[chex.Array, State, chex.Array, chex.Array, chex.Array, dict[str, Any]]:
        params = self.default_params if params is None else params
        key_step, key_reset = jax.random.split(key) if self.step_uses_key else (key, key)
        obs, next_state, reward, terminated, truncated = self.step_env(key_step, state, action, params)
        reset_obs, reset_state = self.reset_env(key_reset, params, self.slot_of(state), next_state)
        done = jnp.logical_or(terminated, truncated)
        new_state = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_state, next_state)
        new_obs = jnp.where(done, reset_obs, obs)
        info = {"final_obs": obs}
        return new_obs, new_state, reward, terminated, truncated, info

    def reset_batch(self, key: chex.PRNGKey, params: Params | None, num_envs: int) -> tuple[chex.Array, State]:
        """Reset ``num_envs`` robots, robot ``i`` in slot ``i`` (as agent ``i`` of a Unity scene)."""
        params = self.default_params if params is None else params
        keys = jax.random.split(key, num_envs)
        slots = jnp.arange(num_envs, dtype=jnp.int32)
        return jax.vmap(lambda k, s: self.reset(k, params, s))(keys, slots)

    def step_batch(self, key: chex.PRNGKey, state: State, action: chex.Array, params: Params | None = None):
        """``step`` vmapped over the leading axis of ``state`` and ``action``, one key split per robot."""
        params = self.default_params if params is None else params
        keys = jax.random.split(key, action.shape[0])
        return jax.vmap(lambda k, s, a: self.step(k, s, a, params))(keys, state, action)
