"""ML-Agents' ``environment_parameters``: the YAML schema, and the curriculum's lessons on the host.

Schema (ML-Agents 1.1.0, ``mlagents.trainers.settings``): each name maps to a constant, a sampler
``{sampler_type: uniform|gaussian|multirangeuniform|constant, sampler_parameters: {...}}`` or a curriculum
``{curriculum: [{name, completion_criteria: {...}, value}, ...]}`` whose lessons' values are constants or samplers;
every lesson but the last needs ``completion_criteria``. As in ML-Agents, a constant or a sampler is a curriculum of
one lesson. :func:`parse_environment_parameters` checks all of it with ML-Agents' error wording, on one line that
names the key.

:class:`Curriculum` is ML-Agents' ``EnvironmentParameterManager.update_lessons`` for one run: a reward buffer of the
most recent episode returns (as long as the longest ``min_lesson_length``), and per parameter its lesson and smoothed
reward. rlrobot checks the criteria at each summary (ML-Agents: after every environment step), so the smoothing
``0.25·previous + 0.75·mean`` is applied once per summary. The buffer is fed with the summary period's returns as the
trainer samples them (the first 1024 of the period, in order). Its state goes into every checkpoint's metadata and
``training_status.json`` (``{<parameter>: {lesson_num}}``, as ML-Agents), and ``--resume`` restores it.

No JAX here: the config loader uses this module before JAX is imported; :func:`make_scene` imports the scenes.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rlrobot.config import ConfigError, show, show_key

logger = logging.getLogger("rlrobot")

MEASURES = ("progress", "reward")
SAMPLER_TYPES = ("uniform", "gaussian", "multirangeuniform", "constant")
# ML-Agents' settings class names, used in its error messages, and each sampler's parameters with their defaults.
SAMPLER_SETTINGS = {
    "uniform": ("UniformSettings", {"min_value": 0.0, "max_value": 1.0}),
    "gaussian": ("GaussianSettings", {"mean": 1.0, "st_dev": 1.0}),
    "multirangeuniform": ("MultiRangeUniformSettings", {"intervals": [[0.0, 1.0]]}),
    "constant": ("ConstantSettings", {"value": 0.0}),
}
CRITERIA_KEYS = ("behavior", "measure", "min_lesson_length", "signal_smoothing", "threshold", "require_reset")
LESSON_KEYS = ("name", "value", "completion_criteria")
# Every lesson's sampler is drawn at each reset and the lesson picked by index; this keeps the program small.
MAX_LESSONS = 100
MAX_INTERVALS = 100


# --- schema ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampler:
    """A sampler: ``kind`` one of :data:`SAMPLER_TYPES`, ``args`` its numbers in ``envs.sampled`` order."""

    kind: str
    args: tuple

    def __str__(self) -> str:
        """As ML-Agents prints a lesson's value."""
        if self.kind == "constant":
            return f"Float: value={self.args[0]}"
        if self.kind == "uniform":
            return f"Uniform sampler: min={self.args[0]}, max={self.args[1]}"
        if self.kind == "gaussian":
            return f"Gaussian sampler: mean={self.args[0]}, stddev={self.args[1]}"
        return f"MultiRangeUniform sampler: intervals={[list(i) for i in self.args]}"


@dataclass(frozen=True)
class CompletionCriteria:
    """ML-Agents' ``CompletionCriteriaSettings``, with its defaults."""

    behavior: str
    measure: str = "reward"
    min_lesson_length: int = 0
    signal_smoothing: bool = True
    threshold: float = 0.0
    require_reset: bool = False

    def need_increment(self, progress: float, rewards: list[float], smoothing: float) -> tuple[bool, float]:
        """ML-Agents' ``need_increment``: whether the lesson is complete, and the new smoothed reward."""
        if len(rewards) < self.min_lesson_length:
            return False, smoothing
        if self.measure == "progress" and progress > self.threshold:
            return True, smoothing
        if self.measure == "reward":
            if len(rewards) < 1:
                return False, smoothing
            measure = math.fsum(rewards) / len(rewards)
            if math.isnan(measure):
                return False, smoothing
            if self.signal_smoothing:
                measure = 0.25 * smoothing + 0.75 * measure
                smoothing = measure
            if measure > self.threshold:
                return True, smoothing
        return False, smoothing


