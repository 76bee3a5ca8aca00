"""rlrobot.config: ML-Agents YAML layout, defaults, strict validation, CLI overrides."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from rlrobot.config import (
    RUN_KEYS,
    CheckpointSettings,
    ConfigError,
    EngineSettings,
    EnvironmentSettings,
    NetworkSettings,
    PPOSettings,
    RewardSignalSettings,
    RunSettings,
    TorchSettings,
    TrainerSettings,
    load_run_settings,
    show,
)

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = "behaviors:\n  MobileRobot:\n    trainer_type: ppo\n"


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return str(path)


def config_error(path: str, overrides: dict | None = None) -> str:
    """Load, expecting a ConfigError; return its (checked one-line, file-prefixed) message."""
    with pytest.raises(ConfigError) as info:
        load_run_settings(path, overrides)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: ")
    return message


def behavior_yaml(body: str) -> str:
    """A MobileRobot behavior whose block is ``body`` (indented 4 spaces)."""
    lines = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return f"behaviors:\n  MobileRobot:\n{lines}"


def hyper(flow: str) -> str:
    """A PPO MobileRobot behavior with ``hyperparameters: <flow mapping>``."""
    return behavior_yaml(f"trainer_type: ppo\nhyperparameters: {flow}")


# --- defaults and shipped configs ---------------------------------------------


def test_minimal_file_is_fully_defaulted(tmp_path):
    run = load_run_settings(write(tmp_path, MINIMAL))
    assert run == RunSettings(behaviors={"MobileRobot": TrainerSettings()})
    trainer = run.behavior("MobileRobot")
    assert trainer.hyperparameters == PPOSettings(
        batch_size=1024, buffer_size=10240, learning_rate=3e-4, beta=5e-3, epsilon=0.2, lambd=0.95, num_epoch=3
    )
    assert (trainer.max_steps, trainer.time_horizon, trainer.summary_freq) == (500000, 64, 50000)
    assert trainer.gamma == 0.99
    assert run.env_settings.num_envs is None
    assert run.checkpoint_settings == CheckpointSettings(run_id="ppo", results_dir="results")
    assert run.engine_settings.time_scale == 20.0
    assert run.torch_settings.device is None and run.debug is False


def test_course_config_values():
    run = load_run_settings(str(ROOT / "configs" / "MobileRobot.yaml"))
    trainer = run.behavior("MobileRobot")
    assert trainer.hyperparameters == PPOSettings(
        batch_size=2048, buffer_size=20480, learning_rate=3e-4, beta=5e-3, epsilon=0.2, lambd=0.95, num_epoch=3
    )
    assert trainer.network_settings == NetworkSettings(normalize=True, hidden_units=512, num_layers=3)
    assert trainer.reward_signals == {"extrinsic": RewardSignalSettings(gamma=0.995, strength=1.0)}
    assert (trainer.keep_checkpoints, trainer.max_steps, trainer.time_horizon) == (5, 5000000, 1000)
    assert (trainer.summary_freq, trainer.threaded) == (30000, True)


def test_fast_config_is_a_smaller_consistent_variant_of_the_course_config():
    run = load_run_settings(str(ROOT / "configs" / "MobileRobot-fast.yaml"))
    trainer = run.behavior("MobileRobot")
    hp = trainer.hyperparameters
    assert hp.buffer_size % run.env_settings.num_envs == 0  # whole rollouts per update
    assert hp.buffer_size % hp.batch_size == 0              # no dropped remainder
    assert trainer.network_settings.normalize
    assert trainer.max_steps < 5_000_000 and trainer.network_settings.hidden_units < 512
    assert trainer.effective_checkpoint_interval < trainer.max_steps


@pytest.mark.parametrize("name", ["MobileRobot.yaml", "MobileRobot-fast.yaml"])
def test_shipped_configs_use_lf(name):
    assert b"\r" not in (ROOT / "configs" / name).read_bytes()


def test_float_notation_and_numeric_strings(tmp_path):
    # YAML 1.1 reads 3e-4 (no dot) as a string; ML-Agents still accepts it.
    text = hyper("{learning_rate: 3e-4, batch_size: 2.048e3}") + "    max_steps: 5.0e6\n"
    trainer = load_run_settings(write(tmp_path, text)).behavior("MobileRobot")
    assert trainer.max_steps == 5000000 and type(trainer.max_steps) is int
    assert trainer.hyperparameters.learning_rate == 3e-4
    assert trainer.hyperparameters.batch_size == 2048 and type(trainer.hyperparameters.batch_size) is int


def test_crlf_file(tmp_path):
    text = (ROOT / "configs" / "MobileRobot.yaml").read_text().replace("\n", "\r\n")
    run = load_run_settings(write(tmp_path, text))
    assert run == load_run_settings(str(ROOT / "configs" / "MobileRobot.yaml"))


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PPOSettings().batch_size = 1  # type: ignore[misc]


# --- schedules, checkpoints, behaviors ----------------------------------------------


def test_learning_rate_schedule_is_copied_when_others_unset(tmp_path):
    text = hyper("{learning_rate_schedule: constant}")
    hp = load_run_settings(write(tmp_path, text)).behavior("MobileRobot").hyperparameters
    assert (hp.learning_rate_schedule, hp.beta_schedule, hp.epsilon_schedule) == ("constant",) * 3


def test_explicit_schedules_are_kept(tmp_path):
    text = behavior_yaml(
        "trainer_type: ppo\nhyperparameters: {learning_rate_schedule: constant, beta_schedule: linear}"
    )
    hp = load_run_settings(write(tmp_path, text)).behavior("MobileRobot").hyperparameters
    assert (hp.learning_rate_schedule, hp.beta_schedule, hp.epsilon_schedule) == ("constant", "linear", "constant")


def test_schedules_default_to_linear_without_lr_schedule(tmp_path):
    text = hyper("{beta_schedule: constant}")
    hp = load_run_settings(write(tmp_path, text)).behavior("MobileRobot").hyperparameters
    assert (hp.learning_rate_schedule, hp.beta_schedule, hp.epsilon_schedule) == ("linear", "constant", "linear")


def test_even_checkpoints():
    trainer = TrainerSettings(even_checkpoints=True, max_steps=1000, keep_checkpoints=4, checkpoint_interval=7)
    assert trainer.effective_checkpoint_interval == 250
    assert dataclasses.replace(trainer, even_checkpoints=False).effective_checkpoint_interval == 7


def test_behavior_lookup(tmp_path):
    run = load_run_settings(write(tmp_path, MINIMAL))
    assert run.behavior("MobileRobot?team=0") is run.behaviors["MobileRobot"]
    with pytest.raises(ConfigError, match="The behavior name Other has not been specified"):
        run.behavior("Other")


def test_default_settings_fill_in_behaviors(tmp_path):
    text = (
        "default_settings:\n  trainer_type: ppo\n  hyperparameters: {batch_size: 64, buffer_size: 640}\n"
        "  max_steps: 1000\n"
        "behaviors:\n  MobileRobot:\n    hyperparameters: {batch_size: 128}\n"
    )
    run = load_run_settings(write(tmp_path, text))
    assert run.behavior("MobileRobot").hyperparameters.batch_size == 128
    assert run.behavior("MobileRobot").hyperparameters.buffer_size == 640
    assert run.behavior("MobileRobot").max_steps == 1000
    assert run.behavior("Unlisted") == run.default_settings


def test_mlagents_configuration_yaml_keys_are_accepted(tmp_path):
    text = behavior_yaml(
        "trainer_type: ppo\nself_play: null\nbehavioral_cloning: null\n"
        "reward_signals:\n  extrinsic:\n    gamma: 0.9\n    network_settings: {normalize: false}"
    )
    assert load_run_settings(write(tmp_path, text)).behavior("MobileRobot").gamma == 0.9


def test_tolerated_sections_are_kept(tmp_path):
    text = MINIMAL + (
        "env_settings: {env_path: build/Robot, env_args: [--foo, '1'], seed: 7}\n"
        "engine_settings: {time_scale: 1, no_graphics: true}\n"
        "checkpoint_settings: {run_id: 12}\n"
        "torch_settings: {device: cpu}\n"
        "environment_parameters: {goal_radius: 3.0}\n"
        "debug: true\n"
    )
    run = load_run_settings(write(tmp_path, text))
    assert run.env_settings == EnvironmentSettings(env_path="build/Robot", env_args=("--foo", "1"), seed=7)
    assert run.engine_settings == EngineSettings(time_scale=1.0, no_graphics=True)
    assert run.checkpoint_settings.run_id == "12"
    assert run.torch_settings == TorchSettings(device="cpu")
    assert run.environment_parameters == {"goal_radius": 3.0}
    assert run.debug is True


# --- errors ------------------------------------------------------------------------------

ERROR_CASES = {
    "unknown top-level key": (
        MINIMAL + "foo: 1\n",
        ["The option foo was specified in your YAML file, but is invalid."],
    ),
    "unknown TrainerSettings key": (
        behavior_yaml("trainer_type: ppo\nbogus: 1"),
        ["The option bogus was specified in your YAML file for TrainerSettings, but is invalid."],
    ),
    "unknown PPOSettings key": (
        hyper("{foo: 1}"),
        ["The option foo was specified in your YAML file for PPOSettings, but is invalid."],
    ),
    "unknown NetworkSettings key": (
        behavior_yaml("network_settings: {hiden_units: 1}"),
        ["The option hiden_units", "for NetworkSettings, but is invalid."],
    ),
    "unknown RewardSignalSettings key": (
        behavior_yaml("reward_signals: {extrinsic: {gama: 0.9}}"),
        ["The option gama", "for RewardSignalSettings, but is invalid."],
    ),
    "unknown EnvironmentSettings key": (MINIMAL + "env_settings: {port: 1}\n", ["option port", "EnvironmentSettings"]),
    "unknown EngineSettings key": (MINIMAL + "engine_settings: {fps: 1}\n", ["The option fps", "for EngineSettings"]),
    "unknown CheckpointSettings key": (MINIMAL + "checkpoint_settings: {id: 1}\n", ["option id", "CheckpointSettings"]),
    "unknown TorchSettings key": (MINIMAL + "torch_settings: {gpu: 1}\n", ["The option gpu", "for TorchSettings"]),
    "section not a mapping": (
        behavior_yaml("trainer_type: ppo\nhyperparameters: 5"),
        ["Unsupported config 5 for PPOSettings."],
    ),
    "behavior not a mapping": (
        "behaviors:\n  MobileRobot: [1, 2]\n",
        ["Unsupported config [1, 2] for TrainerSettings"],
    ),
    "hyperparameters without trainer_type": (
        behavior_yaml("hyperparameters: {batch_size: 64}"),
        ["behaviors.MobileRobot", "Hyperparameters were specified but no trainer_type was given."],
    ),
    "trainer type": (
        behavior_yaml("trainer_type: sac\nhyperparameters: {buffer_init_steps: 0}"),
        ["behaviors.MobileRobot.trainer_type", "Invalid trainer type sac was found"],
    ),
    "batch_size type": (
        hyper('{batch_size: "abc"}'),
        ["behaviors.MobileRobot.hyperparameters.batch_size", "'abc'", "integer"],
    ),
    "non-integral int": (behavior_yaml("time_horizon: 64.5"), ["behaviors.MobileRobot.time_horizon", "64.5"]),
    "max_steps type": (behavior_yaml("max_steps: lots"), ["behaviors.MobileRobot.max_steps", "'lots'"]),
    "bool type": (behavior_yaml("threaded: 'no'"), ["behaviors.MobileRobot.threaded", "'no'", "true or false"]),
    "float type": (
        hyper("{learning_rate: fast}"),
        ["hyperparameters.learning_rate", "'fast'"],
    ),
    "batch over buffer": (
        hyper("{batch_size: 40960, buffer_size: 20480}"),
        ["hyperparameters.batch_size (40960) must not exceed buffer_size (20480)."],
    ),
    "zero batch": (hyper("{batch_size: 0}"), ["batch_size (0)", "positive"]),
    "negative buffer": (hyper("{buffer_size: -5}"), ["buffer_size (-5)"]),
    "zero num_epoch": (hyper("{num_epoch: 0}"), ["num_epoch (0)"]),
    "zero hidden_units": (behavior_yaml("network_settings: {hidden_units: 0}"), ["network_settings.hidden_units (0)"]),
    "zero num_layers": (behavior_yaml("network_settings: {num_layers: 0}"), ["network_settings.num_layers (0)"]),
    "zero keep_checkpoints": (behavior_yaml("keep_checkpoints: 0"), ["keep_checkpoints (0)"]),
    "zero summary_freq": (behavior_yaml("summary_freq: 0"), ["summary_freq (0)"]),
    "zero time_horizon": (behavior_yaml("time_horizon: 0"), ["time_horizon (0)"]),
    "zero checkpoint_interval": (behavior_yaml("checkpoint_interval: 0"), ["checkpoint_interval (0)"]),
    "zero max_steps": (behavior_yaml("max_steps: 0"), ["max_steps (0)"]),
    "learning_rate": (hyper("{learning_rate: 0}"), ["learning_rate (0.0)"]),
    "beta": (hyper("{beta: -0.1}"), ["beta (-0.1)"]),
    "epsilon": (hyper("{epsilon: 0.0}"), ["epsilon (0.0)"]),
    "lambd": (hyper("{lambd: 1.5}"), ["lambd (1.5)", "[0, 1]"]),
    "gamma": (behavior_yaml("reward_signals: {extrinsic: {gamma: 1.0}}"), ["reward_signals.extrinsic.gamma (1.0)"]),
    "strength": (behavior_yaml("reward_signals: {extrinsic: {strength: -1}}"), ["extrinsic.strength (-1.0)"]),
    "schedule": (
        hyper("{learning_rate_schedule: cosine}"),
        ["learning_rate_schedule ('cosine')", "linear, constant"],
    ),
    "unsupported reward signal": (
        behavior_yaml("reward_signals: {extrinsic: {}, curiosity: {strength: 0.02, learning_rate: 3.0e-4}}"),
        ["reward_signals.curiosity", "not supported"],
    ),
    "unknown reward signal": (behavior_yaml("reward_signals: {extrinsic: {}, foo: {}}"), ["reward_signals.foo"]),
    "no extrinsic": (behavior_yaml("reward_signals: {}"), ["reward_signals", "must include extrinsic"]),
    "odd memory size": (
        behavior_yaml("network_settings: {memory: {memory_size: 5}}"),
        ["network_settings.memory.memory_size (5)", "memory size must be divisible by 2"],
    ),
    "zero memory size": (
        behavior_yaml("network_settings: {memory: {memory_size: 0}}"),
        ["memory_size (0)", "memory size must be greater than 0"],
    ),
    "sequence longer than batch": (
        hyper("{batch_size: 32, buffer_size: 64}") + "    network_settings: {memory: {}}\n",
        ["memory.sequence_length (64)", "sequence length must be less than or equal to batch size"],
    ),
    "memory": (
        behavior_yaml("network_settings: {memory: {}}"),
        ["network_settings.memory", "recurrent networks are not supported"],
    ),
    "self_play": (behavior_yaml("self_play: {window: 10}"), ["behaviors.MobileRobot.self_play", "not supported"]),
    "num_envs": (MINIMAL + "env_settings: {num_envs: 0}\n", ["env_settings.num_envs (0)"]),
    "no behaviors": ("env_settings: {seed: 1}\n", ["No behaviors were specified"]),
    "empty file": ("", ["No behaviors were specified"]),
    "empty behaviors": ("behaviors: {}\n", ["No behaviors were specified"]),
    "top level not a mapping": ("- a\n- b\n", ["Unsupported config ['a', 'b']"]),
    "debug type": (MINIMAL + "debug: 1\n", ["debug (1)"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_invalid_config_raises_one_line_error(tmp_path, case):
    text, fragments = ERROR_CASES[case]
    message = config_error(write(tmp_path, text))
    for fragment in fragments:
        assert fragment in message


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    message = config_error(path)
    assert f"Config file could not be found at {os.path.abspath(path)}." in message


def test_bad_yaml_names_the_line(tmp_path):
    message = config_error(write(tmp_path, "behaviors:\n  MobileRobot:\n    trainer_type: ppo\n  bad: [1,\n"))
    assert "Error parsing yaml file." in message
    assert "line 5" in message


def test_relative_path_prefix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, MINIMAL + "foo: 1\n", "x.yaml")
    message = config_error("x.yaml")
    assert message == "x.yaml: The option foo was specified in your YAML file, but is invalid."


# --- CLI overrides --------------------------------------------------------------------------

OVERRIDES = {
    "run_id": "1",
    "force": True,
    "seed": 3,
    "num_envs": 64,
    "env_path": "x",
    "time_scale": 5.0,
    "results_dir": "r",
    "inference": True,
    "debug": True,
    "base_port": 6000,
    "no_graphics": True,
    "timeout_wait": 10,
    "device": "cpu",
    "env_args": ["--a"],
}


def test_overrides_are_routed_to_their_sections(tmp_path):
    path = write(tmp_path, MINIMAL + "env_settings: {seed: 1, num_areas: 2}\ncheckpoint_settings: {run_id: yaml}\n")
    run = load_run_settings(path, OVERRIDES)
    assert run.checkpoint_settings == CheckpointSettings(run_id="1", force=True, inference=True, results_dir="r")
    assert run.env_settings == EnvironmentSettings(
        env_path="x", env_args=("--a",), base_port=6000, num_envs=64, num_areas=2, timeout_wait=10, seed=3
    )
    assert run.engine_settings == EngineSettings(time_scale=5.0, no_graphics=True)
    assert run.torch_settings == TorchSettings(device="cpu")
    assert run.debug is True


def test_override_values_are_validated(tmp_path):
    message = config_error(write(tmp_path, MINIMAL), {"num_envs": 0})
    assert "env_settings.num_envs (0)" in message


def test_unknown_override_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="bogus"):
        load_run_settings(write(tmp_path, MINIMAL), {"bogus": 1})


def test_deterministic_override(tmp_path):
    run = load_run_settings(write(tmp_path, MINIMAL), {"deterministic": True})
    assert run.behavior("MobileRobot").network_settings.deterministic is True


@pytest.mark.parametrize(
    ("yaml_checkpoint", "overrides", "expected"),
    [
        ("{resume: true, initialize_from: old}", {}, (True, None)),
        ("{resume: true}", {"initialize_from": "old"}, (False, "old")),
        ("{initialize_from: old}", {"resume": True}, (True, None)),
        ("{}", {"resume": True, "initialize_from": "old"}, (True, None)),
        ("{initialize_from: old}", {}, (False, "old")),
    ],
)
def test_resume_and_initialize_from(tmp_path, yaml_checkpoint, overrides, expected):
    path = write(tmp_path, MINIMAL + f"checkpoint_settings: {yaml_checkpoint}\n")
    checkpoint = load_run_settings(path, overrides).checkpoint_settings
    assert (checkpoint.resume, checkpoint.initialize_from) == expected


# --- configuration.yaml round trip ------------------------------------------------------------


def test_to_dict_layout():
    run = load_run_settings(str(ROOT / "configs" / "MobileRobot.yaml"))
    data = run.to_dict()
    assert tuple(data) == RUN_KEYS
    assert list(data["behaviors"]["MobileRobot"])[:4] == [
        "trainer_type",
        "hyperparameters",
        "checkpoint_interval",
        "network_settings",
    ]
    extrinsic = data["behaviors"]["MobileRobot"]["reward_signals"]["extrinsic"]
    assert list(extrinsic) == ["gamma", "strength", "network_settings"]  # ML-Agents writes the unused network too
    assert (extrinsic["gamma"], extrinsic["strength"]) == (0.995, 1.0)
    assert extrinsic["network_settings"]["hidden_units"] == 128
    assert list(data["checkpoint_settings"]) == [
        "run_id",
        "initialize_from",
        "load_model",
        "resume",
        "force",
        "train_model",
        "inference",
        "results_dir",
    ]


@pytest.mark.parametrize("config", ["MobileRobot.yaml", "MobileRobot-fast.yaml"])
def test_dump_then_load_round_trips(tmp_path, config):
    overrides = {"run_id": "7", "env_args": ["--x"], "initialize_from": "0"}
    run = load_run_settings(str(ROOT / "configs" / config), overrides)
    out = tmp_path / "results" / "7" / "configuration.yaml"
    run.dump_yaml(str(out))
    assert load_run_settings(str(out)) == run


def test_round_trip_with_default_settings_and_parameters(tmp_path):
    text = (
        "default_settings: {trainer_type: ppo, max_steps: 100}\n"
        + MINIMAL
        + "environment_parameters:\n"
        + "  radius: {sampler_type: uniform, sampler_parameters: {min_value: 1, max_value: 2}}\n"
    )
    run = load_run_settings(write(tmp_path, text))
    out = str(tmp_path / "configuration.yaml")
    run.dump_yaml(out)
    assert load_run_settings(out) == run


# --- run ids and the results folder ------------------------------------------------------------

BAD_RUN_IDS = ["../x", "..", ".", "/", "/tmp/x", "a/../b", "a//b", "a/", "./a", "a/.", "..\\x", "C:\\x", "a\0b", ""]


@pytest.mark.parametrize("run_id", BAD_RUN_IDS)
def test_run_ids_must_stay_inside_the_results_folder(tmp_path, run_id):
    quoted = run_id.replace("\\", "\\\\").replace("\0", "\\0")
    message = config_error(write(tmp_path, MINIMAL + f'checkpoint_settings: {{run_id: "{quoted}"}}\n'))
    assert "checkpoint_settings.run_id (" in message and len(message) < 500
    message = config_error(write(tmp_path, MINIMAL), {"run_id": run_id})  # --run-id
    assert "checkpoint_settings.run_id (" in message


@pytest.mark.parametrize("run_id", ["exp/1", "1", "a.b", "..a", "seed-0", "x" * 255])
def test_nested_and_dotted_run_ids_are_fine(tmp_path, run_id):
    assert load_run_settings(write(tmp_path, MINIMAL), {"run_id": run_id}).checkpoint_settings.run_id == run_id


def test_member_run_ids_are_built_by_replace():
    checkpoint = CheckpointSettings(run_id="grid")
    assert dataclasses.replace(checkpoint, run_id="grid/sweep-1/seed-0").run_id == "grid/sweep-1/seed-0"
    with pytest.raises(ConfigError, match="run_id"):
        dataclasses.replace(checkpoint, run_id="grid/../..")
    with pytest.raises(ConfigError, match="longer than 255 bytes"):
        CheckpointSettings(run_id="x" * 256)


def test_results_dir_that_is_a_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, MINIMAL)
    (tmp_path / "results").write_text("not a folder")
    message = config_error(path)
    assert "checkpoint_settings.results_dir ('results'): results exists and is not a folder." in message
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "taken").write_text("")
    message = config_error(path, {"results_dir": "runs", "run_id": "taken/1"})
    assert "checkpoint_settings.run_id ('taken/1')" in message and "not a folder" in message
    assert load_run_settings(path, {"results_dir": "runs", "run_id": "free/1"}).checkpoint_settings.run_id == "free/1"


# --- numbers the device cannot hold --------------------------------------------------------------

INT32_KEYS = {
    "time_horizon": behavior_yaml("time_horizon: {v}"),
    "summary_freq": behavior_yaml("summary_freq: {v}"),
    "checkpoint_interval": behavior_yaml("checkpoint_interval: {v}"),
    "keep_checkpoints": behavior_yaml("keep_checkpoints: {v}"),
    "hyperparameters.buffer_size": hyper("{{buffer_size: {v}, batch_size: 64}}"),
    "hyperparameters.batch_size": hyper("{{batch_size: {v}, buffer_size: {v}}}"),
    "hyperparameters.num_epoch": hyper("{{num_epoch: {v}}}"),
    "network_settings.hidden_units": behavior_yaml("network_settings: {{hidden_units: {v}}}"),
    "network_settings.num_layers": behavior_yaml("network_settings: {{num_layers: {v}}}"),
    "env_settings.num_envs": MINIMAL + "env_settings: {{num_envs: {v}}}\n",
    "env_settings.num_areas": MINIMAL + "env_settings: {{num_areas: {v}}}\n",
    "env_settings.timeout_wait": MINIMAL + "env_settings: {{timeout_wait: {v}}}\n",
    "engine_settings.width": MINIMAL + "engine_settings: {{width: {v}}}\n",
    "engine_settings.capture_frame_rate": MINIMAL + "engine_settings: {{capture_frame_rate: {v}}}\n",
    "env_settings.max_lifetime_restarts": MINIMAL + "env_settings: {{max_lifetime_restarts: {v}}}\n",
}


@pytest.mark.parametrize("key", list(INT32_KEYS))
def test_int32_values_are_bounded(tmp_path, key):
    template = INT32_KEYS[key]
    load_run_settings(write(tmp_path, template.format(v=2**31 - 1)))  # the largest int32 passes
    for value, shown in [(2**31, "2147483648"), ("1e30", "1000000000000000019884624838656"),
                         ("9" * 1000, "<an integer of ~1000 digits>")]:
        message = config_error(write(tmp_path, template.format(v=value)))
        assert f"{key} ({shown}) must be at most 2147483647 (2**31-1)" in message, message
        assert len(message) < 500


def test_time_horizon_1e30_names_the_key_and_the_limit(tmp_path):
    message = config_error(write(tmp_path, behavior_yaml("time_horizon: 1e30")))
    assert message.endswith("behaviors.MobileRobot.time_horizon (1000000000000000019884624838656) must be at most "
                            "2147483647 (2**31-1): it reaches the device as a 32-bit integer.")


def test_max_steps_and_seeds_take_64_bit_values(tmp_path):
    path = write(tmp_path, behavior_yaml(f"max_steps: {2**63 - 1}") + f"env_settings: {{seed: {2**63 - 1}}}\n")
    run = load_run_settings(path)
    assert run.behavior("MobileRobot").max_steps == 2**63 - 1 and run.env_settings.seed == 2**63 - 1
    assert load_run_settings(path, {"seed": -(2**63)}).env_settings.seed == -(2**63)
    assert load_run_settings(path, {"seed": -1}).env_settings.seed == -1
    assert load_run_settings(write(tmp_path, behavior_yaml("max_steps: 5.0e6"))).behavior("MobileRobot").max_steps \
        == 5_000_000
    for text, fragment in [(behavior_yaml(f"max_steps: {2**63}"), "max_steps (9223372036854775808) must be at most "
                                                                  "9223372036854775807 (2**63-1)"),
                           (behavior_yaml("max_steps: 1e300"), "max_steps (<an integer of ~301 digits>)"),
                           (behavior_yaml("max_steps: .inf"), "max_steps (inf) must be a number"),
                           (MINIMAL + f"env_settings: {{seed: {2**63}}}\n", "env_settings.seed (9223372036854775808)"),
                           (MINIMAL + f"env_settings: {{seed: {-(2**63) - 1}}}\n", "must be at least")]:
        assert fragment in config_error(write(tmp_path, text))
    assert "env_settings.seed (9223372036854775808)" in config_error(write(tmp_path, MINIMAL), {"seed": 2**63})


def test_floats_too_large_for_a_double_are_refused(tmp_path):
    message = config_error(write(tmp_path, hyper("{learning_rate: " + "9" * 400 + "}")))
    assert "hyperparameters.learning_rate (<an integer of ~400 digits>) must be a finite number." in message
    assert "strength" in config_error(write(tmp_path, behavior_yaml("reward_signals: {extrinsic: {strength: "
                                                                    + "9" * 400 + "}}")))


def test_ports_and_text_fields(tmp_path):
    assert "env_settings.base_port (65536)" in config_error(write(tmp_path, MINIMAL), {"base_port": 65536})
    assert "env_settings.env_path" in config_error(write(tmp_path, MINIMAL), {"env_path": "a\0b"})
    assert "env_settings.env_args" in config_error(write(tmp_path, MINIMAL), {"env_args": ["a\0"]})
    assert "checkpoint_settings.results_dir" in config_error(write(tmp_path, MINIMAL), {"results_dir": "r\0"})


# --- hostile YAML ----------------------------------------------------------------------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))

HOSTILE_YAML = {
    "deep flow lists": ("a: " + "[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
    "deep flow maps": ("a: " + "{a: " * 5000 + "1" + "}" * 5000, "nested deeper than 32 levels"),
    "deep block maps": ("".join(" " * i + "a:\n" for i in range(100)), "nested deeper than 32 levels"),
    "deep block lists": ("".join(" " * i + "-\n" for i in range(100)), "nested deeper than 32 levels"),
    "deep through aliases": ("a0: &a0 [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]\n"
                             "a1: &a1 [[[[[[[[[[[[[[[[[[[[*a0]]]]]]]]]]]]]]]]]]]]\n"
                             "a2: [[[[*a1]]]]\n", "deeper than 32 levels once aliases are expanded"),
    "self-referencing alias": ("behaviors: &b\n  MobileRobot: *b\n", "recursive structure"),
    "self-referencing list": ("a: &a [*a]\n", "recursive structure"),
    "recursive merge key": ("a: &a {<<: *a}\n", "recursive structure"),
    "billion laughs": (LAUGHS, "more than 20000 values once aliases are expanded"),
    "too many values": ("a: [" + "1, " * 25_000 + "]\n", "more than 20000 values"),
    "too large": ("# " + "x" * (1 << 20) + "\n", "larger than 1024 KiB"),
    "unknown tag": ("a: !!python/object:os.system x\n", "could not determine a constructor"),
    "bad date": (behavior_yaml("max_steps: 2001-13-45"), "ValueError: month must be in 1..12"),
    "bad bool tag": ("a: !!bool maybe\n", "KeyError"),
    "bad int tag": ("a: !!int x\n", "ValueError"),
    "huge int": ("a: " + "9" * 5000 + "\n", "ValueError: Exceeds the limit"),
    "unhashable key": ("? [a]\n: 1\n", "unhashable"),
    "two documents": (MINIMAL + "---\n" + MINIMAL, "but found another document"),
    "undefined alias": ("a: *nope\n", "undefined alias"),
}


@pytest.mark.parametrize("case", list(HOSTILE_YAML))
def test_hostile_yaml_is_one_line(tmp_path, case):
    text, fragment = HOSTILE_YAML[case]
    message = config_error(write(tmp_path, text))
    assert fragment in message and len(message) < 500, message


def test_binary_and_non_utf8_files(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00")
    assert config_error(str(path)).endswith("Config file could not be read: the file is binary, not YAML text "
                                            "(it contains NUL bytes).")
    path.write_bytes(b"behaviors: \xff\xfe\n")
    assert "not UTF-8 text (byte 0xff at offset 11)" in config_error(str(path))
    assert "could not be read (Is a directory)" in config_error(str(tmp_path))
    if os.path.exists("/bin/ls"):
        assert "binary" in config_error("/bin/ls")


def test_values_are_shown_truncated(tmp_path):
    long = "x" * 100_000
    message = config_error(write(tmp_path, hyper(f"{{learning_rate: {long}}}")))
    assert "hyperparameters.learning_rate ('xxxx" in message and len(message) < 300
    message = config_error(write(tmp_path, MINIMAL + f"{long}: 1\n"))
    assert len(message) < 500
    message = config_error(write(tmp_path, behavior_yaml("hyperparameters: [" + ", ".join(["[1, 2]"] * 1000) + "]")))
    assert message.count("[") < 20 and len(message) < 300
    message = config_error(write(tmp_path, behavior_yaml("trainer_type: " + long)))
    assert "Invalid trainer type xxx" in message and len(message) < 300


def test_show_is_short_and_safe():
    recursive: list = []
    recursive.append(recursive)
    assert show(recursive) == "[[[[...]]]]"
    assert show(10**5000) == "<an integer of ~5001 digits>" and show(10**1000 - 1) == "<an integer of ~1000 digits>"
    assert show(-(10**200)).startswith("-<an integer")
    assert show("a\nb") == "'a\\nb'" and len(show("x" * 10_000)) <= 60
    assert show(1.5) == "1.5" and show("abc") == "'abc'"


def test_environment_parameters_are_constants_or_mappings(tmp_path):
    def load(params: str):
        return load_run_settings(write(tmp_path, MINIMAL + f"environment_parameters: {params}\n"))

    assert load("{max_episode_steps: 500, random_spawn: true, action_mode: wheels, x: .nan}").environment_parameters[
        "action_mode"] == "wheels"
    sampler = "{sampler_type: uniform, sampler_parameters: {min_value: 1, max_value: 2}}"
    assert load(f"{{radius: {sampler}}}").environment_parameters["radius"]["sampler_type"] == "uniform"
    for params, fragment in [("{x: [1, 2]}", "environment_parameters.x ([1, 2]) must be a number"),
                             ("{x: null}", "environment_parameters.x (None)"),
                             ("{1: 2}", "environment_parameters.1: parameter names must be strings"),
                             ("{x: " + "9" * 400 + "}", "too large for a number"),
                             ("[1, 2]", "environment_parameters ([1, 2]) must be a mapping")]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            load(params)
