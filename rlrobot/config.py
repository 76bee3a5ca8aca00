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
import reprlib
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
# rlrobot's own top-level sections (ML-Agents has no such key): written to configuration.yaml only when not default,
# so that a default run's configuration.yaml stays one mlagents-learn reads.
RLROBOT_KEYS = ("replay_settings",)

# --- limits on what is read ------------------------------------------------------
# Counts, sizes and shapes reach the device as int32 (XLA shapes, loop counters, the step counter's increments).
INT32_MAX = 2**31 - 1
# max_steps and seeds stay on the host as Python ints, but are written as (and compared with) 64-bit integers.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
PORT_MAX = 65535
# A trainer YAML is a few KiB (configuration.yaml ~3 KiB); 1 MiB leaves room for large sweeps and curricula while
# keeping the pure-Python parser under a couple of seconds.
MAX_YAML_BYTES = 1 << 20
# Nesting levels of lists/mappings, counted through aliases (ML-Agents' deepest key is 5 levels down); also keeps
# every recursive walk over the data (merging, copying, error messages) far from Python's recursion limit.
MAX_YAML_DEPTH = 32
# Values (scalars, lists, mappings) after alias expansion: stops "billion laughs" (a few lines that expand to 10**9
# values). A trainer YAML has ~100, a long curriculum a few hundred; 20k keeps the refusal under a second.
MAX_YAML_NODES = 20_000
# Longest value shown in an error message, and longest message (the CLI prints one line).
MAX_SHOWN = 60
MAX_MESSAGE = 480

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = MAX_SHOWN
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 6, 6, 4


def _digits(value: int) -> int:
    """Decimal digits of a (huge) int, without ``str()`` (limited to 4300 digits)."""
    size = abs(value)
    digits = math.floor(math.log10(size)) + 1  # a float estimate: correct it by one either way
    if size < 10 ** (digits - 1):
        digits -= 1
    elif size >= 10**digits:
        digits += 1
    return digits