@dataclass(frozen=True)
class Lesson:
    """One lesson: its name, value (a :class:`Sampler`, or a plain constant as given) and completion criteria
    (None for the last). ``where`` is the YAML path of the value."""

    name: str
    value: Any
    completion_criteria: CompletionCriteria | None
    where: str


@dataclass(frozen=True)
class EnvironmentParameter:
    """One environment parameter: its lessons (one for a constant or a sampler)."""

    name: str
    lessons: tuple[Lesson, ...]

    @property
    def constant(self) -> bool:
        """A plain value: set once in the scene's params, nothing drawn."""
        return len(self.lessons) == 1 and not isinstance(self.lessons[0].value, Sampler)


def _number(value: Any, where: str) -> float:
    """A finite float (ints and YAML 1.1's numeric strings such as ``1e-3`` too), else a ConfigError."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and len(value) <= 100:
        try:
            number = float(value)
        except ValueError:
            number = None
    try:
        ok = number is not None and math.isfinite(number) and abs(number) <= 3.4028234663852886e38
    except OverflowError:
        ok = False
    if not ok:
        raise ConfigError(f"{where} ({show(value)}) must be a finite number.")
    return float(number)


def _mapping_keys(value: Mapping, allowed: tuple[str, ...], settings: str, where: str) -> None:
    for key in value:
        if key not in allowed:
            raise ConfigError(f"{where}: The option {show_key(key)} was specified in your YAML file for {settings}, "
                              f"but is invalid.")


def parse_sampler(value: Any, where: str) -> Sampler:
    """ML-Agents' ``ParameterRandomizationSettings.structure`` for a sampler mapping, with its error wording."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: Unsupported parameter randomization configuration {show(value)}.")
    if "sampler_type" not in value:
        raise ConfigError(f"{where}: Sampler configuration does not contain sampler_type : {show(value)}.")
    if "sampler_parameters" not in value:
        raise ConfigError(f"{where}: Sampler configuration does not contain sampler_parameters : {show(value)}.")
    _mapping_keys(value, ("sampler_type", "sampler_parameters"), "ParameterRandomizationSettings", where)
    kind = value["sampler_type"]
    if not isinstance(kind, str) or kind not in SAMPLER_TYPES:
        raise ConfigError(f"{where}.sampler_type: {show(kind)} is not a valid ParameterRandomizationType "
                          f"({', '.join(SAMPLER_TYPES)}).")
    settings, defaults = SAMPLER_SETTINGS[kind]
    where = f"{where}.sampler_parameters"
    given = value["sampler_parameters"]
    given = {} if given is None else given
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: Unsupported config {show(given)} for {settings}.")
    if "seed" in given:
        raise ConfigError(f"{where}.seed: per-sampler seeds are not supported by rlrobot (every draw follows the "
                          f"run's seed).")
    _mapping_keys(given, tuple(defaults), settings, where)
    merged = {**defaults, **given}
    if kind == "multirangeuniform":
        return Sampler(kind, _intervals(merged["intervals"], f"{where}.intervals"))
    args = tuple(_number(merged[key], f"{where}.{key}") for key in defaults)
    if kind == "uniform" and args[0] > args[1]:
        raise ConfigError(f"{where}: Minimum value is greater than maximum value in uniform sampler.")
    if kind == "gaussian" and args[1] < 0:
        raise ConfigError(f"{where}.st_dev ({show(args[1])}) must be >= 0.")
    return Sampler(kind, args)


def _intervals(value: Any, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{where} ({show(value)}) must be a list of [min, max] intervals.")
    if len(value) > MAX_INTERVALS:
        raise ConfigError(f"{where}: {len(value)} intervals; rlrobot takes at most {MAX_INTERVALS}.")
    out = []
    for index, interval in enumerate(value):
        if not isinstance(interval, (list, tuple)) or len(interval) != 2:
            raise ConfigError(f"{where}[{index}]: The sampling interval {show(interval)} must contain exactly two "
                              f"values.")
        low, high = (_number(x, f"{where}[{index}]") for x in interval)
        if low > high:
            raise ConfigError(f"{where}[{index}]: Minimum value is greater than maximum value in interval "
                              f"{show([low, high])}.")
        out.append((low, high))
    return tuple(out)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} ({show(value)}) must be true or false.")
    return value


