"""``environment_parameters`` on a Unity build (``rlrobot-learn CONFIG --env PATH``), sent as mlagents-learn sends them.

ML-Agents 1.1.0 (``EnvironmentParameterManager`` and its env manager): every parameter is a curriculum (a constant or
a sampler is one of a single lesson); the current lesson's value goes to the build through the EnvironmentParameters
side channel, a number (or a ``constant`` sampler) with ``set_float_parameter``, a sampler with its
``set_*_sampler_parameters`` and a seed; the build draws from it each time the scene reads it. The seeds are
``_set_sampler_seeds(run_seed)``: every lesson of every parameter, in the YAML's order, gets ``run_seed + offset``
with offset 0, 1, 2, ... (constants count too; rlrobot refuses a sampler's own ``seed``, so none is skipped).

The values are sent at launch and before every reset; a lesson that moves sends every parameter's current value
again, with the next step, or with a reset of every player when the finished lesson asks for ``require_reset``. The
lessons themselves are the JAX path's :class:`rlrobot.curriculum.Curriculum`, attached to the run
(``Run.attach_curriculum``): checked at each summary, checkpointed, restored by ``--resume`` and logged as
``Environment/Lesson Number/<param>``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from rlrobot.config import ConfigError, show
from rlrobot.curriculum import Lesson, Sampler, foreign_behavior, parse_environment_parameters
from rlrobot.run import Run, RunError
from rlrobot.train import Metrics, episode_returns

logger = logging.getLogger("rlrobot")

FLOAT32_MAX = 3.4028234663852886e38  # the side channel writes float32


def int32(value: int) -> int:
    """A seed as the side channel's int32 carries it (wrapped, as C# wraps ``seed + offset``)."""
    return (value + 2**31) % 2**32 - 2**31


def sampler_seeds(parameters: Mapping[str, Any], run_seed: int) -> dict[str, tuple[int, ...]]:
    """ML-Agents' ``_set_sampler_seeds``: each parameter's lessons' seeds, ``run_seed + offset`` in order."""
    seeds, offset = {}, 0
    for name, parameter in parameters.items():
        seeds[name] = tuple(int32(run_seed + offset + i) for i in range(len(parameter.lessons)))
        offset += len(parameter.lessons)
    return seeds


def side_channel_value(lesson: Lesson, seed: int):
    """What the side channel sends for a lesson's value: a float, or an ``envs.unity.ParameterSampler``. A value the
    channel cannot carry is a RunError in ML-Agents' words."""
    from envs.unity import ParameterSampler

    value = lesson.value
    if isinstance(value, Sampler):
        return float(value.args[0]) if value.kind == "constant" else ParameterSampler(value.kind, value.args, seed)
    if not isinstance(value, (int, float)):  # true/false are numbers to ML-Agents (ConstantSettings(value=True))
        raise RunError(f"{lesson.where}: Unsupported parameter randomization configuration {show(value)}.")
    if FLOAT32_MAX < abs(float(value)) < float("inf"):
        raise RunError(f"{lesson.where} ({show(value)}): too large for the side channel's float32.")
    return float(value)


class UnityParameters:
    """The run's ``environment_parameters`` for the build: current values and, once attached, the lessons."""

    def __init__(self, raw: Mapping[str, Any] | None, run_seed: int) -> None:
        try:
            self.parameters = parse_environment_parameters(raw)
        except ConfigError as error:
            raise RunError(str(error)) from None
        self.seeds = sampler_seeds(self.parameters, run_seed)
        self.run: Run | None = None
        for name, parameter in self.parameters.items():  # every lesson's value is checked before a player starts
            for lesson, seed in zip(parameter.lessons, self.seeds[name]):
                side_channel_value(lesson, seed)

    def values(self) -> dict:
        """Each parameter's value in its current lesson (lesson 0 until :meth:`attach`)."""
        curriculum = None if self.run is None else self.run.curriculum
        lessons = curriculum.lesson_numbers() if curriculum is not None else {}
        return {name: side_channel_value(parameter.lessons[lessons.get(name, 0)],
                                         self.seeds[name][lessons.get(name, 0)])
                for name, parameter in self.parameters.items()}

    def check_behavior(self, behavior: str) -> None:
        """Every completion criterion must name the build's trained behavior (else its lesson never ends)."""
        problem = foreign_behavior(self.parameters, behavior)
        if problem:
            raise RunError(problem)

    def attach(self, run: Run, max_steps: int) -> None:
        """The run's lessons (restored by ``--resume``), as the JAX path keeps them; logged as ML-Agents does."""
        if not self.parameters:
            return
        self.run = run
        curriculum = run.attach_curriculum(self.parameters, max_steps)
        for name in curriculum.names:
            logger.info(curriculum.describe(name))

    def update(self, step: int, metrics: Metrics) -> tuple[bool, bool]:
        """After a summary: the period's returns join the reward buffer and the criteria are checked at ``step``.
        Returns whether a lesson moved and whether the build must be reset."""
        curriculum = None if self.run is None else self.run.curriculum
        if curriculum is None:
            return False, False
        curriculum.add_returns(episode_returns(metrics))
        changed, must_reset = curriculum.update(step)
        self.run.record_curriculum()
        return bool(changed), must_reset
