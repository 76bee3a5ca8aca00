"""``environment_parameters`` on a Unity build: ML-Agents' side-channel messages and seeds, the stand-in's draws as
Unity's samplers make them, and curricula on ``rlrobot-learn --env`` (lessons, TensorBoard, ``--resume``)."""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "envs"))  # unity_ports
from test_cli import event_tags  # noqa: E402
from unity_ports import free_base_port, no_leftover_players, standin_build  # noqa: E402,F401

from envs.standin import wire  # noqa: E402
from envs.standin.samplers import (  # noqa: E402
    MBIG,
    DotNetRandom,
    SamplerMessage,
    gaussian_sampler,
    multirange_sampler,
    uniform_sampler,
)
from envs.unity import ParameterSampler, UnityBatchEnv, send_parameter  # noqa: E402
from envs.unity_compat import install_protobuf_compat  # noqa: E402
from rlrobot.cli import main as learn_main  # noqa: E402
from rlrobot.run import RunError  # noqa: E402
from rlrobot.unity_parameters import UnityParameters, side_channel_value  # noqa: E402

install_protobuf_compat()
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel  # noqa: E402

UNIFORM = {"sampler_type": "uniform", "sampler_parameters": {"min_value": 40, "max_value": 60}}
RAW = {
    "goal_reward": 12,                                                                            # seed + 0
    "near_penalty": {"sampler_type": "gaussian", "sampler_parameters": {"mean": -5.0, "st_dev": 0.5}},  # + 1
    "spawn_jitter": {"sampler_type": "multirangeuniform",
                     "sampler_parameters": {"intervals": [[0.0, 0.2], [0.4, 0.5]]}},            # + 2
    "step_reward": {"sampler_type": "constant", "sampler_parameters": {"value": -0.01}},          # + 3
    "max_episode_steps": {"curriculum": [                                                         # + 4, + 5
        {"name": "short", "value": 30,
         "completion_criteria": {"behavior": "MobileRobot", "measure": "progress", "threshold": 0.3,
                                 "require_reset": True}},
        {"name": "sampled", "value": UNIFORM}]},
}


def _key(key: str) -> bytes:
    return struct.pack("<i", len(key)) + key.encode("ascii")


def test_side_channel_messages_carry_ml_agents_values_and_seeds():
    """Every lesson of every parameter, constants included, gets run_seed + offset in YAML order (ML-Agents'
    _set_sampler_seeds); constants go as floats, samplers with their type, seed and arguments."""
    parameters = UnityParameters(RAW, run_seed=7)
    assert parameters.seeds == {"goal_reward": (7,), "near_penalty": (8,), "spawn_jitter": (9,), "step_reward": (10,),
                                "max_episode_steps": (11, 12)}
    assert parameters.values() == {
        "goal_reward": 12.0, "near_penalty": ParameterSampler("gaussian", (-5.0, 0.5), 8),
        "spawn_jitter": ParameterSampler("multirangeuniform", ((0.0, 0.2), (0.4, 0.5)), 9),
        "step_reward": -0.01, "max_episode_steps": 30.0}
    lesson = parameters.parameters["max_episode_steps"].lessons[1]
    assert side_channel_value(lesson, 12) == ParameterSampler("uniform", (40.0, 60.0), 12)
    channel = EnvironmentParametersChannel()
    for key, value in {**parameters.values(), "max_episode_steps": side_channel_value(lesson, 12)}.items():
        send_parameter(channel, key, value)
    assert [bytes(m) for m in channel.message_queue] == [
        _key("goal_reward") + struct.pack("<if", 0, 12.0),
        _key("near_penalty") + struct.pack("<iiiff", 1, 8, 1, -5.0, 0.5),
        _key("spawn_jitter") + struct.pack("<iiii4f", 1, 9, 2, 4, 0.0, 0.2, 0.4, 0.5),
        _key("step_reward") + struct.pack("<if", 0, -0.01),
        _key("max_episode_steps") + struct.pack("<iiiff", 1, 12, 0, 40.0, 60.0)]
    # ... and the stand-in reads them back as Unity's channel does.
    decoded = [wire.environment_parameter(bytes(m)) for m in channel.message_queue]
    assert decoded[1] == ("near_penalty", SamplerMessage("gaussian", 8, (-5.0, 0.5)))
    assert decoded[2][1].kind == "multirangeuniform" and decoded[2][1].seed == 9
    assert decoded[2][1].args == pytest.approx((0.0, 0.2, 0.4, 0.5))
    assert decoded[4] == ("max_episode_steps", SamplerMessage("uniform", 12, (40.0, 60.0)))


def test_a_value_the_channel_cannot_carry_is_one_line_in_ml_agents_words():
    with pytest.raises(RunError, match=r"^environment_parameters.action_mode: Unsupported parameter randomization "
                                       r"configuration 'wheels'.$"):
        UnityParameters({"action_mode": "wheels"}, run_seed=0)


def test_the_standin_draws_as_unity_samplers_do():
    """System.Random as .NET seeds it (dotnet/runtime's reference sequences), and the samplers built on it."""
    for seed, first in ((0, [1559595546, 1755192844, 1649316166]), (1, [534011718, 237820880, 1002897798]),
                        (2, [1655911537, 867932563, 356479430]), (-1, [534011718, 237820880, 1002897798])):
        rng = DotNetRandom(seed)
        assert [rng.next_int() for _ in range(3)] == first
    draw = uniform_sampler(5.0, 15.0, 0)
    assert draw() == float(np.float32(5) + np.float32(1559595546 / MBIG) * np.float32(10))
    gauss = gaussian_sampler(2.0, 0.5, 3)
    values = np.array([gauss() for _ in range(4000)])
    assert abs(values.mean() - 2.0) < 0.05 and abs(values.std() - 0.5) < 0.05
    multi = multirange_sampler([0.0, 1.0, 10.0, 13.0], 5)   # interval 2 is 3x as long: 3/4 of the draws
    values = np.array([multi() for _ in range(4000)])
    assert ((values >= 0) & (values < 1) | (values >= 10) & (values < 13)).all()
    assert abs((values >= 10).mean() - 0.75) < 0.03