def parse_criteria(value: Any, where: str) -> CompletionCriteria:
    """ML-Agents' ``CompletionCriteriaSettings`` (``behavior`` required), with its checks and wording."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: Unsupported config {show(value)} for CompletionCriteriaSettings.")
    _mapping_keys(value, CRITERIA_KEYS, "CompletionCriteriaSettings", where)
    if "behavior" not in value:
        raise ConfigError(f"{where}: CompletionCriteriaSettings needs behavior (the behavior whose progress or "
                          f"reward completes the lesson).")
    behavior = value["behavior"]
    if not isinstance(behavior, str) or not behavior:
        raise ConfigError(f"{where}.behavior ({show(behavior)}) must be a behavior name.")
    measure = value.get("measure", "reward")
    if measure not in MEASURES:
        raise ConfigError(f"{where}.measure: {show(measure)} is not a valid MeasureType ({', '.join(MEASURES)}).")
    length = value.get("min_lesson_length", 0)
    if isinstance(length, float) and length.is_integer():
        length = int(length)
    if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= 2**31 - 1:
        raise ConfigError(f"{where}.min_lesson_length ({show(length)}) must be an integer >= 0 (episodes).")
    threshold = _number(value.get("threshold", 0.0), f"{where}.threshold")
    if measure == "progress" and threshold > 1.0:
        raise ConfigError(f"{where}.threshold: Threshold for next lesson cannot be greater than 1 when the measure "
                          f"is progress.")
    if measure == "progress" and threshold < 0.0:
        raise ConfigError(f"{where}.threshold: Threshold for next lesson cannot be negative when the measure is "
                          f"progress.")
    return CompletionCriteria(behavior=behavior, measure=measure, min_lesson_length=length,
                              signal_smoothing=_bool(value.get("signal_smoothing", True), f"{where}.signal_smoothing"),
                              threshold=threshold,
                              require_reset=_bool(value.get("require_reset", False), f"{where}.require_reset"))


def _lesson_value(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return parse_sampler(value, where)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(value, where)  # one-line error for a huge int, NaN or inf
    raise ConfigError(f"{where}: Unsupported parameter randomization configuration {show(value)}.")


def parse_curriculum(name: str, value: Mapping, where: str) -> tuple[Lesson, ...]:
    """ML-Agents' ``EnvironmentParameterSettings`` and ``_check_lesson_chain``."""
    _mapping_keys(value, ("curriculum",), "EnvironmentParameterSettings", where)
    lessons = value["curriculum"]
    where = f"{where}.curriculum"
    if not isinstance(lessons, list) or not lessons:
        raise ConfigError(f"{where} ({show(lessons)}) must be a list of lessons ({{name, value, "
                          f"completion_criteria}}).")
    if len(lessons) > MAX_LESSONS:
        raise ConfigError(f"{where}: {len(lessons)} lessons; rlrobot takes at most {MAX_LESSONS}.")
    out = []
    for index, lesson in enumerate(lessons):
        at = f"{where}[{index}]"
        if not isinstance(lesson, Mapping):
            raise ConfigError(f"{at}: Unsupported config {show(lesson)} for Lesson.")
        _mapping_keys(lesson, LESSON_KEYS, "Lesson", at)
        for key in ("name", "value"):
            if key not in lesson:
                raise ConfigError(f"{at}: a Lesson needs a {key}.")
        lesson_name = lesson["name"]
        if isinstance(lesson_name, int) and not isinstance(lesson_name, bool) and lesson_name.bit_length() <= 64:
            lesson_name = str(lesson_name)
        if not isinstance(lesson_name, str):
            raise ConfigError(f"{at}.name ({show(lesson_name)}) must be a string.")
        criteria = lesson.get("completion_criteria")
        last = index == len(lessons) - 1
        if criteria is None and not last:
            raise ConfigError(f"{at}: A non-terminal lesson does not have a completion_criteria for {name}.")
        criteria = None if criteria is None else parse_criteria(criteria, f"{at}.completion_criteria")
        if last and criteria is not None:
            logger.warning(f"Your final lesson definition contains completion_criteria for {name}.It will be "
                           f"ignored.")
            criteria = None
        value_where = f"{at}.value"
        out.append(Lesson(name=lesson_name, value=_lesson_value(lesson["value"], value_where),
                          completion_criteria=criteria, where=value_where))
    return tuple(out)


