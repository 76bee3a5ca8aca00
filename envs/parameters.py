"""ML-Agents' ``environment_parameters`` -> a JAX scene's params, each value checked against its field's valid range.

A Unity scene reads its environment parameters as floats; here a constant sets the field of the same name of the
scene's params dataclass (``envs.mobile_robot.MobileRobotParams``, ``envs.mobile_robot_obstacles.
MobileRobotObstaclesParams``). :data:`FIELDS` is the one table of what each settable field takes: the type (so
``random_spawn: "false"`` is refused instead of becoming True) and the range (so ``max_episode_steps: 0`` or a NaN
reward fail at start-up with one line, not as a silent non-learning run or a NaN loss). Floats must be finite in
float32, the dtype they reach the device in.

Samplers and curricula (:func:`sampled_parameters`) need a field that is data in the compiled program (a pytree
field of the params): each robot draws its own value at every reset (``envs.sampled``). Switches that select code
when the program is compiled (``random_spawn``, ``random_heading``, ``action_mode``) take constants only; their
numeric counterparts ``spawn_randomness`` and ``heading_randomness`` can be sampled. Every bound of a sampler (a
uniform's ends, a Gaussian's mean, a multi-range's intervals) must lie in the field's range.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Mapping, Sequence
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
    "spawn_randomness": real(0.0, 1.0),    # probability of a random spawn
    "heading_randomness": real(0.0, 1.0),  # share of the ±180° yaw range
    # domain randomisation (envs.randomization)
    "action_noise": DISTANCE,            # std of the noise on each action component
    "actuation_scale": DISTANCE,         # 0 stops the robot; 1 is the scene
    "observation_noise": DISTANCE,       # std of the noise on each observation
    "ray_dropout": real(0.0, 1.0),       # a probability
    "sensor_range": DISTANCE,            # 0: as far as ray_length
    # the obstacle scene's stages
    "stage_angle": ANGLE,
    "head_occlusion_angle": ANGLE,
}


def check_parameter(name: str, value: Any, where: str | None = None) -> Any:
    """``value`` converted for field ``name`` (see :data:`FIELDS`), or a :class:`ParameterError` naming ``where``
    (default ``environment_parameters.<name>``)."""
    where = where or f"environment_parameters.{name}"
    if isinstance(value, Mapping):
        raise ParameterError(f"{where}: a constant is needed here, not a sampler or curriculum")
    field = FIELDS[name]
    converted = field.convert(value)
    if converted is None:
        raise ParameterError(f"{where}: {_show(value)} {field.requirement()}")
    return converted


def _check_name(env_params, name: Any) -> None:
    """A settable field of this scene's params, or a ParameterError naming the ones there are."""
    names = {f.name for f in dataclasses.fields(env_params)}
    settable = sorted(names & set(FIELDS))
    listed = ", ".join(settable)
    if len(listed) > 300:  # the message stays one short line
        listed = listed[:listed.rfind(", ", 0, 290)] + f", ... ({len(settable)} in all)"
    if not isinstance(name, str) or name not in names:
        raise ParameterError(f"environment_parameters.{_show(name) if not isinstance(name, str) else name[:60]}: "
                             f"not a parameter of this scene ({listed})")
    if name not in FIELDS:
        raise ParameterError(f"environment_parameters.{name}: a structural constant of the scene, not settable "
                             f"from the YAML ({listed} are)")


def apply_environment_parameters(env_params, parameters: Mapping[str, Any] | None):
    """ML-Agents' ``environment_parameters`` (sent to Unity scenes) set fields of the JAX scene's params.

    Constant values (``max_episode_steps: 500``, ``random_spawn: true``), each checked against :data:`FIELDS`;
    unknown names and structural fields (walls, spawn tables) are refused with the name, and so are samplers and
    curricula (:func:`sampled_parameters` takes those).
    """
    changes = {}
    for name, value in (parameters or {}).items():
        _check_name(env_params, name)
        changes[name] = check_parameter(name, value)
    return env_params.replace(**changes) if changes else env_params


# What a sampler's arguments are called in the YAML, in the order ``envs.sampled`` takes them.
SAMPLER_ARGUMENTS = {"constant": ("value",), "uniform": ("min_value", "max_value"), "gaussian": ("mean", "st_dev"),
                     "multirangeuniform": ("intervals",)}
# A sampled integer is a rounded float32 draw: keep it where float32 still counts whole numbers exactly.
_INT_DRAW_MAX = float(2**24)


def _is_static(env_params, name: str) -> bool:
    """Whether a field is fixed when the program is compiled (``pytree_node=False``): it selects code."""
    field = next(f for f in dataclasses.fields(env_params) if f.name == name)
    return not field.metadata.get("pytree_node", True)


def _check_sampler_bounds(name: str, where: str, kind: str, args: tuple) -> None:
    """Every bound of a sampler inside the field's range (for an integer field, any real in it: draws are rounded)."""
    field = FIELDS[name]
    if kind == "constant":
        check_parameter(name, args[0], f"{where}.value" if where.endswith("sampler_parameters") else where)
        return
    bounds = Field("float", field.low, field.high, field.low_open)
    if kind == "uniform":
        named = list(zip(("min_value", "max_value"), args))
    elif kind == "gaussian":
        named = [("mean", args[0])]
    else:
        named = [(f"intervals[{i}]", value) for i, interval in enumerate(args) for value in interval]
    for key, value in named:
        if bounds.convert(value) is None:
            requirement = bounds.requirement().replace("must be a finite number", "must be")
            raise ParameterError(f"{where}.{key}: {_show(value)} {requirement} (the range of {name})")


def sampled_parameters(env_params, sampled: Mapping[str, Sequence[tuple[str, str, tuple]]]):
    """``envs.sampled.SampledParameter``s for the parameters given as samplers or curricula.

    ``sampled`` maps each name to its lessons' samplers as ``(where, kind, args)``: ``where`` is the YAML path of the
    lesson's value, for the one-line error. The field must be settable, a pytree field (not a compile-time switch)
    and numeric, and every sampler bound must lie in its range (:data:`FIELDS`).
    """
    from envs.sampled import SampledParameter

    out = []
    for name, lessons in sampled.items():
        _check_name(env_params, name)
        field = FIELDS[name]
        if _is_static(env_params, name) or field.kind not in ("float", "int"):
            hint = {"random_spawn": " (sample spawn_randomness, the probability of a random spawn, instead)",
                    "random_heading": " (sample heading_randomness, the share of the ±180° range, instead)"}
            raise ParameterError(f"environment_parameters.{name}: a switch fixed when the program is compiled, so it "
                                 f"takes a constant only, not a sampler or curriculum{hint.get(name, '')}")
        for where, kind, args in lessons:
            _check_sampler_bounds(name, where, kind, args)
        low = field.low if not field.low_open else max(field.low, 0.0) + 1e-6
        high = min(field.high, _INT_DRAW_MAX) if field.kind == "int" else field.high
        out.append(SampledParameter(name=name, lessons=tuple((kind, args) for _, kind, args in lessons),
                                    low=low, high=high, integer=field.kind == "int"))
    return tuple(out)