def show(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to about ``limit`` characters, on one line; safe for huge, deep or recursive values."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        digits = _digits(value)
        return f"{'-' if value < 0 else ''}<an integer of ~{digits} digits>"
    try:
        text = _REPR.repr(value)
    except Exception:  # an object whose repr fails: name its type only
        text = f"<{type(value).__name__}>"
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_key(key: Any) -> str:
    """A mapping key as it appears in a dotted path (``str``, cut like :func:`show`)."""
    text = key if isinstance(key, str) else show(key)
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


class ConfigError(Exception):
    """A user-facing configuration problem.

    The CLI prints it as ``[ERROR] <message>``, so the message is forced onto
    one line that names the file and the offending key/value (and cut to
    ``MAX_MESSAGE`` characters should a path or name be huge).
    """

    def __init__(self, message: str) -> None:
        message = re.sub(r"\s*[\r\n]+\s*", " ", message).strip()
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        super().__init__(message)


# --- value checks shared by the dataclasses ---------------------------------
# Every message starts with the field name, so the loader can prefix the
# section path (e.g. ``behaviors.MobileRobot.hyperparameters.``) in front.


def _require(ok: bool, key: str, value: Any, requirement: str) -> None:
    """Raise a ConfigError naming ``key`` and ``value`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} ({show(value)}) {requirement}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite int or float (an int too large for a float is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _bound_text(limit: int) -> str:
    names = {INT32_MAX: "2**31-1", INT64_MAX: "2**63-1"}
    return f"{limit} ({names[limit]})" if limit in names else str(limit)


def _require_int_range(obj: Any, name: str, low: int, high: int, requirement: str) -> None:
    """An integer field in ``[low, high]``: ``requirement`` says what is wanted when below."""
    value = getattr(obj, name)
    _require(_is_int(value), name, value, "must be an integer")
    _require(value >= low, name, value, requirement)
    why = ": it reaches the device as a 32-bit integer" if high == INT32_MAX else ""
    _require(value <= high, name, value, f"must be at most {_bound_text(high)}{why}")


def _require_positive_ints(obj: Any, *names: str, maximum: int = INT32_MAX) -> None:
    for name in names:
        _require_int_range(obj, name, 1, maximum, "must be a positive integer")


def _require_path_text(obj: Any, *names: str) -> None:
    """Strings that become file names or process arguments: no NUL byte, encodable for the file system."""
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        _require(isinstance(value, str), name, value, "must be a string")
        _require("\0" not in value, name, value, "must not contain a NUL character")
        try:
            os.fsencode(value)
        except UnicodeError:
            _require(False, name, value, "must be valid text (it has an unpaired surrogate)")


# The longest file or folder name most file systems take (NAME_MAX, in bytes).
NAME_MAX = 255


def check_run_id(key: str, run_id: Any) -> None:
    """A run id is a folder under ``results_dir``: relative, and without empty, ``.`` or ``..`` components (nested
    ids such as ``exp/1`` are allowed; rlrobot itself names ``<run-id>/seed-<k>``)."""
    _require(isinstance(run_id, str) and bool(run_id), key, run_id, "must not be empty")
    _require("\0" not in run_id, key, run_id, "must not contain a NUL character")
    _require(not (os.path.isabs(run_id) or run_id.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", run_id)),
             key, run_id, "must be a relative folder name inside results_dir, not an absolute path")
    for part in re.split(r"[/\\]", run_id):
        _require(part not in ("", ".", ".."), key, run_id,
                 "must stay inside results_dir: no empty, '.' or '..' path components")
        try:
            size = len(os.fsencode(part))
        except UnicodeError:
            _require(False, key, run_id, "must be valid text (it has an unpaired surrogate)")
        _require(size <= NAME_MAX, key, run_id, f"has a folder name longer than {NAME_MAX} bytes")


def _require_choice(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    _require(value in choices, name, value, f"must be one of: {', '.join(choices)}")


def _check_trainer_type(value: Any, key: str = "trainer_type") -> None:
    """Only PPO is implemented; say so before its hyperparameters are read."""
    if value != "ppo":
        raise ConfigError(f"{key}: Invalid trainer type {show_key(value)} was found (rlrobot supports only ppo).")


def _check_reward_signal(name: Any, key: str = "reward_signals") -> None:
    """Only the extrinsic signal is implemented; name the one that is not."""
    if name == "extrinsic":
        return
    if isinstance(name, str) and name in MLAGENTS_REWARD_SIGNALS:
        raise ConfigError(f"{key}.{name}: the {name} reward signal is not supported by rlrobot (only extrinsic is).")
    raise ConfigError(
        f"{key}.{show_key(name)}: {show(name)} is not a valid reward signal "
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
        _require_int_range(
            self, "memory_size", 1, INT32_MAX,
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
        _require_positive_ints(self, "checkpoint_interval", "keep_checkpoints", "time_horizon", "summary_freq")
        # Counted on the host (Python ints), so ML-Agents' whole range is accepted: below 2**63.
        _require_positive_ints(self, "max_steps", maximum=INT64_MAX)
        _require_path_text(self, "init_path")
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


# The JAX scenes ``env_settings.env_path`` / ``--env`` can name instead of a build (``envs.registered()``, kept here
# so that reading a config loads no JAX).
BUILTIN_SCENES = ("MobileRobot", "MobileRobotObstacles", "MobileRobotTest2020", "MobileRobotTest2021")


def is_builtin_scene(env_path: str | None) -> bool:
    """Whether ``env_path`` names a built-in scene (a bare scene name) rather than a Unity build (a path)."""
    return env_path in BUILTIN_SCENES


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
        _require_int_range(self, "base_port", 0, PORT_MAX, "must be a port number >= 0")
        # -1 draws one; any other value seeds the run as is (on the host, as a 64-bit integer).
        _require_int_range(self, "seed", INT64_MIN, INT64_MAX, f"must be at least {INT64_MIN} (-2**63)")
        for name in ("max_lifetime_restarts", "restarts_rate_limit_n"):
            _require_int_range(self, name, -1, INT32_MAX, "must be -1 (no limit) or a count >= 0")
        _require_int_range(self, "restarts_rate_limit_period_s", 0, INT32_MAX, "must be >= 0")
        _require_path_text(self, "env_path")
        for arg in self.env_args or ():
            _require(isinstance(arg, str) and "\0" not in arg, "env_args", arg, "must be strings without NUL bytes")


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
        _require_int_range(self, "quality_level", 0, INT32_MAX, "must be >= 0")
        _require_int_range(self, "target_frame_rate", -1, INT32_MAX, "must be -1 or >= 0")
        _require_int_range(self, "capture_frame_rate", 0, INT32_MAX, "must be >= 0")
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
        # The run folder is results_dir/run_id and --force deletes in it: an empty, '.', '..' or absolute id would
        # make it results_dir itself or a folder outside it (``--run-id / --force`` would write /run_logs).
        check_run_id("run_id", self.run_id)
        _require(bool(self.results_dir), "results_dir", self.results_dir, "must not be empty")
        _require_path_text(self, "results_dir", "initialize_from")


@dataclass(frozen=True)
class TorchSettings:
    """``torch_settings``; kept for ML-Agents compatibility (``device`` names the JAX device)."""

    device: str | None = None


@dataclass(frozen=True)
class ReplaySettings:
    """``replay_settings`` (rlrobot only): the GIF of a few episodes written at every checkpoint of a JAX run."""

    enabled: bool = True
    episodes: int = 4      # robots replayed, in arenas 0, 1, ...
    steps: int = 200       # decisions drawn per episode at most

    def __post_init__(self) -> None:
        _require_int_range(self, "episodes", 1, 16, "must be a positive integer")
        _require_int_range(self, "steps", 1, 1000, "must be a positive integer")


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
    replay_settings: ReplaySettings = field(default_factory=ReplaySettings)

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
        data = {key: _plain(getattr(self, key)) for key in RUN_KEYS}
        data.update({key: _plain(value) for key in RLROBOT_KEYS if (value := getattr(self, key)) != type(value)()})
        return data

    def to_yaml(self) -> str:
        """``to_dict()`` as ``configuration.yaml`` text (``load_run_settings`` reads it back to equal settings)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def dump_yaml(self, path: str) -> None:
        """Write ``to_yaml()`` to ``path``."""
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(self.to_yaml())


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


# Longest numeric string parsed (a YAML 1.1 float such as ``3e-4`` arrives as a string); longer ones are not numbers.
_MAX_NUMBER_TEXT = 100


def _number(value: Any) -> int | float | None:
    """A YAML number, or a numeric string: YAML 1.1 reads ``3e-4`` (no dot) as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and len(value) <= _MAX_NUMBER_TEXT:
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
        raise ConfigError(f"{key} ({show(value)}) must be an integer.")
    return number


def _to_float(value: Any, key: str) -> float:
    number = _number(value)
    if not _is_real(number):
        raise ConfigError(f"{key} ({show(value)}) must be a finite number.")
    return float(number)


def _to_bool(value: Any, key: str) -> bool:
    # ML-Agents would turn the string "false" into True; refuse instead.
    if not isinstance(value, bool):
        raise ConfigError(f"{key} ({show(value)}) must be true or false.")
    return value


def _to_str(value: Any, key: str) -> str:
    if _is_int(value) and value.bit_length() <= 128:  # e.g. ``run_id: 1``
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} ({show(value)}) must be a string.")
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
            raise ConfigError(f"{key} ({show(value)}) must be a list of strings.")
        return tuple(_to_str(item, key) for item in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} ({show(value)}) must be a mapping.")
        return _plain(value)
    return _SCALARS[hint](value, key)


# --- fields that need more than their type ---------------------------------------


def _parse_max_steps(value: Any, hint: Any, key: str) -> int:
    """ML-Agents parses max_steps as ``int(float(v))``, so ``5.0e6`` works."""
    number = _number(value)
    if _is_int(number):
        return number
    if not _is_real(number):
        raise ConfigError(f"{key} ({show(value)}) must be a number.")
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
        raise ConfigError(f"{key} ({show(value)}) must map reward signal names to their settings.")
    for name in value:
        _check_reward_signal(name, key)
    return {name: _build(RewardSignalSettings, settings, f"{key}.{name}") for name, settings in value.items()}


_FIELD_PARSERS: dict[tuple[type, str], Callable[[Any, Any, str], Any]] = {
    (TrainerSettings, "max_steps"): _parse_max_steps,
    (TrainerSettings, "hyperparameters"): _parse_hyperparameters,
    (TrainerSettings, "reward_signals"): _parse_reward_signals,
}


# --- sections ---------------------------------------------------------------------


def _join(where: str, key: Any) -> str:
    return f"{where}.{show_key(key)}" if where else show_key(key)


def _build(cls: type, raw: Any, where: str) -> Any:
    """Strictly build a settings dataclass from a YAML mapping (empty/null = all defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Unsupported config {show_key(raw)} for {cls.__name__}.")
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key in _IGNORED_KEYS.get(cls, ()):
            continue
        if key in _NULL_ONLY_KEYS.get(cls, ()):
            if value is not None:
                raise ConfigError(f"{_join(where, key)}: {show_key(key)} is not supported by rlrobot.")
            continue
        if key not in fields:
            raise ConfigError(
                f"The option {show_key(key)} was specified in your YAML file for {cls.__name__}, but is invalid."
            )
        parse = _FIELD_PARSERS.get((cls, key), _convert)
        values[key] = parse(value, hints[key], _join(where, key))
    try:
        return cls(**values)
    except ConfigError as exc:  # raised by __post_init__ with a section-relative key
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from exc


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
        raise ConfigError(f"Unsupported config {show_key(raw)} for TrainerSettings.")
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
        raise ConfigError(f"Unsupported config {show_key(raw)} for behaviors.")
    return {str(name): _parse_trainer(block, f"behaviors.{show_key(name)}", default) for name, block in raw.items()}


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


class _LimitExceeded(yaml.YAMLError):
    """A bounded-loader limit, reported like a YAML syntax error (with the line and column)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses hostile structure before it is built.

    While composing, nesting deeper than ``MAX_YAML_DEPTH`` and more than ``MAX_YAML_NODES`` nodes stop the parse
    (the composer recurses once per level, so depth never reaches Python's limit). Before constructing, the node
    graph is walked iteratively: an alias inside the node it names (a recursive structure) is refused, and so is a
    graph whose alias expansion exceeds the node or depth limits (billion laughs).
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            self._nodes += 1
            if self._nodes > MAX_YAML_NODES:
                raise _LimitExceeded(f"more than {MAX_YAML_NODES} values", mark)
            if self._depth >= MAX_YAML_DEPTH:
                raise _LimitExceeded(f"lists or mappings nested deeper than {MAX_YAML_DEPTH} levels", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Any) -> Any:
        check_node_graph(node)
        return super().construct_document(node)


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def check_node_graph(root: Any) -> None:
    """Refuse a composed YAML graph that is recursive, or whose alias expansion is too large or too deep.

    Iterative post-order walk; each node's expanded size and depth are computed once (aliases share nodes).
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = min(1 + sum(size[id(kid)] for kid in kids), MAX_YAML_NODES + 1)
            depth[key] = 1 + max((depth[id(kid)] for kid in kids), default=0)
            if size[key] > MAX_YAML_NODES:
                raise _LimitExceeded(f"more than {MAX_YAML_NODES} values once aliases are expanded", node.start_mark)
            if depth[key] > MAX_YAML_DEPTH:
                raise _LimitExceeded(f"lists or mappings nested deeper than {MAX_YAML_DEPTH} levels once aliases "
                                     f"are expanded", node.start_mark)
            continue
        if key in size:
            continue
        on_path.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in on_path:
                raise _LimitExceeded("an alias inside the value it names (a recursive structure)", kid.start_mark)
            if id(kid) not in size:
                stack.append((kid, False))


def _yaml_error_message(exc: BaseException) -> str:
    if isinstance(exc, _LimitExceeded):
        mark = exc.problem_mark
        return f"The YAML has {exc.problem} (line {mark.line + 1}, column {mark.column + 1}); rlrobot refuses it."
    message = (
        "Error parsing yaml file. Please check for formatting errors. "
        "A tool such as http://www.yamllint.com/ can be helpful with this."
    )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: no mark, a position
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        problem = f"unacceptable character #x{character:04x} at offset {exc.position}: {exc.reason}"
    elif not isinstance(exc, yaml.YAMLError):  # a constructor's ValueError, e.g. a date like 2001-13-45
        problem = f"{type(exc).__name__}: {show_key(str(exc))}"
    if mark is not None:
        message += f" (line {mark.line + 1}, column {mark.column + 1}: {problem or 'syntax error'})"
    elif problem:
        message += f" ({problem})"
    return message


def read_yaml_text(path: str) -> str:
    """A YAML file's text: at most ``MAX_YAML_BYTES``, UTF-8 (a BOM is dropped), and not binary.

    ``FileNotFoundError`` is raised as is (callers word it); every other problem is a ConfigError without the path,
    for the caller to prefix.
    """
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"the file could not be read ({exc.strerror or type(exc).__name__}).") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"the file is larger than {MAX_YAML_BYTES // 1024} KiB; a trainer YAML is a few KiB.")
    if b"\0" in data:
        raise ConfigError("the file is binary, not YAML text (it contains NUL bytes).")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the file is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}).") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines: CRLF files work


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with :class:`BoundedSafeLoader`'s limits; any problem is a one-line ConfigError."""
    loader = None
    try:
        loader = BoundedSafeLoader(text)  # the reader checks the characters here
        return loader.get_single_data()
    except (yaml.YAMLError, ValueError, TypeError, KeyError, OverflowError, RecursionError, MemoryError) as exc:
        raise ConfigError(_yaml_error_message(exc)) from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_yaml(path: str) -> Mapping[str, Any]:
    """The file's top-level mapping (an empty file is an empty mapping)."""
    try:
        text = read_yaml_text(path)
    except FileNotFoundError:
        raise ConfigError(f"Config file could not be found at {os.path.abspath(path)}.") from None
    except ConfigError as exc:
        raise ConfigError(f"Config file could not be read: {exc}") from None
    data = load_yaml(text)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"Unsupported config {show_key(data)} for RunSettings.")
    return data