def parse_parameter(name: str, value: Any, where: str) -> EnvironmentParameter:
    """One entry of ``environment_parameters``. Plain constants (numbers, and rlrobot's true/false and strings for
    a scene's switches) are kept as given: the scene checks their type and range."""
    if isinstance(value, Mapping) and "curriculum" in value:
        lessons = parse_curriculum(name, value, where)
    elif isinstance(value, Mapping):
        lessons = (Lesson(name=name, value=parse_sampler(value, where), completion_criteria=None, where=where),)
    else:
        lessons = (Lesson(name=name, value=value, completion_criteria=None, where=where),)
    return EnvironmentParameter(name=name, lessons=lessons)


def parse_environment_parameters(raw: Mapping[str, Any] | None,
                                 key: str = "environment_parameters") -> dict[str, EnvironmentParameter]:
    """Every entry of ``environment_parameters`` (names are strings; see ``config._parse_environment_parameters``)."""
    return {name: parse_parameter(name, value, f"{key}.{show_key(name)}") for name, value in (raw or {}).items()}


# --- the scene ---------------------------------------------------------------------------------------------


def make_scene(env, raw: Mapping[str, Any] | None, *, last_lesson: bool = False,
               trained_behavior: str | None = None):
    """A JAX scene ``env`` and its params with ``environment_parameters`` applied: constants set in the params,
    samplers and curricula drawn per robot by an ``envs.sampled.SampledParams`` wrapper (in the parameters' order;
    lesson 0 first, or only the last lesson with ``last_lesson``). ``trained_behavior`` (training): every completion
    criterion must name it. Any problem is a one-line ``envs.parameters.ParameterError``."""
    from envs import parameters as env_parameters
    from envs.sampled import SampledParams

    try:
        parsed = parse_environment_parameters(raw)
    except ConfigError as error:
        raise env_parameters.ParameterError(str(error)) from None
    constants = {name: p.lessons[0].value for name, p in parsed.items() if p.constant}
    params = env_parameters.apply_environment_parameters(env.default_params, constants)
    sampled = {}
    for name, parameter in parsed.items():
        if parameter.constant:
            continue
        lessons = parameter.lessons[-1:] if last_lesson else parameter.lessons
        sampled[name] = [_sampler_entry(lesson) for lesson in lessons]
    problem = None if trained_behavior is None else foreign_behavior(parsed, trained_behavior)
    if problem:
        raise env_parameters.ParameterError(problem)
    if not sampled:
        return env, params
    return SampledParams(env, env_parameters.sampled_parameters(params, sampled)), params


def foreign_behavior(parameters: Mapping[str, EnvironmentParameter], behavior: str) -> str | None:
    """The one-line error for a completion criterion that names another behavior than the one trained (the lesson
    would never end), or None."""
    for parameter in parameters.values():
        for lesson in parameter.lessons:
            criteria = lesson.completion_criteria
            if criteria is not None and criteria.behavior != behavior:
                return (f"{lesson.where.rsplit('.', 1)[0]}.completion_criteria.behavior: {criteria.behavior} is not "
                        f"the behavior being trained ({behavior}), so the lesson would never end.")
    return None


def _sampler_entry(lesson: Lesson) -> tuple[str, str, tuple]:
    value = lesson.value
    if isinstance(value, Sampler):
        return f"{lesson.where}.sampler_parameters", value.kind, value.args
    return lesson.where, "constant", (value,)


# --- lessons on the host -----------------------------------------------------------------------------------


