"""ML-Agents' ``environment_parameters`` -> a JAX scene's params, each value checked against its field's valid range.

A Unity scene reads its environment parameters as floats; here a constant sets the field of the same name of the
scene's params dataclass (``envs.mobile_robot.MobileRobotParams``, ``envs.mobile_robot_obstacles.
MobileRobotObstaclesParams``). :data:`FIELDS` is the one table of what each settable field takes: the type (so
``random_spawn: "false"`` is refused instead of becoming True) and the range (so ``max_episode_steps: 0`` or a NaN
reward fail at start-up with one line, not as a silent non-learning run or a NaN loss). Floats must be finite in
float32, the dtype they reach the device in. Samplers and curricula are not supported on the JAX robot.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envs.car import ACTION_MODES

FLOAT32_MAX = 3.4028234663852886e38  # larger floats become inf on the device
INT32_MAX = 2**31 - 1  # integer fields are int32 on the device (compared with int32 step counters)

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 3


class ParameterError(ValueError):
    """A bad ``environment_parameters`` entry; the message is one line ``environment_parameters.<name>: ...``."""


def _show(value: Any) -> str:
    """A value for an error message: short and on one line, whatever its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = " ".join(_REPR.repr(value).split())
    except Exception:  # a value whose repr fails: its type is enough
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Field:
    """What one params field accepts: ``kind`` float/int/bool/choice, and for numbers a range ``[low, high]``
    (``low_open``: ``low`` itself excluded)."""

    kind: str
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    choices: tuple[str, ...] = ()

    def requirement(self) -> str:
        """``'must be a finite number > 0'``, ``'must be an integer in [1, 2147483647]'``, ..."""
        if self.kind == "bool":
            return "must be true or false (or 1 / 0, as ML-Agents sends it)"
        if self.kind == "choice":
            return f"must be one of: {', '.join(self.choices)}"
        noun = "an integer" if self.kind == "int" else "a finite number"
        low, high = _number_text(self.low), _number_text(self.high)
        if math.isfinite(self.low) and math.isfinite(self.high):
            return f"must be {noun} in {'(' if self.low_open else '['}{low}, {high}]"
        if math.isfinite(self.low):
            return f"must be {noun} {'>' if self.low_open else '>='} {low}"
        return f"must be {noun}"

    def convert(self, value: Any) -> Any:
        """The field's value for ``value``, or None when it is not acceptable."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            number = _as_number(value) if not isinstance(value, str) else None
            return bool(number) if number in (0, 1) else None
        if self.kind == "choice":
            return value if isinstance(value, str) and value in self.choices else None
        number = _as_number(value)
        if number is None or not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            return None
        if self.kind == "int":
            if number != math.floor(number):
                return None
            number = int(number)
        inside = (number > self.low if self.low_open else number >= self.low) and number <= self.high
        return (number if self.kind == "int" else float(number)) if inside else None


def _number_text(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and x == int(x) else str(x)


def _as_number(value: Any) -> float | int | None:
    """An int or float (not a bool), or a numeric string (YAML 1.1 reads ``1e3`` as one); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > 100:
            return None
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int):
        return value if value.bit_length() <= 128 else None
    return value if isinstance(value, float) else None


def real(low: float = -math.inf, high: float = math.inf, *, above: float | None = None) -> Field:
    """A float field in ``[low, high]`` (or ``(above, high]``)."""
    if above is not None:
        return Field("float", low=above, high=high, low_open=True)
    return Field("float", low=low, high=high)


FINITE = real()
LENGTH = real(above=0.0)       # something divides by it, or a zero size makes the sensor/goal vanish
DISTANCE = real(0.0)
ANGLE = real(0.0, 180.0)       # degrees, compared with an absolute bearing

# Every settable field of every scene's params (the scenes share names where the meaning is shared).
FIELDS: dict[str, Field] = {
    # the car
    "forward_step": DISTANCE,            # m per unit a0 (unity mode)
    "turn_step": real(-180.0, 180.0),    # degrees per unit a1; negative mirrors the steering
    "wheel_speed": DISTANCE,             # m per step at |action| = 1 (wheels mode)
    "wheel_base": LENGTH,                # divides the wheel-speed difference (wheels mode)
    "action_mode": Field("choice", choices=ACTION_MODES),
    # sensors
    "ray_length": LENGTH,                # observations are distance / ray_length
    "sensor_behind_pivot": FINITE,
    "pivot_height": DISTANCE,
    "sensor_above_pivot": FINITE,
    # the goal
    "goal_height": DISTANCE,
    "goal_radius": LENGTH,
    "goal_distance": DISTANCE,
    # rewards (any sign)
    "step_reward": FINITE,
    "goal_reward": FINITE,
    "near_penalty": FINITE,
    "stage_step_cost": FINITE,
    "near_distance": DISTANCE,
    # episodes and spawns
    "max_episode_steps": Field("int", low=1, high=INT32_MAX),  # compared with the int32 step count; 0 never ends
    "spawn_jitter": DISTANCE,
    "min_spawn_distance": DISTANCE,
    "random_spawn": Field("bool"),
    "random_heading": Field("bool"),
    # the obstacle scene's stages
    "stage_angle": ANGLE,
    "head_occlusion_angle": ANGLE,
}


def check_parameter(name: str, value: Any) -> Any:
    """``value`` converted for field ``name`` (see :data:`FIELDS`), or a :class:`ParameterError`."""
    where = f"environment_parameters.{name}"
    if isinstance(value, Mapping):
        raise ParameterError(f"{where}: only constant values are supported, not samplers or curricula")
    field = FIELDS[name]
    converted = field.convert(value)
    if converted is None:
        raise ParameterError(f"{where}: {_show(value)} {field.requirement()}")
    return converted


def apply_environment_parameters(env_params, parameters: Mapping[str, Any] | None):
    """ML-Agents' ``environment_parameters`` (sent to Unity scenes) set fields of the JAX scene's params.

    Constant values only (``max_episode_steps: 500``, ``random_spawn: true``), each checked against :data:`FIELDS`;
    unknown names, structural fields (walls, spawn tables), samplers and curricula are refused with the name.
    """
    names = {f.name for f in dataclasses.fields(env_params)}
    settable = sorted(names & set(FIELDS))
    changes = {}
    for name, value in (parameters or {}).items():
        if not isinstance(name, str) or name not in names:
            raise ParameterError(f"environment_parameters.{_show(name) if not isinstance(name, str) else name[:60]}: "
                                 f"not a parameter of this scene ({', '.join(settable)})")
        if name not in FIELDS:
            raise ParameterError(f"environment_parameters.{name}: a structural constant of the scene, not settable "
                                 f"from the YAML ({', '.join(settable)} are)")
        changes[name] = check_parameter(name, value)
    return env_params.replace(**changes) if changes else env_params
