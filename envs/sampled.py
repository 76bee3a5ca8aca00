"""ML-Agents' environment parameter samplers on the JAX robot: each robot draws its own values at every reset.

``SampledParams(env, parameters)`` wraps a scene. Its state carries, per robot, the values drawn for each sampled
field of the scene's params (``values``) and the lesson each parameter is in (``lesson``, see ``rlrobot.curriculum``).
``reset_env`` draws new values from the robot's lesson's sampler (inside the jitted program: no host round trip),
and ``step_env`` runs the scene with those fields of the params replaced by the robot's own values. An auto-reset
draws again, in the lesson the finished episode's state carries, so the host changes a lesson by writing
``lesson`` into the state (:func:`with_lessons`): the lesson is data, never a recompile.

A sampler is ``(kind, args)`` as ML-Agents' YAML gives it: ``("constant", (value,))``, ``("uniform", (min, max))``,
``("gaussian", (mean, st_dev))`` or ``("multirangeuniform", ((a, b), (c, d), ...))``, drawn as Unity's samplers do
(a multi-range draw picks an interval with probability proportional to its length). A draw is clipped into the
field's valid range (a Gaussian's tails), and an integer field's draw is rounded to the nearest integer.

Keys: the values are drawn from ``fold_in`` streams of the reset key (``envs.randomization.stream``), and the scene
gets the reset and step keys unchanged, so a sampler that always draws a field's default reproduces the unwrapped
scene's episodes (``tests/envs/test_sampled_params.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.api import Environment
from envs.randomization import stream

SAMPLER_KINDS = ("constant", "uniform", "gaussian", "multirangeuniform")


@dataclass(frozen=True)
class SampledParameter:
    """One sampled field of the scene's params: a sampler per lesson, and the field's range and type."""

    name: str
    lessons: tuple[tuple[str, tuple], ...]
    low: float = -np.inf
    high: float = np.inf
    integer: bool = False


@struct.dataclass
class SampledState:
    inner: Any           # the scene's own state
    values: jnp.ndarray  # [P] this robot's draws, one per sampled parameter
    lesson: jnp.ndarray  # [P] int32: the lesson each parameter draws from at the robot's next reset

    def __getattr__(self, name: str):
        """The scene's own fields (``pos``, ``yaw``, ``slot``, ...), for code that reads a robot's state."""
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def draw(sampler: tuple[str, tuple], key: chex.PRNGKey) -> jnp.ndarray:
    """One float32 draw of an ML-Agents sampler."""
    kind, args = sampler
    if kind == "constant":
        return jnp.float32(args[0])
    if kind == "uniform":
        return jax.random.uniform(key, (), jnp.float32, args[0], args[1])
    if kind == "gaussian":
        return jnp.float32(args[0]) + jnp.float32(args[1]) * jax.random.normal(key, (), jnp.float32)
    if kind == "multirangeuniform":
        lows = np.asarray([a for a, _ in args], np.float32)
        sizes = np.asarray([b - a for a, b in args], np.float32)
        ends = np.cumsum(sizes)
        cursor = jax.random.uniform(key, (), jnp.float32) * ends[-1]
        index = jnp.minimum(jnp.sum(cursor >= ends), len(args) - 1)  # the interval the cursor falls in
        starts = jnp.asarray(ends - sizes)
        return jnp.minimum(jnp.asarray(lows)[index] + (cursor - starts[index]), jnp.asarray(lows + sizes)[index])
    raise ValueError(f"Unknown sampler {kind!r}; expected one of {SAMPLER_KINDS}")


def draw_parameter(parameter: SampledParameter, lesson: jnp.ndarray, key: chex.PRNGKey) -> jnp.ndarray:
    """A draw from the sampler of ``lesson`` (traced), clipped into the field's range (rounded for an integer)."""
    draws = [draw(sampler, key) for sampler in parameter.lessons]
    value = draws[0] if len(draws) == 1 else jnp.stack(draws)[jnp.clip(lesson, 0, len(draws) - 1)]
    if parameter.integer:
        value = jnp.round(value)
    return jnp.clip(value, parameter.low, parameter.high)


class SampledParams(Environment[SampledState, Any]):
    """A scene whose ``parameters`` are drawn per robot at every reset; see the module docstring."""

    def __init__(self, env: Environment, parameters: tuple[SampledParameter, ...]) -> None:
        names = [p.name for p in parameters]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"SampledParams needs distinct parameter names, got {names}")
        self.env, self.parameters = env, tuple(parameters)
        self.observation_size, self.action_size = env.observation_size, env.action_size
        self.step_uses_key = env.step_uses_key

    def __getattr__(self, name: str):
        """The scene's own attributes and helpers (for code written against the scene, e.g. renderers)."""
        if name == "env" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.env, name)

    def step_needs_key(self, params) -> bool:
        """A sampled field may be a noise level, drawn per robot: always give each robot its own key."""
        return True

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def default_params(self):
        return self.env.default_params

    def robot_params(self, params, values: jnp.ndarray):
        """The scene's params with the sampled fields set to one robot's ``values``."""
        changes = {}
        for index, parameter in enumerate(self.parameters):
            value = values[index]
            changes[parameter.name] = value.astype(jnp.int32) if parameter.integer else value
        return params.replace(**changes)

    def draw_values(self, key: chex.PRNGKey, lesson: jnp.ndarray) -> jnp.ndarray:
        """One robot's draws for every parameter, each from its own key."""
        key = stream(key, "environment_parameters")
        return jnp.stack([draw_parameter(parameter, lesson[index], jax.random.fold_in(key, index))
                          for index, parameter in enumerate(self.parameters)]).astype(jnp.float32)

    def reset_env(self, key, params, slot, prev_state):
        lesson = jnp.zeros(len(self.parameters), jnp.int32) if prev_state is None else prev_state.lesson
        values = self.draw_values(key, lesson)
        obs, inner = self.env.reset_env(key, self.robot_params(params, values), slot,
                                        None if prev_state is None else prev_state.inner)
        return obs, SampledState(inner=inner, values=values, lesson=lesson)

    def step_env(self, key, state, action, params):
        obs, inner, reward, terminated, truncated = self.env.step_env(
            key, state.inner, action, self.robot_params(params, state.values))
        return obs, state.replace(inner=inner), reward, terminated, truncated

    def slot_of(self, state: SampledState) -> chex.Array:
        return self.env.slot_of(state.inner)


def with_lessons(env_state: SampledState, lessons: jnp.ndarray) -> SampledState:
    """Every robot's lessons set to ``lessons`` (``[..., P]``, broadcast over the robots' axis): they apply from each
    robot's next reset."""
    return env_state.replace(lesson=jnp.broadcast_to(jnp.asarray(lessons, jnp.int32), env_state.lesson.shape))