class Curriculum:
    """ML-Agents' lesson bookkeeping for one run (see the module docstring); ``names`` orders the sampled
    parameters as the device's lesson vector does."""

    def __init__(self, parameters: Mapping[str, EnvironmentParameter], behavior: str, max_steps: int) -> None:
        self.parameters, self.behavior, self.max_steps = dict(parameters), behavior, max_steps
        self.lessons = dict.fromkeys(self.parameters, 0)
        self.smoothing = dict.fromkeys(self.parameters, 0.0)
        lengths = [lesson.completion_criteria.min_lesson_length for p in self.parameters.values()
                   for lesson in p.lessons
                   if lesson.completion_criteria is not None and lesson.completion_criteria.behavior == behavior]
        self.rewards: deque[float] = deque(maxlen=max([1, *lengths]))

    @property
    def names(self) -> list[str]:
        """The parameters drawn on the device (not plain constants), in the YAML's order."""
        return [name for name, p in self.parameters.items() if not p.constant]

    def vector(self) -> list[int]:
        """The lessons of :attr:`names`, as the device's lesson vector."""
        return [self.lessons[name] for name in self.names]

    def lesson_numbers(self) -> dict[str, int]:
        return dict(self.lessons)

    def add_returns(self, returns: Iterable[float]) -> None:
        """Episode returns in the order they ended (ML-Agents' reward buffer keeps the most recent)."""
        self.rewards.extend(float(r) for r in returns)

    def update(self, step: int) -> tuple[list[str], bool]:
        """ML-Agents' ``update_lessons`` at ``step`` agent steps: the parameters that moved to their next lesson, and
        whether one of them asks for a reset. The reward buffer is cleared when a lesson changed."""
        changed, must_reset = [], False
        progress = step / self.max_steps
        for name, parameter in self.parameters.items():
            index = self.lessons[name]
            criteria = parameter.lessons[index].completion_criteria
            if criteria is None or index + 1 >= len(parameter.lessons) or criteria.behavior != self.behavior:
                continue
            done, self.smoothing[name] = criteria.need_increment(progress, list(self.rewards), self.smoothing[name])
            if done:
                self.lessons[name] = index + 1
                changed.append(name)
                must_reset |= criteria.require_reset
                logger.info(self.describe(name))
        if changed:
            self.rewards.clear()
        return changed, must_reset

    def describe(self, name: str) -> str:
        """ML-Agents' ``log_current_lesson`` line."""
        lesson = self.parameters[name].lessons[self.lessons[name]]
        value = lesson.value if isinstance(lesson.value, Sampler) else Sampler("constant", (lesson.value,))
        return f"Parameter '{name}' is in lesson '{lesson.name}' and has value '{value}'."

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (JSON): lessons, smoothed rewards and the reward buffer."""
        return {"lessons": dict(self.lessons), "smoothing": dict(self.smoothing), "rewards": list(self.rewards)}

    def load_state_dict(self, state: Mapping[str, Any], where: str) -> None:
        """Restore :meth:`state_dict` (a checkpoint's); a lesson past the YAML's curriculum keeps its last lesson,
        with a warning. Parameters the checkpoint does not know start at lesson 0."""
        lessons, smoothing = state.get("lessons") or {}, state.get("smoothing") or {}
        for name, parameter in self.parameters.items():
            index = lessons.get(name, 0)
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                index = 0
            if index >= len(parameter.lessons):
                logger.warning(f"{where}: {name} was in lesson {index}, but its curriculum has "
                               f"{len(parameter.lessons)}; continuing in the last.")
                index = len(parameter.lessons) - 1
            self.lessons[name] = index
            value = smoothing.get(name, 0.0)
            self.smoothing[name] = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0
        rewards = state.get("rewards") or []
        self.rewards.clear()
        self.add_returns(r for r in rewards if isinstance(r, (int, float)) and not isinstance(r, bool))


def load_environment_parameters(path: str, flag: str = "--env-parameters") -> dict[str, Any]:
    """``environment_parameters`` from a YAML file: a trainer config (e.g. a run's ``configuration.yaml``) or a bare
    mapping of parameters, checked as the config loader checks them; a problem is a one-line ConfigError."""
    from rlrobot.config import RUN_KEYS, _parse_environment_parameters, load_yaml, read_yaml_text

    try:
        raw = load_yaml(read_yaml_text(path))
    except FileNotFoundError:
        raise ConfigError(f"{flag} {path}: no such file.") from None
    except ConfigError as error:
        raise ConfigError(f"{flag} {path}: {error}") from None
    if isinstance(raw, Mapping) and any(key in RUN_KEYS for key in raw):
        raw = raw.get("environment_parameters")
    try:
        return _parse_environment_parameters(raw) or {}
    except ConfigError as error:
        raise ConfigError(f"{flag} {path}: {error}") from None