def _parse_environment_parameters(value: Any, key: str = "environment_parameters") -> dict[str, Any] | None:
    """ML-Agents' ``environment_parameters``: a name -> constant or sampler/curriculum mapping (kept as given).

    Names are strings (the side channel's keys); constants are numbers (an int a float can hold), true/false or
    strings (a JAX scene's ``action_mode``); samplers and curricula follow ML-Agents' schema, checked here
    (``rlrobot.curriculum``). Each scene field's type and range is checked where the scene is built
    (``envs.parameters``); a Unity build gets them through its side channel (``rlrobot.unity_parameters``).
    """
    from rlrobot.curriculum import parse_parameter

    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} ({show(value)}) must be a mapping of parameter names to values.")
    for name, item in value.items():
        where = _join(key, name)
        if not isinstance(name, str):
            raise ConfigError(f"{where}: parameter names must be strings, not {type(name).__name__}.")
        if isinstance(item, Mapping):
            parse_parameter(name, item, where)
            continue
        if isinstance(item, (bool, str, float)) or _is_real(item):
            continue  # a float may be NaN or inf here: each scene field says what it takes (envs.parameters)
        if _is_int(item):
            raise ConfigError(f"{where} ({show(item)}) is too large for a number.")
        raise ConfigError(f"{where} ({show(item)}) must be a number, true/false, a string, or a sampler or "
                          f"curriculum mapping.")
    return _plain(value)