def test_the_standin_draws_a_new_value_at_every_episode_begin(standin_build):
    """One agent, zero actions: each episode runs max_episode_steps = (int) of a fresh uniform draw, the sequence
    Unity's sampler with that seed makes (re-sent before the reset, so it starts again there)."""
    sampler = ParameterSampler("uniform", (4.0, 12.0), 11)
    with UnityBatchEnv(str(standin_build), base_port=free_base_port(), timeout_wait=10,
                       additional_args=("--agents", "1"), environment_parameters={"max_episode_steps": sampler}) as env:
        env.reset()
        lengths, length = [], 0
        for _ in range(80):
            length += 1
            if env.step(np.zeros((1, 2), np.float32)).truncated[0]:
                lengths.append(length)
                length = 0
    draw = uniform_sampler(4.0, 12.0, 11)
    expected = [int(draw()) for _ in lengths]
    assert lengths == expected and len(lengths) >= 8
    assert all(4 <= n < 12 for n in lengths) and len(set(lengths)) >= 3


CONFIG = """
behaviors:
  MobileRobot:
    trainer_type: ppo
    hyperparameters: {{batch_size: 128, buffer_size: 512, learning_rate: 0.001, num_epoch: 1}}
    network_settings: {{normalize: true, hidden_units: 16, num_layers: 1}}
    max_steps: {max_steps}
    time_horizon: 32
    summary_freq: 512
    checkpoint_interval: 1024
env_settings: {{seed: 3, timeout_wait: 10, env_args: ["--agents", "16"]}}
environment_parameters: {parameters}
"""


def learn(tmp_path: Path, build: Path, max_steps: int, *args: str) -> int:
    config = tmp_path / "unity.yaml"
    config.write_text(CONFIG.format(max_steps=max_steps, parameters=json.dumps(RAW)))
    return learn_main([str(config), "--run-id=c", "--env", str(build), "--base-port", str(free_base_port()),
                       "--results-dir", str(tmp_path / "results"), *args])


def test_a_curriculum_on_a_build_moves_resets_and_resumes(tmp_path, standin_build, capsys):
    """progress > 0.3 at the summary of step 1024 (of 2048): lesson 'sampled' starts with a reset of the player,
    which then draws max_episode_steps from the uniform sampler (seed 3 + 5). --resume continues in that lesson.
    Samplers of every type and a curriculum on --env: the old "only constant numbers" refusal is gone."""
    assert learn(tmp_path, standin_build, 2048) == 0
    out = capsys.readouterr().out
    assert "Parameter 'max_episode_steps' is in lesson 'sampled' and has value 'Uniform sampler: min=40.0, " \
           "max=60.0'." in out and "a completed lesson asks for require_reset" in out
    run = tmp_path / "results" / "c"
    tag = "Environment/Lesson Number/max_episode_steps"
    lines = [json.loads(line) for line in (run / "MobileRobot" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line[tag]) for line in lines] == [(512, 0), (1024, 0), (1536, 1), (2048, 1)]
    assert all(line["Environment/Lesson Number/near_penalty"] == 0 for line in lines)
    assert tag in event_tags(run / "MobileRobot")
    assert lines[0]["Environment/Episode Length"] <= 29   # lesson 'short': 30 steps at most
    status = json.loads((run / "run_logs" / "training_status.json").read_text())
    assert status["max_episode_steps"] == {"lesson_num": 1} and status["near_penalty"] == {"lesson_num": 0}
    log = (run / "run_logs" / "Player-0.log").read_text()
    for line in ("goal_reward: 10.0 -> 12.0", "near_penalty: gaussian sampler mean=-5 st_dev=0.5 seed=4",
                 "spawn_jitter: multirangeuniform sampler intervals=[[0.0, 0.20000000298023224], [0.4000000059604645, "
                 "0.5]] seed=5", "step_reward: -0.005 -> -0.009999999776482582",
                 "max_episode_steps: 1000 -> 30", "max_episode_steps: uniform sampler min=40 max=60 seed=8"):
        assert line in log, line
    after = log[log.index("max_episode_steps: uniform sampler"):]
    assert after.count("RESET") == 1   # the lesson's require_reset
    drawn = [float(x.split("drawn ")[1]) for x in after.splitlines() if "max_episode_steps drawn" in x]
    assert len(drawn) >= 16 and all(40 <= x < 60 for x in drawn) and len(set(drawn)) == len(drawn)

    assert learn(tmp_path, standin_build, 3072, "--resume") == 0
    out = capsys.readouterr().out
    assert "Parameter 'max_episode_steps' is in lesson 'sampled'" in out.split("Step: 2560")[0]
    lines = [json.loads(line) for line in (run / "MobileRobot" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line[tag]) for line in lines][-2:] == [(2560, 1), (3072, 1)]
    resumed = (run / "run_logs" / "Player-0.log").read_text().split("MobileRobot protocol stand-in, argv")[-1]
    assert "max_episode_steps: uniform sampler min=40 max=60 seed=8" in resumed   # restored before the first reset
