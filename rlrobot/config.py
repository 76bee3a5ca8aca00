"""ML-Agents trainer YAML -> frozen, validated settings.

Users bring the YAML they already wrote for ``mlagents-learn``, so this module
accepts the same layout and defaults and reuses ML-Agents' error wording where
it has one. Unlike ML-Agents it also checks *values* up front, so a bad config
fails at start-up with one line naming the file and the key, not mid-training
with a traceback.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

logger = logging.getLogger(__name__)

SCHEDULES = ("linear", "constant")
# ML-Agents' EncoderType / ConditioningType values: checked only so typos fail early.
VIS_ENCODE_TYPES = ("simple", "nature_cnn", "resnet", "match3", "fully_connected")
GOAL_CONDITIONING_TYPES = ("hyper", "none")
# ML-Agents' RewardSignalType values; rlrobot implements only the first.
MLAGENTS_REWARD_SIGNALS = ("extrinsic", "gail", "curiosity", "rnd")
# Top-level keys, in the order ML-Agents writes them to configuration.yaml.
RUN_KEYS = (
    "default_settings",
    "behaviors",
    "env_settings",
    "engine_settings",
    "environment_parameters",
    "checkpoint_settings",
    "torch_settings",
    "debug",
)


class ConfigError(Exception):
    """A user-facing configuration problem.

    The CLI prints it as ``[ERROR] <message>``, so the message is forced onto
    one line that names the file and the offending key/value.
    """

    def __init__(self, message: str) -> None:
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", message).strip())


# --- value checks shared by the dataclasses ---------------------------------
# Every message starts with the field name, so the loader can prefix the
# section path (e.g. ``behaviors.MobileRobot.hyperparameters.``) in front.


def _require(ok: bool, key: str, value: Any, requirement: str) -> None:
    """Raise a ConfigError naming ``key`` and ``value`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} ({value!r}) {requirement}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require_positive_ints(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _require(_is_int(value) and value > 0, name, value, "must be a positive integer")


def _require_choice(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    _require(value in choices, name, value, f"must be one of: {', '.join(choices)}")


def _check_trainer_type(value: Any, key: str = "trainer_type") -> None:
    """Only PPO is implemented; say so before its hyperparameters are read."""
    if value != "ppo":
        raise ConfigError(f"{key}: Invalid trainer type {value} was found (rlrobot supports only ppo).")


def _check_reward_signal(name: Any, key: str = "reward_signals") -> None:
    """Only the extrinsic signal is implemented; name the one that is not."""
    if name == "extrinsic":
        return
    if name in MLAGENTS_REWARD_SIGNALS:
        raise ConfigError(f"{key}.{name}: the {name} reward signal is not supported by rlrobot (only extrinsic is).")
    raise ConfigError(
        f"{key}.{name}: {name!r} is not a valid reward signal "
        f"(ML-Agents knows {', '.join(MLAGENTS_REWARD_SIGNALS)}; rlrobot supports only extrinsic)."
    )


# --- settings ----------------------------------------------------------------


@dataclass(frozen=True)
class PPOSettings:
    """The ``hyperparameters`` block of a PPO behavior, with ML-Agents' defaults."""

    batch_size: int = 1024
    buffer_size: int = 10240
    learning_rate: float = 3.0e-4
    beta: float = 5.0e-3
    epsilon: float = 0.2
    lambd: float = 0.95
    num_epoch: int = 3
    shared_critic: bool = False
    learning_rate_schedule: str = "linear"
    beta_schedule: str = "linear"
    epsilon_schedule: str = "linear"

    def __post_init__(self) -> None:
        _require_positive_ints(self, "batch_size", "buffer_size", "num_epoch")
        _require(
            self.batch_size <= self.buffer_size,
            "batch_size",
            self.batch_size,
            f"must not exceed buffer_size ({self.buffer_size})",
        )
        lr = self.learning_rate
        _require(_is_real(lr) and lr > 0, "learning_rate", lr, "must be > 0")
        _require(_is_real(self.beta) and self.beta >= 0, "beta", self.beta, "must be >= 0")
        _require(_is_real(self.epsilon) and self.epsilon > 0, "epsilon", self.epsilon, "must be > 0")
        _require(_is_real(self.lambd) and 0 <= self.lambd <= 1, "lambd", self.lambd, "must be in [0, 1]")
        for name in ("learning_rate_schedule", "beta_schedule", "epsilon_schedule"):
            _require_choice(self, name, SCHEDULES)


@dataclass(frozen=True)
class MemorySettings:
    """ML-Agents' ``network_settings.memory``: parsed only so ML-Agents' own
    checks run before rlrobot rejects recurrent networks."""

    sequence_length: int = 64
    memory_size: int = 128

    def __post_init__(self) -> None:
        _require_positive_ints(self, "sequence_length")
        size = self.memory_size
        _require(
            _is_int(size) and size > 0,
            "memory_size",
            size,
            "is invalid: When using a recurrent network, memory size must be greater than 0",
        )
        _require(
            size % 2 == 0,
            "memory_size",
            size,
            "is invalid: When using a recurrent network, memory size must be divisible by 2",
        )


@dataclass(frozen=True)
class NetworkSettings:
    """The ``network_settings`` block: MLP shape and observation normalisation."""

    normalize: bool = False
    hidden_units: int = 128
    num_layers: int = 2
    vis_encode_type: str = "simple"
    memory: MemorySettings | None = None
    goal_conditioning_type: str = "hyper"
    deterministic: bool = False

    def __post_init__(self) -> None:
        _require_positive_ints(self, "hidden_units", "num_layers")
        _require_choice(self, "vis_encode_type", VIS_ENCODE_TYPES)
        _require_choice(self, "goal_conditioning_type", GOAL_CONDITIONING_TYPES)


@dataclass(frozen=True)
class RewardSignalSettings:
    """One entry of ``reward_signals`` (only ``extrinsic`` is supported)."""

    gamma: float = 0.99
    strength: float = 1.0
    # Used by ML-Agents' curiosity/GAIL/RND networks only; kept so configuration.yaml and the Hyperparameters text
    # carry it as ML-Agents writes them.
    network_settings: NetworkSettings = field(default_factory=NetworkSettings)

    def __post_init__(self) -> None:
        _require(_is_real(self.gamma) and 0 <= self.gamma < 1, "gamma", self.gamma, "must be in [0, 1)")
        _require(_is_real(self.strength) and self.strength >= 0, "strength", self.strength, "must be >= 0")


def _default_reward_signals() -> dict[str, RewardSignalSettings]:
    return {"extrinsic": RewardSignalSettings()}


@dataclass(frozen=True)
class TrainerSettings:
    """One behavior's block under ``behaviors:`` (fields in ML-Agents' dump order)."""

    trainer_type: str = "ppo"
    hyperparameters: PPOSettings = field(default_factory=PPOSettings)
    checkpoint_interval: int = 500000
    network_settings: NetworkSettings = field(default_factory=NetworkSettings)
    reward_signals: dict[str, RewardSignalSettings] = field(default_factory=_default_reward_signals)
    init_path: str | None = None
    keep_checkpoints: int = 5
    even_checkpoints: bool = False
    max_steps: int = 500000
    time_horizon: int = 64
    summary_freq: int = 50000
    threaded: bool = False

    def __post_init__(self) -> None:
        _check_trainer_type(self.trainer_type)
        for name in self.reward_signals:
            _check_reward_signal(name)
        signals = list(self.reward_signals)
        _require("extrinsic" in signals, "reward_signals", signals, "must include extrinsic")
        _require_positive_ints(
            self, "checkpoint_interval", "keep_checkpoints", "max_steps", "time_horizon", "summary_freq"
        )
        self._reject_memory()

    def _reject_memory(self) -> None:
        """Run ML-Agents' sequence-length check first, then refuse: no recurrent nets here."""
        memory = self.network_settings.memory
        if memory is None:
            return
        _require(
            memory.sequence_length <= self.hyperparameters.batch_size,
            "network_settings.memory.sequence_length",
            memory.sequence_length,
            "is invalid: When using memory, sequence length must be less than or equal to batch size "
            f"({self.hyperparameters.batch_size})",
        )
        raise ConfigError(
            "network_settings.memory: recurrent networks are not supported by rlrobot; remove the memory section."
        )

    def as_dict(self) -> dict[str, Any]:
        """The fully defaulted block as ML-Agents' ``TrainerSettings.as_dict()`` lays it out (hyperparameters text)."""
        return _plain(self)

    @property
    def gamma(self) -> float:
        """Discount of the extrinsic reward, the only one GAE uses."""
        return self.reward_signals["extrinsic"].gamma

    @property
    def effective_checkpoint_interval(self) -> int:
        """Steps between checkpoints; ``even_checkpoints`` spreads ``keep_checkpoints`` over ``max_steps``."""
        if self.even_checkpoints:
            return max(1, int(self.max_steps / self.keep_checkpoints))
        return self.checkpoint_interval


@dataclass(frozen=True)
class EnvironmentSettings:
    """``env_settings``; on the JAX path ``num_envs`` is the number of parallel robots (None = auto)."""

    env_path: str | None = None
    env_args: tuple[str, ...] | None = None
    base_port: int = 5005
    num_envs: int | None = None
    num_areas: int = 1
    timeout_wait: int = 60
    seed: int = -1
    max_lifetime_restarts: int = 10
    restarts_rate_limit_n: int = 1
    restarts_rate_limit_period_s: int = 60

    def __post_init__(self) -> None:
        if self.num_envs is not None:
            _require_positive_ints(self, "num_envs")
        _require_positive_ints(self, "num_areas", "timeout_wait")
        for name in ("max_lifetime_restarts", "restarts_rate_limit_n"):
            value = getattr(self, name)
            _require(value >= -1, name, value, "must be -1 (no limit) or a count >= 0")
        period = self.restarts_rate_limit_period_s
        _require(period >= 0, "restarts_rate_limit_period_s", period, "must be >= 0")


@dataclass(frozen=True)
class EngineSettings:
    """``engine_settings``: what a Unity player is launched with."""

    width: int = 84
    height: int = 84
    quality_level: int = 5
    time_scale: float = 20.0
    target_frame_rate: int = -1
    capture_frame_rate: int = 60
    no_graphics: bool = False
    no_graphics_monitor: bool = False

    def __post_init__(self) -> None:
        _require_positive_ints(self, "width", "height")
        _require(self.quality_level >= 0, "quality_level", self.quality_level, "must be >= 0")
        _require(self.target_frame_rate >= -1, "target_frame_rate", self.target_frame_rate, "must be -1 or >= 0")
        _require(self.capture_frame_rate >= 0, "capture_frame_rate", self.capture_frame_rate, "must be >= 0")
        _require(_is_real(self.time_scale) and self.time_scale > 0, "time_scale", self.time_scale, "must be > 0")


@dataclass(frozen=True)
class CheckpointSettings:
    """``checkpoint_settings``: where the run lives and how it starts."""

    run_id: str = "ppo"
    initialize_from: str | None = None
    load_model: bool = False
    resume: bool = False
    force: bool = False
    train_model: bool = False
    inference: bool = False
    results_dir: str = "results"

    def __post_init__(self) -> None:
        # An empty run_id would make results_dir itself the run folder (and --force would reuse it).
        _require(bool(self.run_id), "run_id", self.run_id, "must not be empty")
        _require(bool(self.results_dir), "results_dir", self.results_dir, "must not be empty")


@dataclass(frozen=True)
class TorchSettings:
    """``torch_settings``; kept for ML-Agents compatibility (``device`` names the JAX device)."""

    device: str | None = None


@dataclass(frozen=True)
class RunSettings:
    """Everything one ``mlagents-learn``-style run needs, fully defaulted."""

    behaviors: dict[str, TrainerSettings]
    env_settings: EnvironmentSettings = field(default_factory=EnvironmentSettings)
    engine_settings: EngineSettings = field(default_factory=EngineSettings)
    checkpoint_settings: CheckpointSettings = field(default_factory=CheckpointSettings)
    torch_settings: TorchSettings = field(default_factory=TorchSettings)
    debug: bool = False
    default_settings: TrainerSettings | None = None
    environment_parameters: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.behaviors and self.default_settings is None:
            raise ConfigError(
                "No behaviors were specified: add a behaviors section with one entry per Behavior Name "
                "(e.g. behaviors: {MobileRobot: {trainer_type: ppo}}) or a default_settings section."
            )

    def behavior(self, name: str) -> TrainerSettings:
        """Settings for a behavior as the environment names it (a ``?team=N`` suffix is ignored)."""
        brain_name = name.partition("?")[0]
        if brain_name in self.behaviors:
            return self.behaviors[brain_name]
        if self.default_settings is not None:
            return self.default_settings
        raise ConfigError(
            f"The behavior name {brain_name} has not been specified in the trainer configuration. "
            f"Please add an entry in the configuration file for {brain_name}, or set default_settings."
        )

    def to_dict(self) -> dict[str, Any]:
        """The fully defaulted settings in ML-Agents' ``configuration.yaml`` layout and order."""
        return {key: _plain(getattr(self, key)) for key in RUN_KEYS}

    def dump_yaml(self, path: str) -> None:
        """Write ``to_dict()`` as YAML (``load_run_settings`` reads it back to equal settings)."""
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as stream:
            yaml.safe_dump(self.to_dict(), stream, sort_keys=False, default_flow_style=False)


# --- keys ML-Agents knows but rlrobot does not use -----------------------------

# Accepted when null (ML-Agents writes them so) and written back as null.
_NULL_ONLY_KEYS: dict[type, tuple[str, ...]] = {TrainerSettings: ("self_play", "behavioral_cloning")}
# Accepted and dropped: ``framework`` is deprecated in ML-Agents.
_IGNORED_KEYS: dict[type, tuple[str, ...]] = {TrainerSettings: ("framework",)}


def _plain(obj: Any) -> Any:
    """Dataclasses/tuples -> plain dicts/lists, for YAML and for merging over defaults."""
    if dataclasses.is_dataclass(obj):
        out = {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        out.update(dict.fromkeys(_NULL_ONLY_KEYS.get(type(obj), ())))
        return out
    if isinstance(obj, Mapping):
        return {key: _plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(value) for value in obj]
    return obj


# --- scalar conversion ----------------------------------------------------------


def _number(value: Any) -> int | float | None:
    """A YAML number, or a numeric string: YAML 1.1 reads ``3e-4`` (no dot) as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
    return None


def _to_int(value: Any, key: str) -> int:
    number = _number(value)
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if not _is_int(number):
        raise ConfigError(f"{key} ({value!r}) must be an integer.")
    return number


def _to_float(value: Any, key: str) -> float:
    number = _number(value)
    if number is None or not math.isfinite(number):
        raise ConfigError(f"{key} ({value!r}) must be a finite number.")
    return float(number)


def _to_bool(value: Any, key: str) -> bool:
    # ML-Agents would turn the string "false" into True; refuse instead.
    if not isinstance(value, bool):
        raise ConfigError(f"{key} ({value!r}) must be true or false.")
    return value


def _to_str(value: Any, key: str) -> str:
    if _is_int(value):  # e.g. ``run_id: 1``
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} ({value!r}) must be a string.")
    return value


_SCALARS: dict[type, Callable[[Any, str], Any]] = {int: _to_int, float: _to_float, bool: _to_bool, str: _to_str}


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Convert one YAML value to the field's annotated type."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} ({value!r}) must be a list of strings.")
        return tuple(_to_str(item, key) for item in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} ({value!r}) must be a mapping.")
        return _plain(value)
    return _SCALARS[hint](value, key)


# --- fields that need more than their type ---------------------------------------


def _parse_max_steps(value: Any, hint: Any, key: str) -> int:
    """ML-Agents parses max_steps as ``int(float(v))``, so ``5.0e6`` works."""
    number = _number(value)
    if number is None or not math.isfinite(number):
        raise ConfigError(f"{key} ({value!r}) must be a number.")
    return int(number)


def _parse_hyperparameters(value: Any, hint: Any, key: str) -> PPOSettings:
    """ML-Agents' rule: a given learning_rate_schedule also sets unset beta/epsilon schedules."""
    if isinstance(value, Mapping) and "learning_rate_schedule" in value:
        schedule = value["learning_rate_schedule"]
        value = {"beta_schedule": schedule, "epsilon_schedule": schedule, **value}
    return _build(PPOSettings, value, key)


def _parse_reward_signals(value: Any, hint: Any, key: str) -> dict[str, RewardSignalSettings]:
    """Name an unsupported signal before its (signal-specific) keys are read."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} ({value!r}) must map reward signal names to their settings.")
    for name in value:
        _check_reward_signal(name, key)
    return {name: _build(RewardSignalSettings, settings, f"{key}.{name}") for name, settings in value.items()}


_FIELD_PARSERS: dict[tuple[type, str], Callable[[Any, Any, str], Any]] = {
    (TrainerSettings, "max_steps"): _parse_max_steps,
    (TrainerSettings, "hyperparameters"): _parse_hyperparameters,
    (TrainerSettings, "reward_signals"): _parse_reward_signals,
}


# --- sections ---------------------------------------------------------------------


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _build(cls: type, raw: Any, where: str) -> Any:
    """Strictly build a settings dataclass from a YAML mapping (empty/null = all defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Unsupported config {raw} for {cls.__name__}.")
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key in _IGNORED_KEYS.get(cls, ()):
            continue
        if key in _NULL_ONLY_KEYS.get(cls, ()):
            if value is not None:
                raise ConfigError(f"{_join(where, key)}: {key} is not supported by rlrobot.")
            continue
        if key not in fields:
            raise ConfigError(f"The option {key} was specified in your YAML file for {cls.__name__}, but is invalid.")
        parse = _FIELD_PARSERS.get((cls, key), _convert)
        values[key] = parse(value, hints[key], _join(where, key))
    try:
        return cls(**values)
    except ConfigError as exc:  # raised by __post_init__ with a section-relative key
        raise ConfigError(_join(where, str(exc))) from exc


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            value = _deep_merge(merged[key], value)
        merged[key] = value
    return merged


def _parse_trainer(raw: Any, where: str, default: TrainerSettings | None) -> TrainerSettings:
    """A behavior block; as in ML-Agents it is laid over ``default_settings`` when given."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Unsupported config {raw} for TrainerSettings.")
    if default is not None:
        raw = _deep_merge(_plain(default), raw)
    if "hyperparameters" in raw and "trainer_type" not in raw:
        raise ConfigError(f"{where}: Hyperparameters were specified but no trainer_type was given.")
    _check_trainer_type(raw.get("trainer_type", "ppo"), _join(where, "trainer_type"))
    return _build(TrainerSettings, raw, where)


def _parse_behaviors(raw: Any, default: TrainerSettings | None) -> dict[str, TrainerSettings]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Unsupported config {raw} for behaviors.")
    return {str(name): _parse_trainer(block, f"behaviors.{name}", default) for name, block in raw.items()}


# --- CLI overrides ----------------------------------------------------------------

_SECTIONS: dict[str, type] = {
    "env_settings": EnvironmentSettings,
    "engine_settings": EngineSettings,
    "checkpoint_settings": CheckpointSettings,
    "torch_settings": TorchSettings,
}
# CLI field name -> the section owning it ("" = top level).
_OVERRIDE_SECTION: dict[str, str] = {
    **{f.name: section for section, cls in _SECTIONS.items() for f in dataclasses.fields(cls)},
    "debug": "",
}


def _apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Route CLI values into the raw YAML so they get the same conversion and checks."""
    merged = dict(raw)
    for key, value in overrides.items():
        section = _OVERRIDE_SECTION.get(key)
        if section is None:
            continue  # ``deterministic`` is applied after parsing
        if not section:
            merged[key] = value
            continue
        current = merged.get(section)
        current = {} if current is None else current
        if isinstance(current, Mapping):  # otherwise _build reports the bad section
            merged[section] = {**current, key: value}
    return merged


def _prioritize_resume_init(checkpoint: CheckpointSettings, cli_keys: set[str]) -> CheckpointSettings:
    """ML-Agents' rule: the CLI one of resume/initialize_from wins; if both came from YAML, resume wins."""
    if not (checkpoint.resume and checkpoint.initialize_from is not None):
        return checkpoint
    if "initialize_from" in cli_keys and "resume" not in cli_keys:
        logger.warning(
            "Both 'resume' and 'initialize_from=%s' are set; initializing from it and ignoring resume.",
            checkpoint.initialize_from,
        )
        return dataclasses.replace(checkpoint, resume=False)
    logger.warning(
        "Both 'resume' and 'initialize_from=%s' are set; resuming and ignoring initialization.",
        checkpoint.initialize_from,
    )
    return dataclasses.replace(checkpoint, initialize_from=None)


def _deterministic(trainer: TrainerSettings, flag: bool) -> TrainerSettings:
    network = dataclasses.replace(trainer.network_settings, deterministic=flag)
    return dataclasses.replace(trainer, network_settings=network)


def _apply_deterministic(run: RunSettings, flag: Any) -> RunSettings:
    """``--deterministic`` sets network_settings.deterministic on every behavior, as in ML-Agents."""
    flag = _to_bool(flag, "deterministic")
    default = run.default_settings
    return dataclasses.replace(
        run,
        behaviors={name: _deterministic(trainer, flag) for name, trainer in run.behaviors.items()},
        default_settings=None if default is None else _deterministic(default, flag),
    )


# --- loading ------------------------------------------------------------------------


def _yaml_error_message(exc: yaml.YAMLError) -> str:
    message = (
        "Error parsing yaml file. Please check for formatting errors. "
        "A tool such as http://www.yamllint.com/ can be helpful with this."
    )
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        problem = getattr(exc, "problem", None) or "syntax error"
        message += f" (line {mark.line + 1}, column {mark.column + 1}: {problem})"
    return message


def _read_yaml(path: str) -> Mapping[str, Any]:
    """The file's top-level mapping (an empty file is an empty mapping)."""
    try:
        with open(path, encoding="utf-8-sig") as stream:  # universal newlines: CRLF files work
            text = stream.read()
    except FileNotFoundError:
        raise ConfigError(f"Config file could not be found at {os.path.abspath(path)}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file could not be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error_message(exc)) from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"Unsupported config {data} for RunSettings.")
    return data


def _parse_run(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> RunSettings:
    for key in raw:
        if key not in RUN_KEYS:
            raise ConfigError(f"The option {key} was specified in your YAML file, but is invalid.")
    raw = _apply_overrides(raw, overrides)
    default_raw = raw.get("default_settings")
    default = None if default_raw is None else _parse_trainer(default_raw, "default_settings", None)
    sections = {name: _build(cls, raw.get(name), name) for name, cls in _SECTIONS.items()}
    sections["checkpoint_settings"] = _prioritize_resume_init(sections["checkpoint_settings"], set(overrides))
    run = RunSettings(
        behaviors=_parse_behaviors(raw.get("behaviors"), default),
        debug=_to_bool(raw.get("debug", False), "debug"),
        default_settings=default,
        environment_parameters=_convert(
            raw.get("environment_parameters"), dict[str, Any] | None, "environment_parameters"
        ),
        **sections,
    )
    if "deterministic" in overrides:
        run = _apply_deterministic(run, overrides["deterministic"])
    return run


def load_run_settings(path: str, overrides: Mapping[str, Any] | None = None) -> RunSettings:
    """Load and validate a trainer YAML, then apply the CLI values the user actually typed.

    ``overrides`` is keyed by settings field name (``run_id``, ``num_envs``,
    ``time_scale``, ``debug``, ``deterministic``, ...); each value lands in the
    section that owns that field. Every problem with the file or a value is a
    one-line ConfigError that starts with ``path``.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(_OVERRIDE_SECTION) - {"deterministic"})
    if unknown:
        raise ValueError(f"Unknown override(s): {', '.join(unknown)}")
    try:
        return _parse_run(_read_yaml(path), overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
