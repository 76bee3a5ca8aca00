"""Play a policy's first episodes in the JAX simulator and keep every step: one jitted loop, then host arrays.

:func:`make_recorder` plays ``num_envs`` robots exactly as ``envs.rollout.first_episodes`` (and so
``rlrobot-validate``) does — the same keys for the reset, the actions and the steps — and records the first
``record`` of them: their state, their sensor rays' hits (``scene.ray_hits``) and their rewards, step by step, until
every robot's first episode has ended or ``max_steps`` decisions were made. A robot whose episode ended stays where
it ended (the simulator's auto-reset is not applied), which changes nothing for the others: robots are independent.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlrobot.render import scene

#: ``act(policy_args, obs[N, n], key) -> action[N, k]``
Act = Callable[[Any, jnp.ndarray, jax.Array], jnp.ndarray]


@struct.dataclass
class Trace:
    """What the jitted loop returns (``K`` recorded robots, ``T = max_steps``): per frame ``[T + 1, K, ...]`` the
    robots' states, ray distances and kinds, and the reward of the step that led to the frame (0 at frame 0); per
    robot ``[K]`` how the first episode ended and its length; the arena's solids (leading axis ``K``); and the number
    of steps played."""

    states: Any
    ray_distance: jnp.ndarray
    ray_kind: jnp.ndarray
    reward: jnp.ndarray
    terminated: jnp.ndarray
    truncated: jnp.ndarray
    length: jnp.ndarray
    solids: tuple
    steps: jnp.ndarray


def make_recorder(env, params, act: Act, num_envs: int, record: int,
                  max_steps: int) -> Callable[[Any, jax.Array], Trace]:
    """A jitted ``(policy_args, key) -> Trace``; ``policy_args`` go to ``act`` (e.g. the networks), so one compiled
    program serves every checkpoint of a run."""
    if not 1 <= record <= num_envs:
        raise ValueError(f"record ({record}) must be between 1 and num_envs ({num_envs})")

    def one_step(key, state, action):
        # Environment.step without its auto-reset: the same key for step_env as step gives it.
        key_step = jax.random.split(key)[0] if env.step_uses_key else key
        return env.step_env(key_step, state, action, params)

    hits = jax.vmap(lambda state: scene.ray_hits(env, params, state))

    def kept(tree):
        return jax.tree.map(lambda x: x[:record], tree)

    def run(policy_args, key) -> Trace:
        key_reset, key_run = jax.random.split(key)
        obs, state = env.reset_batch(key_reset, params, num_envs)
        first = kept(state)
        distance, kind = hits(first)
        frames = (first, distance, kind, jnp.zeros(record, jnp.float32))
        buffers = jax.tree.map(lambda x: jnp.zeros((max_steps + 1, *x.shape), x.dtype).at[0].set(x), frames)
        flags = jnp.zeros(num_envs, bool)
        carry = (obs, state, flags, flags, flags, jnp.zeros(num_envs, jnp.int32), buffers, key_run, jnp.int32(0))

        def body(carry):
            obs, state, done, terminated, truncated, length, buffers, key, t = carry
            key, key_act, key_step = jax.random.split(key, 3)
            action = act(policy_args, obs, key_act)
            keys = jax.random.split(key_step, num_envs)
            next_obs, next_state, reward, ended, cut = jax.vmap(one_step)(keys, state, action)
            active = ~done
            state = jax.tree.map(lambda new, old: jnp.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                                 next_state, state)
            obs = jnp.where(active[:, None], next_obs, obs)
            terminated, truncated = terminated | (active & ended), truncated | (active & cut)
            length = length + active
            done = done | ended | cut
            now = kept(state)
            distance, kind = hits(now)
            frame = (now, distance, kind, kept(jnp.where(active, reward, 0.0)).astype(jnp.float32))
            buffers = jax.tree.map(lambda b, x: b.at[t + 1].set(x), buffers, frame)
            return obs, state, done, terminated, truncated, length, buffers, key, t + 1

        def cond(carry):
            return (carry[-1] < max_steps) & ~jnp.all(carry[2])

        _, _, _, terminated, truncated, length, buffers, _, steps = jax.lax.while_loop(cond, body, carry)
        states, distance, kind, reward = buffers
        arena = jax.vmap(lambda s: scene.solids(env, params, s))(first)
        return Trace(states=states, ray_distance=distance, ray_kind=kind, reward=reward,
                     terminated=kept(terminated), truncated=kept(truncated), length=kept(length), solids=arena,
                     steps=steps)

    return jax.jit(run)


OUTCOMES = ("goal", "penalty", "time limit", "not finished")


@dataclass(frozen=True)
class Recording:
    """A trace on the host, cut to the frames played, with what drawing needs (NumPy; ``K`` robots, ``F`` frames).

    ``pos`` [F, K, 2], ``yaw`` [F, K], ``ray_distance``/``ray_kind`` [F, K, 18], ``reward`` [F, K] (of the step into
    each frame), ``length`` [K] (decisions in the episode), ``outcome`` [K] (an index into ``OUTCOMES``),
    ``penalty`` [F, K] (a step whose reward carries a penalty), ``arena`` [K] (the scene's arena index of each robot),
    ``solids`` (one tuple per robot of ``scene.Solid`` with NumPy fields), and the scene's ``sensor_behind`` and
    ``ray_length``.
    """

    scene: str
    pos: np.ndarray
    yaw: np.ndarray
    ray_distance: np.ndarray
    ray_kind: np.ndarray
    reward: np.ndarray
    length: np.ndarray
    outcome: np.ndarray
    penalty: np.ndarray
    arena: np.ndarray
    solids: tuple
    sensor_behind: float
    ray_length: float
    labels: tuple[str, ...] = ()

    @property
    def frames(self) -> int:
        return self.pos.shape[0]

    @property
    def episodes(self) -> int:
        return self.pos.shape[1]

    def returns(self) -> np.ndarray:
        """Cumulative reward ``[F, K]`` up to each frame."""
        return np.cumsum(self.reward, axis=0)

    def outcome_name(self, k: int) -> str:
        return OUTCOMES[int(self.outcome[k])]

    def label(self, k: int) -> str:
        return self.labels[k] if k < len(self.labels) else f"episode {k + 1} · arena {int(self.arena[k])}"


def _num_arenas(params) -> int | None:
    for name in ("arenas", "car_spawns"):
        table = getattr(params, name, None)
        if table:
            return len(table)
    return None


def to_recording(trace: Trace, env, params, scene_name: str, labels: tuple[str, ...] = ()) -> Recording:
    """The host copy of a trace: frames 0 … (longest episode), outcomes and penalty steps."""
    host = jax.device_get(trace)
    frames = int(np.max(host.length)) + 1
    states = host.states
    reward = np.asarray(host.reward[:frames], np.float64)
    length, terminated, truncated = (np.asarray(a) for a in (host.length, host.terminated, host.truncated))
    last_reward = reward[length, np.arange(length.size)]
    outcome = np.where(terminated, np.where(last_reward > 0, 0, 1), np.where(truncated, 2, 3))
    # A step that costs more than half of one near-penalty (every scene here has ``near_penalty``).
    threshold = getattr(params, "near_penalty", None)
    penalty = (reward < 0.5 * threshold) if threshold is not None and threshold < 0 else np.zeros_like(reward, bool)
    slots = np.asarray(getattr(states, "slot", np.zeros((1, length.size), np.int32)))[0]
    arenas = _num_arenas(params)
    solids = tuple(tuple(jax.tree.map(lambda x, k=k: np.asarray(x[k]), solid) for solid in host.solids)
                   for k in range(length.size))
    return Recording(scene=scene_name, pos=np.asarray(states.pos[:frames], np.float64),
                     yaw=np.asarray(states.yaw[:frames], np.float64),
                     ray_distance=np.asarray(host.ray_distance[:frames], np.float64),
                     ray_kind=np.asarray(host.ray_kind[:frames], np.int8), reward=reward, length=length.astype(int),
                     outcome=outcome.astype(int), penalty=penalty, arena=slots % arenas if arenas else slots,
                     solids=solids, sensor_behind=float(getattr(params, "sensor_behind_pivot", 0.0)),
                     ray_length=float(getattr(params, "ray_length", 4.0)), labels=tuple(labels))


def record_policy(env, params, scene_name: str, act: Act, policy_args: Any, key: jax.Array, episodes: int,
                  max_steps: int, num_envs: int | None = None) -> Recording:
    """Record the first ``episodes`` of ``num_envs`` (default: as many) robots' first episodes, on the host."""
    recorder = make_recorder(env, params, act, num_envs or episodes, episodes, max_steps)
    return to_recording(recorder(policy_args, key), env, params, scene_name)
