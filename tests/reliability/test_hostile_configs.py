"""Nothing crashes on a hostile config: fuzzed trainer YAMLs and sweep files load, or fail with one short line.

A seeded generator mutates the shipped configs (wrong types, huge/negative/NaN/inf numbers, numeric strings, deep
nesting, aliases, billion laughs, unknown keys, binary garbage, empty files, long strings, unicode, truncation) and
each case runs under a time limit: it must load, or raise a ConfigError whose message is one line under 500
characters starting with the file path; never another exception, a hang or a memory blow-up. What loads must also
pass or be refused by the resource limits and the scene's parameter table, and survive a configuration.yaml round
trip. The environment_parameters typing (``envs.parameters``) is unit-tested at the end.
"""
from __future__ import annotations

import copy
import math
import random
import signal
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

import envs
from envs.mobile_robot import MobileRobotParams
from envs.mobile_robot_obstacles import MobileRobotObstaclesParams
from envs.parameters import FIELDS, ParameterError, apply_environment_parameters, check_parameter
from rlrobot.config import ConfigError, RunSettings, load_run_settings
from rlrobot.curriculum import make_scene
from rlrobot.limits import ResourceError, check_training_size
from rlrobot.seeds import load_sweep
from rlrobot.train import make_train_spec

ROOT = Path(__file__).resolve().parents[2]
SEED = 20240611
CONFIG_CASES = 320
SWEEP_CASES = 60
CASE_SECONDS = 2.0
GIB = 1 << 30


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` in the code under test swallows it."""


@contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- the generator -------------------------------------------------------------------------------

HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, -(2**31), 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**30,
    10**400, 1e308, -1e308, math.nan, math.inf, -math.inf, 0.5, -0.0, 5e-324, "", "abc", "12", "1e3", "1e30", "-5",
    "nan", ".inf", "true", "false", "no", "x" * 100_000, "é中文😀", "\u202e\u0000", "a\0b", "../../x", "/", ".",
    [], [1, 2], [[[]]], {}, {"a": 1}, {"sampler_type": "uniform"}, b"\x00\xff",
]


def _hostile(rng: random.Random, extra: list[Any] | None = None) -> Any:
    """A fresh copy of a hostile value (the lists and mappings are mutated later)."""
    return copy.deepcopy(rng.choice(HOSTILE_VALUES + (extra or [])))


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value (and to each mapping, to add keys to) in a plain YAML tree."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, prefix + (index,))
    return found


def _set(tree: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return tree


def _deep(rng: random.Random) -> str:
    depth = rng.choice([5, 31, 32, 33, 100, 3000])
    kind = rng.choice(["list", "map", "mixed"])
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "map":
        return "{a: " * depth + "1" + "}" * depth
    return "".join(rng.choice(["[", "{k: "]) for _ in range(depth)) + "1"


def _laughs(rng: random.Random, width: int, levels: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _structural(rng: random.Random, text: str) -> str:
    """A text-level mutation of a valid YAML document."""
    kind = rng.choice(["deep value", "deep block", "alias", "recursive alias", "laughs", "laughs in section",
                       "truncate", "flip bytes", "tabs", "duplicate", "unicode key", "long key", "anchor reuse",
                       "merge", "tags", "documents"])
    lines = text.splitlines()
    if kind == "deep value":
        index = rng.randrange(len(lines))
        head = lines[index].split(":")[0]
        lines[index] = f"{head}: {_deep(rng)}" if ":" in lines[index] else lines[index]
    elif kind == "deep block":
        depth = rng.choice([20, 40, 500])
        lines += ["environment_parameters:"] + [" " * (2 * (i + 1)) + f"k{i}:" for i in range(depth)]
    elif kind == "alias":
        lines = ["x: &big {batch_size: 64, buffer_size: 128}"] + lines
        lines = [line.replace("hyperparameters:", "hyperparameters: *big #") for line in lines]
    elif kind == "recursive alias":
        lines = [line.replace("network_settings:", "network_settings: &n {inner: *n} #") for line in lines]
        lines.append("extra: &e [*e]" if rng.random() < 0.5 else "extra: &e {self: *e}")
    elif kind == "laughs":
        return _laughs(rng, rng.choice([2, 9, 10]), rng.choice([3, 6, 9])) + text
    elif kind == "laughs in section":
        return text + "environment_parameters:\n  " + _laughs(rng, 10, 7).replace("\n", "\n  ")
    elif kind == "truncate":
        return text[: rng.randrange(len(text))]
    elif kind == "flip bytes":
        chars = list(text)
        for _ in range(rng.randint(1, 20)):
            chars[rng.randrange(len(chars))] = chr(rng.choice([0, 9, 10, 13, 34, 39, 58, 91, 93, 123, 125, 0xFEFF,
                                                               0x85, 0x2028, 0xD800 - 1, rng.randrange(32, 0x2FFFF)]))
        return "".join(chars)
    elif kind == "tabs":
        return text.replace("  ", "\t")
    elif kind == "duplicate":
        lines += lines[: rng.randrange(1, len(lines))]
    elif kind == "unicode key":
        lines.append(rng.choice(["配置: 1", "\u202e: x", "😀:\n  😀: 😀", "'\\ud800': 1", "\"\\0\": 2"]))
    elif kind == "long key":
        lines.append("k" * rng.choice([1000, 1025, 50_000]) + ": 1")
    elif kind == "anchor reuse":
        lines.append("a: &x 1\nb: &x 2\nc: *x\nd: *undefined")
    elif kind == "merge":
        lines.append("m1: &m {a: 1}\nm2: {<<: *m, b: 2}\nm3: {<<: [*m, *m]}\nm4: {<<: 5}")
    elif kind == "tags":
        lines.append(rng.choice(["t: !!python/object/apply:os.system [ls]", "t: !!binary '!!!'", "t: !!set {a, b}",
                                 "t: !!omap [a: 1]", "t: !!timestamp 2001-99-99", "t: !!float x", "t: !custom 1",
                                 "t: !!int 0x", "t: 2001-02-30"]))
    elif kind == "documents":
        return text + "\n---\n" + text
    return "\n".join(lines) + "\n"


def _structured(rng: random.Random, tree: dict) -> dict:
    """A mutation of the parsed tree: a hostile value at a random path, or an unknown key."""
    for _ in range(rng.randint(1, 3)):
        paths = _paths(tree)
        path = rng.choice(paths)
        if rng.random() < 0.2:  # a new (unknown or ML-Agents-known) key somewhere
            parent = tree
            for key in path:
                parent = parent[key] if isinstance(parent, (dict, list)) else parent
            if isinstance(parent, dict):
                parent[rng.choice(["bogus", "framework", "self_play", "memory", "environment_parameters",
                                   "max_episode_steps", "run_id", 1, None, 2.5, "é"])] = _hostile(rng)
            continue
        tree = _set(tree, path, _hostile(rng))
    return tree


def _environment_parameters(rng: random.Random) -> dict:
    names = [*FIELDS, "gravity", "walls", "car_spawns"]
    return {rng.choice(names): _sampled(rng) if rng.random() < 0.3 else _hostile(rng, [500, 0.25, "wheels", "unity",
                                                                                         1.0])
            for _ in range(rng.randint(1, 4))}


def _sampled(rng: random.Random) -> dict:
    """A sampler or a curriculum, with a hostile value somewhere in it."""
    def number() -> Any:
        return _hostile(rng, [0.5, 1, 0.0]) if rng.random() < 0.3 else rng.choice([0.0, 0.5, 1.0, 3.0])

    def sampler() -> dict:
        kind = rng.choice(["uniform", "gaussian", "multirangeuniform", "constant", "poisson"])
        arguments = {"uniform": ["min_value", "max_value"], "gaussian": ["mean", "st_dev"], "constant": ["value"],
                     "multirangeuniform": ["intervals"], "poisson": ["lam"]}[kind]
        return {"sampler_type": kind, "sampler_parameters": {
            name: [[number(), number()]] if name == "intervals" else number() for name in arguments}}

    if rng.random() < 0.5:
        return sampler()
    lessons = [{"name": f"L{i}", "value": sampler() if rng.random() < 0.5 else number(),
                "completion_criteria": {"behavior": rng.choice(["MobileRobot", "Other"]),
                                        "measure": rng.choice(["reward", "progress", "time"]),
                                        "threshold": number(), "min_lesson_length": rng.choice([0, 10, -1])}}
               for i in range(rng.randint(1, 3))]
    lessons[-1].pop("completion_criteria")
    return {"curriculum": lessons}


OVERRIDE_VALUES: dict[str, list[Any]] = {
    "run_id": ["ok", "exp/1", "../x", "/", ".", "", "a//b", "x" * 300, "a\0b", "é/😀"],
    "num_envs": [1, 64, 2**31 - 1, 2**31, 0, -3],
    "num_areas": [1, 4, 2**31],
    "seed": [-1, 0, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1],
    "results_dir": ["results", "", "r\0", "."],
    "time_scale": [1.0, math.nan, math.inf, 0.0, 1e300],
    "base_port": [5005, 0, 65535, 65536, -1],
    "env_args": [["--a"], ["a\0"], []],
    "deterministic": [True, False],
    "debug": [True],
}


EXTREME_INTS = [1, 2, 7, 1000, 2**20, 2**31 - 1]
EXTREME_KEYS = [("hyperparameters", "buffer_size"), ("hyperparameters", "batch_size"), ("hyperparameters", "num_epoch"),
                ("network_settings", "hidden_units"), ("network_settings", "num_layers"), ("time_horizon",),
                ("summary_freq",), ("keep_checkpoints",), ("checkpoint_interval",), ("max_steps",)]


def _extreme(rng: random.Random, tree: dict) -> dict:
    """Valid but extreme sizes (they load; the resource limits and the scene table get the last word)."""
    behavior = tree["behaviors"]["MobileRobot"]
    for path in rng.sample(EXTREME_KEYS, rng.randint(1, 4)):
        _set(behavior, path, rng.choice(EXTREME_INTS + ([2**63 - 1] if path == ("max_steps",) else [])))
    hp = behavior["hyperparameters"]
    hp["batch_size"] = min(hp["batch_size"], hp["buffer_size"])
    tree.setdefault("env_settings", {})
    tree["env_settings"]["num_envs"] = rng.choice([None, 1, 64, 4096, 2**31 - 1])
    tree["env_settings"]["num_areas"] = rng.choice([1, 1, 8, 2**31 - 1])
    if rng.random() < 0.6:
        tree["environment_parameters"] = _environment_parameters(rng)
    return tree


def generate_config_cases(seed: int = SEED, count: int = CONFIG_CASES) -> list[tuple[str, bytes, dict]]:
    """``(name, file bytes, CLI overrides)``, the same list on every run and every xdist worker."""
    rng = random.Random(seed)
    texts = [(ROOT / "configs" / name).read_text() for name in ("MobileRobot.yaml", "MobileRobot-fast.yaml")]
    cases = []
    for index in range(count):
        text = rng.choice(texts)
        roll = rng.random()
        overrides = {}
        if roll < 0.2:
            kind = "extreme"
            data = yaml.safe_dump(_extreme(rng, yaml.safe_load(text)), allow_unicode=True).encode()
        elif roll < 0.5:
            kind = "structured"
            tree = _structured(rng, yaml.safe_load(text))
            if rng.random() < 0.3 and isinstance(tree, dict):
                tree["environment_parameters"] = _environment_parameters(rng)
            try:
                data = yaml.safe_dump(tree, allow_unicode=True).encode("utf-8", "surrogatepass")
            except yaml.YAMLError:  # bytes values: dumped as !!binary by the full dumper only
                data = yaml.dump(tree, allow_unicode=True).encode("utf-8", "surrogatepass")
        elif roll < 0.8:
            kind = "text"
            data = _structural(rng, text).encode("utf-8", "surrogatepass")
        elif roll < 0.87:
            kind = "garbage"
            size = rng.choice([1, 16, 4096, 300_000])
            data = bytes(rng.getrandbits(8) for _ in range(min(size, 4096))) * max(1, size // 4096)
            if rng.random() < 0.5:
                data = data.replace(b"\0", b"\1")  # invalid UTF-8 without NUL bytes
        elif roll < 0.92:
            kind = "empty"
            data = rng.choice([b"", b"   \n\n", b"# only a comment\n", b"---\n", b"...\n", b"\xef\xbb\xbf", b"~\n",
                               b"[]\n", b"0\n", b"''\n"])
        else:
            kind = "overrides"
            data = text.encode()
            overrides = {key: rng.choice(values) for key, values in rng.sample(sorted(OVERRIDE_VALUES.items()), 3)}
        if rng.random() < 0.1 and not overrides:
            overrides = {"run_id": rng.choice(OVERRIDE_VALUES["run_id"])}
        cases.append((f"{index:03d}-{kind}", data, overrides))
    return cases


def generate_sweep_cases(seed: int = SEED + 1, count: int = SWEEP_CASES) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    base = "learning_rate: [3.0e-4, 1.0e-3]\nbeta: 1.0e-3\ngamma: [0.9, 0.99]\n"
    cases = []
    for index in range(count):
        roll = rng.random()
        if roll < 0.4:
            tree = yaml.safe_load(base)
            key = rng.choice([*tree, "lambd", "epsilon", "batch_size", 1])
            tree[key] = _hostile(rng, [[rng.random() for _ in range(rng.choice([1, 10, 300]))]])
            try:
                data = yaml.safe_dump(tree, allow_unicode=True).encode("utf-8", "surrogatepass")
            except yaml.YAMLError:
                data = yaml.dump(tree, allow_unicode=True).encode("utf-8", "surrogatepass")
        elif roll < 0.8:
            data = _structural(rng, base).encode("utf-8", "surrogatepass")
        else:
            data = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 100, 2000])))
        cases.append((f"{index:03d}", data))
    return cases


CONFIG_CASES_LIST = generate_config_cases()
SWEEP_CASES_LIST = generate_sweep_cases()


# --- the checks ------------------------------------------------------------------------------------


def assert_one_line(message: str, prefix: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert len(message) < 500, message
    assert message.startswith(prefix), message


def run_case(check: Callable[[], None]) -> None:
    """Run ``check`` under the time limit; anything but an AssertionError is a failure with its traceback."""
    try:
        with time_limit(CASE_SECONDS):
            check()
    except CaseTimeout as error:
        pytest.fail(f"hang: {error}")
    except AssertionError:
        raise
    except Exception:
        pytest.fail(f"unexpected exception:\n{traceback.format_exc()}")


def check_loaded(settings: RunSettings, tmp_path: Path, runs: int) -> None:
    """What loads must also go through the resource limits, the scene's parameters and configuration.yaml."""
    trainer = next(iter(settings.behaviors.values()), None) or settings.default_settings
    robots = (settings.env_settings.num_envs or 64) * settings.env_settings.num_areas
    spec = make_train_spec(trainer, 19, 2, robots)
    try:
        check_training_size(spec, runs=runs, memory_bytes=24 * GIB)
    except ResourceError as error:
        assert_one_line(str(error), "")
    for params in (MobileRobotParams(), MobileRobotObstaclesParams()):
        try:
            apply_environment_parameters(params, settings.environment_parameters)
        except ParameterError as error:
            assert_one_line(str(error), "environment_parameters.")
    for scene in ("MobileRobot", "MobileRobotObstacles"):  # samplers and curricula too
        try:
            make_scene(envs.make(scene), settings.environment_parameters, trained_behavior="MobileRobot")
        except ParameterError as error:
            assert_one_line(str(error), "environment_parameters.")
    out = tmp_path / "out" / "configuration.yaml"
    settings.dump_yaml(str(out))
    again = load_run_settings(str(out))
    assert yaml.safe_dump(again.to_dict()) == yaml.safe_dump(settings.to_dict())


@pytest.mark.parametrize("case", range(len(CONFIG_CASES_LIST)), ids=[c[0] for c in CONFIG_CASES_LIST])
def test_fuzzed_config_loads_or_fails_in_one_line(tmp_path, monkeypatch, case):
    name, data, overrides = CONFIG_CASES_LIST[case]
    monkeypatch.chdir(tmp_path)  # results_dir checks look at the working folder
    path = tmp_path / "config.yaml"
    path.write_bytes(data)

    def check() -> None:
        try:
            settings = load_run_settings(str(path), overrides)
        except ConfigError as error:
            assert_one_line(str(error), f"{path}: ")
            return
        check_loaded(settings, tmp_path, runs=random.Random(case).choice([1, 16, 300]))

    run_case(check)


@pytest.mark.parametrize("case", range(len(SWEEP_CASES_LIST)), ids=[c[0] for c in SWEEP_CASES_LIST])
def test_fuzzed_sweep_loads_or_fails_in_one_line(tmp_path, case):
    name, data = SWEEP_CASES_LIST[case]
    path = tmp_path / "sweep.yaml"
    path.write_bytes(data)

    def check() -> None:
        try:
            points = load_sweep(str(path))
        except ConfigError as error:
            assert_one_line(str(error), f"--sweep {path}: ")
            return
        assert 1 <= len(points) and all(math.isfinite(v) for point in points for v in point.values())

    run_case(check)


def test_the_generator_covers_what_it_should():
    names = [name for name, _, _ in CONFIG_CASES_LIST]
    assert len(names) >= 300 and len(set(names)) == len(names)
    for kind in ("extreme", "structured", "text", "garbage", "empty", "overrides"):
        assert sum(kind in name for name in names) >= 10, kind
    assert generate_config_cases() == CONFIG_CASES_LIST  # seeded: the same cases every time


def test_the_time_limit_fires():
    with pytest.raises(CaseTimeout), time_limit(0.05):
        while True:
            pass


# --- environment_parameters: each scene field's type and range ------------------------------------


def scene_fields(params) -> dict[str, Any]:
    return {name: getattr(params, name) for name in params.__dataclass_fields__}


@pytest.mark.parametrize("params", [MobileRobotParams(), MobileRobotObstaclesParams()], ids=["s6", "s7"])
def test_every_scalar_field_has_a_range_and_its_default_is_in_it(params):
    kinds = {bool: "bool", int: "int", float: "float", str: "choice"}
    for name, default in scene_fields(params).items():
        if isinstance(default, tuple):
            assert name not in FIELDS  # structural (walls, spawn tables): not settable
            continue
        assert FIELDS[name].kind == kinds[type(default)], name
        assert check_parameter(name, default) == default, name


ACCEPTED = [
    ("random_spawn", True, True), ("random_spawn", 0, False), ("random_spawn", 1.0, True),
    ("max_episode_steps", 500, 500), ("max_episode_steps", 500.0, 500), ("max_episode_steps", "5e2", 500),
    ("max_episode_steps", 2**31 - 1, 2**31 - 1), ("goal_reward", -3, -3.0), ("goal_reward", "1e3", 1000.0),
    ("ray_length", 0.5, 0.5), ("spawn_jitter", 0, 0.0), ("turn_step", -180, -180.0), ("action_mode", "wheels",
                                                                                       "wheels"),
    ("step_reward", 3.4e38, 3.4e38), ("stage_angle", 180, 180.0),
]


@pytest.mark.parametrize(("name", "value", "expected"), ACCEPTED)
def test_valid_values_are_converted(name, value, expected):
    converted = check_parameter(name, value)
    assert converted == expected and type(converted) is type(expected)


REFUSED = [
    ("random_spawn", "false", "environment_parameters.random_spawn: 'false' must be true or false"),
    ("random_spawn", 2, "must be true or false"),
    ("random_spawn", None, "must be true or false"),
    ("max_episode_steps", math.nan, "environment_parameters.max_episode_steps: nan must be an integer in "
                                    "[1, 2147483647]"),
    ("max_episode_steps", 0, "max_episode_steps: 0 must be an integer in [1, 2147483647]"),
    ("max_episode_steps", -5, "max_episode_steps: -5 must be"),
    ("max_episode_steps", 2.5, "max_episode_steps: 2.5 must be"),
    ("max_episode_steps", 2**31, "max_episode_steps: 2147483648 must be"),
    ("max_episode_steps", True, "max_episode_steps: True must be"),
    ("max_episode_steps", 10**400, "max_episode_steps: <an integer of 1329 bits> must be"),
    ("goal_reward", math.inf, "goal_reward: inf must be a finite number"),
    ("goal_reward", 1e39, "goal_reward: 1e+39 must be a finite number"),
    ("goal_reward", "lots", "goal_reward: 'lots' must be a finite number"),
    ("goal_reward", [1], "goal_reward: [1] must be a finite number"),
    ("ray_length", 0, "ray_length: 0 must be a finite number > 0"),
    ("spawn_jitter", -1, "spawn_jitter: -1 must be a finite number >= 0"),
    ("turn_step", 200, "turn_step: 200 must be a finite number in [-180, 180]"),
    ("action_mode", "fly", "action_mode: 'fly' must be one of: unity, wheels"),
    ("action_mode", 1, "action_mode: 1 must be one of"),
    ("goal_radius", "x" * 10_000, "goal_radius: 'xxxx"),
    ("goal_radius", {"sampler_type": "uniform"}, "goal_radius: a constant is needed here, not a sampler"),
]


@pytest.mark.parametrize(("name", "value", "fragment"), REFUSED)
def test_invalid_values_are_refused_in_one_line(name, value, fragment):
    with pytest.raises(ParameterError) as info:
        check_parameter(name, value)
    message = str(info.value)
    assert fragment in message and "\n" not in message and len(message) < 200, message


def test_apply_sets_the_fields_and_names_unknown_or_structural_ones():
    params = apply_environment_parameters(MobileRobotParams(), {"max_episode_steps": 48, "random_spawn": 1})
    assert (params.max_episode_steps, params.random_spawn) == (48, True)
    assert apply_environment_parameters(MobileRobotParams(), None) == MobileRobotParams()
    for parameters, fragment in [({"gravity": 9.8}, "environment_parameters.gravity: not a parameter of this scene"),
                                 ({"walls": [[0, 0], [1, 1]]}, "environment_parameters.walls: a structural constant"),
                                 ({"stage_angle": 10}, "environment_parameters.stage_angle: not a parameter"),
                                 ({"x" * 1000: 1}, "not a parameter"),
                                 ({5: 1}, "environment_parameters.5: not a parameter")]:
        with pytest.raises(ParameterError, match=fragment):
            apply_environment_parameters(MobileRobotParams(), parameters)
    obstacles = apply_environment_parameters(MobileRobotObstaclesParams(), {"stage_angle": 10})
    assert obstacles.stage_angle == 10.0


def test_trainer_keeps_its_run_error_contract():
    from rlrobot.run import RunError
    from rlrobot.trainer import apply_environment_parameters as trainer_apply

    with pytest.raises(RunError, match="environment_parameters.random_spawn: 'false' must be true or false"):
        trainer_apply(MobileRobotParams(), {"random_spawn": "false"})
    assert trainer_apply(MobileRobotParams(), {"max_episode_steps": 7}).max_episode_steps == 7


def test_cli_refuses_a_string_boolean_in_one_line(tmp_path, capsys, monkeypatch):
    from rlrobot.cli import main

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.yaml"
    config.write_text("behaviors:\n  MobileRobot:\n    trainer_type: ppo\n"
                      "environment_parameters: {random_spawn: 'false'}\n")
    assert main([str(config), "--run-id=e"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == ("[ERROR] environment_parameters.random_spawn: 'false' must be true or false (or 1 / 0, as "
                         "ML-Agents sends it)")


# --- samplers and curricula: ML-Agents' schema (rlrobot.curriculum), then each scene field (envs.parameters) -------

LESSON = "{name: L, value: 1.0, completion_criteria: {behavior: MobileRobot, threshold: 1.0}}"
SCHEMA_REFUSED = [
    ("{x: {sampler_parameters: {}}}", "environment_parameters.x: Sampler configuration does not contain "
                                      "sampler_type : {'sampler_parameters': {}}."),
    ("{x: {sampler_type: uniform}}", "environment_parameters.x: Sampler configuration does not contain "
                                     "sampler_parameters : {'sampler_type': 'uniform'}."),
    ("{x: {sampler_type: poisson, sampler_parameters: {}}}",
     "environment_parameters.x.sampler_type: 'poisson' is not a valid ParameterRandomizationType (uniform, "
     "gaussian, multirangeuniform, constant)."),
    ("{x: {sampler_type: uniform, sampler_parameters: {low: 1}}}", "environment_parameters.x.sampler_parameters: "
     "The option low was specified in your YAML file for UniformSettings, but is invalid."),
    ("{x: {sampler_type: uniform, sampler_parameters: {min_value: 2, max_value: 1}}}",
     "environment_parameters.x.sampler_parameters: Minimum value is greater than maximum value in uniform sampler."),
    ("{x: {sampler_type: uniform, sampler_parameters: {min_value: .nan}}}",
     "environment_parameters.x.sampler_parameters.min_value (nan) must be a finite number."),
    ("{x: {sampler_type: gaussian, sampler_parameters: {st_dev: -1}}}",
     "environment_parameters.x.sampler_parameters.st_dev (-1.0) must be >= 0."),
    ("{x: {sampler_type: gaussian, sampler_parameters: [1]}}",
     "environment_parameters.x.sampler_parameters: Unsupported config [1] for GaussianSettings."),
    ("{x: {sampler_type: uniform, sampler_parameters: {seed: 3}}}",
     "environment_parameters.x.sampler_parameters.seed: per-sampler seeds are not supported"),
    ("{x: {sampler_type: multirangeuniform, sampler_parameters: {intervals: [[1, 2, 3]]}}}",
     "environment_parameters.x.sampler_parameters.intervals[0]: The sampling interval [1, 2, 3] must contain "
     "exactly two values."),
    ("{x: {sampler_type: multirangeuniform, sampler_parameters: {intervals: [[0, 1], [3, 2]]}}}",
     "intervals[1]: Minimum value is greater than maximum value in interval [3.0, 2.0]."),
    ("{x: {sampler_type: multirangeuniform, sampler_parameters: {intervals: []}}}",
     "intervals ([]) must be a list of [min, max] intervals."),
    ("{x: {sampler_type: uniform, sampler_parameters: {}, extra: 1}}", "environment_parameters.x: The option extra "
     "was specified in your YAML file for ParameterRandomizationSettings, but is invalid."),
    ("{x: {curriculum: [], other: 1}}", "environment_parameters.x: The option other was specified in your YAML file "
     "for EnvironmentParameterSettings, but is invalid."),
    ("{x: {curriculum: []}}", "environment_parameters.x.curriculum ([]) must be a list of lessons"),
    ("{x: {curriculum: 3}}", "environment_parameters.x.curriculum (3) must be a list of lessons"),
    ("{x: {curriculum: [{name: A, value: 1}, {name: B, value: 2}]}}",
     "environment_parameters.x.curriculum[0]: A non-terminal lesson does not have a completion_criteria for x."),
    ("{x: {curriculum: [{name: A}]}}", "environment_parameters.x.curriculum[0]: a Lesson needs a value."),
    ("{x: {curriculum: [{value: 1}]}}", "environment_parameters.x.curriculum[0]: a Lesson needs a name."),
    ("{x: {curriculum: [{name: A, value: 1, when: 3}]}}", "environment_parameters.x.curriculum[0]: The option when "
     "was specified in your YAML file for Lesson, but is invalid."),
    ("{x: {curriculum: [{name: A, value: [1]}]}}", "environment_parameters.x.curriculum[0].value: Unsupported "
     "parameter randomization configuration [1]."),
    ("{x: {curriculum: [{name: A, value: {sampler_type: uniform}}]}}", "environment_parameters.x.curriculum[0]"
     ".value: Sampler configuration does not contain sampler_parameters"),
    ("{x: {curriculum: [{name: A, value: 1, completion_criteria: {threshold: 1}}, {name: B, value: 2}]}}",
     "environment_parameters.x.curriculum[0].completion_criteria: CompletionCriteriaSettings needs behavior"),
    ("{x: {curriculum: [{name: A, value: 1, completion_criteria: {behavior: B, measure: time}}, "
     "{name: B, value: 2}]}}", "completion_criteria.measure: 'time' is not a valid MeasureType (progress, reward)."),
    ("{x: {curriculum: [{name: A, value: 1, completion_criteria: {behavior: B, measure: progress, threshold: 2}}, "
     "{name: B, value: 2}]}}", "completion_criteria.threshold: Threshold for next lesson cannot be greater than 1 "
     "when the measure is progress."),
    ("{x: {curriculum: [{name: A, value: 1, completion_criteria: {behavior: B, measure: progress, threshold: -1}}, "
     "{name: B, value: 2}]}}", "Threshold for next lesson cannot be negative when the measure is progress."),
    ("{x: {curriculum: [{name: A, value: 1, completion_criteria: {behavior: B, min_lesson_length: -1}}, "
     "{name: B, value: 2}]}}", "completion_criteria.min_lesson_length (-1) must be an integer >= 0 (episodes)."),
    ("{x: {curriculum: [{name: A, value: 1, completion_criteria: {behavior: B, require_reset: 'yes'}}, "
     "{name: B, value: 2}]}}", "completion_criteria.require_reset ('yes') must be true or false."),
    ("{x: {curriculum: [{name: A, value: 1, completion_criteria: {behavior: B, speed: 1}}, {name: B, value: 2}]}}",
     "The option speed was specified in your YAML file for CompletionCriteriaSettings, but is invalid."),
    (f"{{x: {{curriculum: [{', '.join([LESSON] * 101)}]}}}}", "x.curriculum: 101 lessons; rlrobot takes at most 100."),
]


@pytest.mark.parametrize(("parameters", "expected"), SCHEMA_REFUSED)
def test_malformed_samplers_and_curricula_are_refused_in_ml_agents_words(tmp_path, parameters, expected):
    path = tmp_path / "c.yaml"
    path.write_text(f"behaviors: {{MobileRobot: {{trainer_type: ppo}}}}\nenvironment_parameters: {parameters}\n")
    with pytest.raises(ConfigError) as info:
        load_run_settings(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    assert "\n" not in message and len(message) < 500


SCENE_REFUSED = [
    ({"random_spawn": {"sampler_type": "uniform", "sampler_parameters": {}}},
     "environment_parameters.random_spawn: a switch fixed when the program is compiled, so it takes a constant only, "
     "not a sampler or curriculum (sample spawn_randomness, the probability of a random spawn, instead)"),
    ({"action_mode": {"curriculum": [{"name": "A", "value": 1, "completion_criteria": {"behavior": "MobileRobot"}},
                                     {"name": "B", "value": 2}]}}, "environment_parameters.action_mode: a switch"),
    ({"gravity": {"sampler_type": "uniform", "sampler_parameters": {}}},
     "environment_parameters.gravity: not a parameter of this scene"),
    ({"ray_dropout": {"sampler_type": "uniform", "sampler_parameters": {"max_value": 1.5}}},
     "environment_parameters.ray_dropout.sampler_parameters.max_value: 1.5 must be in [0, 1] (the range of "
     "ray_dropout)"),
    ({"goal_radius": {"sampler_type": "gaussian", "sampler_parameters": {"mean": -1}}},
     "environment_parameters.goal_radius.sampler_parameters.mean: -1.0 must be > 0 (the range of goal_radius)"),
    ({"max_episode_steps": {"curriculum": [
        {"name": "A", "value": 10, "completion_criteria": {"behavior": "MobileRobot"}},
        {"name": "B", "value": 0}]}},
     "environment_parameters.max_episode_steps.curriculum[1].value: 0.0 must be an integer in [1, 2147483647]"),
    ({"spawn_randomness": {"curriculum": [
        {"name": "A", "value": 0, "completion_criteria": {"behavior": "Other"}}, {"name": "B", "value": 1}]}},
     "environment_parameters.spawn_randomness.curriculum[0].completion_criteria.behavior: Other is not the behavior "
     "being trained (MobileRobot), so the lesson would never end."),
    ({"stage_angle": {"sampler_type": "uniform", "sampler_parameters": {}}},
     "environment_parameters.stage_angle: not a parameter of this scene"),
]


@pytest.mark.parametrize(("parameters", "expected"), SCENE_REFUSED)
def test_samplers_need_a_numeric_field_of_the_scene_and_its_range(parameters, expected):
    import envs
    from rlrobot.curriculum import make_scene

    with pytest.raises(ParameterError) as info:
        make_scene(envs.make("MobileRobot"), parameters, trained_behavior="MobileRobot")
    assert str(info.value) == expected or str(info.value).startswith(expected), str(info.value)


def test_cli_refuses_a_bad_curriculum_in_one_line(tmp_path, capsys, monkeypatch):
    from rlrobot.cli import main

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "bad.yaml"
    config.write_text("behaviors:\n  MobileRobot:\n    trainer_type: ppo\n"
                      "environment_parameters: {random_heading: {curriculum: [{name: A, value: 0.0, "
                      "completion_criteria: {behavior: MobileRobot}}, {name: B, value: 1.0}]}}\n")
    assert main([str(config), "--run-id=e"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("[ERROR] environment_parameters.random_heading: a switch fixed when the program is "
                                "compiled") and not (tmp_path / "results").exists()