def check_results_folder(checkpoint: CheckpointSettings) -> None:
    """``results_dir`` and every folder of ``<results_dir>/<run_id>`` that exists must be a folder (not a file)."""
    path = checkpoint.results_dir
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"checkpoint_settings.results_dir ({show(path)}): {show_key(path)} exists and is not a "
                          f"folder.")
    for part in re.split(r"[/\\]", checkpoint.run_id):
        path = os.path.join(path, part)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"checkpoint_settings.run_id ({show(checkpoint.run_id)}): {show_key(path)} exists and "
                              f"is not a folder.")


def _parse_run(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> RunSettings:
    for key in raw:
        if key not in RUN_KEYS + RLROBOT_KEYS:
            raise ConfigError(f"The option {show_key(key)} was specified in your YAML file, but is invalid.")
    raw = _apply_overrides(raw, overrides)
    default_raw = raw.get("default_settings")
    default = None if default_raw is None else _parse_trainer(default_raw, "default_settings", None)
    sections = {name: _build(cls, raw.get(name), name) for name, cls in _SECTIONS.items()}
    sections["checkpoint_settings"] = _prioritize_resume_init(sections["checkpoint_settings"], set(overrides))
    run = RunSettings(
        behaviors=_parse_behaviors(raw.get("behaviors"), default),
        debug=_to_bool(raw.get("debug", False), "debug"),
        default_settings=default,
        environment_parameters=_parse_environment_parameters(raw.get("environment_parameters")),
        replay_settings=_build(ReplaySettings, raw.get("replay_settings"), "replay_settings"),
        **sections,
    )
    check_results_folder(run.checkpoint_settings)
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
