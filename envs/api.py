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

from envs.masked import map_masked

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

    def step_needs_key(self, params: Params) -> bool:
        """Whether ``step_env`` draws on its key with these params (a robot's own key is split off only then)."""
        return self.step_uses_key

    def step_batch(self, key: chex.PRNGKey, state: State, action: chex.Array, params: Params | None = None):
        """``step`` over the leading axis of ``state`` and ``action``, auto-resetting only the robots that finished.

        The same transitions and the same reset distribution as ``step`` vmapped, from other random streams: each
        robot gets its own step key only if ``step_env`` draws on it, and the resets are computed for the finished
        robots alone (:meth:`reset_finished`), rather than for every robot on every step.
        """
        params = self.default_params if params is None else params
        num_envs = action.shape[0]
        key_step, key_reset = jax.random.split(key)
        if self.step_needs_key(params):
            keys = jax.random.split(key_step, num_envs)
        else:
            keys = jnp.broadcast_to(key_step, (num_envs, *key_step.shape))
        obs, next_state, reward, terminated, truncated = jax.vmap(
            lambda k, s, a: self.step_env(k, s, a, params))(keys, state, action)
        new_obs, new_state = self.reset_finished(key_reset, params, next_state, obs, terminated | truncated)
        return new_obs, new_state, reward, terminated, truncated, {"final_obs": obs}

    def reset_finished(self, key: chex.PRNGKey, params: Params, state: State, obs: chex.Array,
                       done: chex.Array) -> tuple[chex.Array, State]:
        """``obs`` and ``state`` with every ``done`` robot in a new episode (same slot, its finished state as
        ``prev_state``).

        A reset casts all of a robot's rays, and only a few percent of robots finish on a step, so on a CPU only the
        finished robots are reset: ``small_reset_chunk`` of them first (with a policy that rarely ends an episode,
        that is all there are on most steps), then ``reset_chunk`` at a time (``envs.masked``). On an accelerator
        every robot's reset is computed and selected.
        """
        num_envs = done.shape[0]

        def reset(i: chex.Array, finished: State) -> tuple[chex.Array, State]:
            rows = jax.tree.leaves(finished)[0].shape[0]
            keys = jax.random.split(jax.random.fold_in(key, i), rows)
            return jax.vmap(lambda k, s: self.reset_env(k, params, self.slot_of(s), s))(keys, finished)

        return map_masked(reset, done, state, (obs, state), reset_chunk(num_envs), small_reset_chunk(num_envs))


#: Below this many robots every robot's reset is computed (a loop over chunks would cost more than it saves).
MIN_ROBOTS_FOR_CHUNKED_RESETS = 64
#: Finished robots reset per loop pass, as a fraction of the batch: a few percent finish on a typical step.
RESET_CHUNK_FRACTION = 1 / 16
#: The first pass, as a fraction of the batch: enough for the steps where hardly any robot finishes.
SMALL_RESET_CHUNK_FRACTION = 1 / 64


def reset_chunk(num_envs: int) -> int:
    """How many finished robots one pass of :meth:`Environment.reset_finished` resets on a CPU (``num_envs``: all of
    them, for small batches)."""
    if num_envs < MIN_ROBOTS_FOR_CHUNKED_RESETS:
        return num_envs
    return max(1, int(num_envs * RESET_CHUNK_FRACTION))


def small_reset_chunk(num_envs: int) -> int:
    """How many finished robots the first pass of :meth:`Environment.reset_finished` resets: when no more have
    finished, the resets cost this many robots' rays instead of ``reset_chunk``'s."""
    return max(1, int(num_envs * SMALL_RESET_CHUNK_FRACTION))
