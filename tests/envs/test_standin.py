"""The stand-in player, seen through the real mlagents-envs ``UnityEnvironment`` exactly as a Unity build is."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # unity_ports
from unity_ports import free_base_port, no_leftover_players, standin_build  # noqa: E402,F401

from envs.standin.__main__ import main as standin_main  # noqa: E402
from envs.standin.build import LAUNCHER_NAME, write_launcher  # noqa: E402
from envs.unity_compat import install_protobuf_compat  # noqa: E402

install_protobuf_compat()

from mlagents_envs.base_env import ActionTuple, DimensionProperty  # noqa: E402
from mlagents_envs.environment import UnityEnvironment  # noqa: E402
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel  # noqa: E402
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel  # noqa: E402

BEHAVIOR = "MobileRobot?team=0"


def steer(obs: np.ndarray) -> np.ndarray:
    """Turn toward the goal (obs[0] > 0: goal to the left; a1 > 0 turns right), drive once roughly facing it."""
    bearing = obs[:, 0]
    return np.stack([np.where(np.abs(bearing) < 0.15, 1.0, 0.2), np.clip(-6.0 * bearing, -1.0, 1.0)],
                    1).astype(np.float32)


def open_env(build: Path, *args: str, log_folder: Path | None = None, parameters: dict | None = None, **kwargs):
    channel = EnvironmentParametersChannel()
    for key, value in (parameters or {}).items():
        channel.set_float_parameter(key, value)
    engine = EngineConfigurationChannel()
    engine.set_configuration_parameters(time_scale=20.0)
    return UnityEnvironment(str(build), base_port=free_base_port(), no_graphics=True, timeout_wait=10,
                            additional_args=list(args), side_channels=[engine, channel],
                            log_folder=None if log_folder is None else str(log_folder), **kwargs)


def test_handshake_specs_double_report_and_clean_exit(standin_build, tmp_path):
    """Launched by its extension-less path with num_areas=2; ends come as done + new decision with one id."""
    env = open_env(standin_build.with_suffix(""), "--shuffle-order", "--unknown-unity-flag", log_folder=tmp_path,
                   parameters={"goal_radius": 0.6, "no_such_key": 1.0}, num_areas=2)
    process = env._process
    try:
        assert list(env.behavior_specs) == []  # specs come with the first agents, after the reset
        env.reset()
        spec = env.behavior_specs[BEHAVIOR]
        (obs_spec,) = spec.observation_specs
        assert obs_spec.shape == (19,) and obs_spec.dimension_property == (DimensionProperty.NONE,)
        assert spec.action_spec.continuous_size == 2 and spec.action_spec.discrete_size == 0
        decisions, _ = env.get_steps(BEHAVIOR)
        assert sorted(decisions.agent_id) == list(range(16))  # 8 agents x num_areas 2
        goals = 0
        for _ in range(60):
            env.set_actions(BEHAVIOR, ActionTuple(continuous=steer(decisions.obs[0])))
            env.step()
            decisions, terminals = env.get_steps(BEHAVIOR)
            assert len(decisions) == 16
            assert set(terminals.agent_id) <= set(decisions.agent_id)
            for i, agent in enumerate(terminals.agent_id):
                new_obs = decisions.obs[0][decisions.agent_id_to_index[agent]]
                assert not terminals.interrupted[i] and terminals.reward[i] > 9.0
                assert not np.array_equal(terminals.obs[0][i], new_obs)
                assert decisions.reward[decisions.agent_id_to_index[agent]] == 0.0
            goals += len(terminals)
        assert goals >= 8
    finally:
        env.close()
    assert process.returncode == 0
    log = (tmp_path / "Player-0.log").read_text()
    assert "-nographics" in log and "--mlagents-port" in log
    assert "time_scale = 20" in log and "goal_radius: 0.5 -> 0.6" in log
    assert "no_such_key" in log and "--unknown-unity-flag" in log


def test_decision_period_and_max_step(standin_build):
    """Period 2, max 3 steps, zero actions: decide (step 2), end alone (step 3), decide again (step 4)."""
    env = open_env(standin_build, "--decision-period", "2", "--agents", "3",
                   parameters={"max_episode_steps": 3, "near_penalty": 0.0})
    try:
        env.reset()
        seen = []
        for _ in range(3):
            env.step()
            decisions, terminals = env.get_steps(BEHAVIOR)
            seen.append((len(decisions), len(terminals), list(terminals.interrupted)))
            # -0.005 per Academy step since the agent last reported (the new episode idles at step 4)
            assert np.allclose(decisions.reward, -0.010 if len(seen) == 1 else -0.005)
            assert np.allclose(terminals.reward, -0.005)
        assert seen == [(3, 0, []), (0, 3, [True] * 3), (3, 0, [])]
    finally:
        env.close()


def test_player_exits_nonzero_without_trainer(standin_build):
    result = subprocess.run([str(standin_build), "--mlagents-port", str(free_base_port()), "--connect-timeout", "0.5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "connection to the trainer" in result.stderr


def test_build_command(tmp_path, capsys):
    assert standin_main(["build", str(tmp_path / "out")]) == 0
    launcher = Path(capsys.readouterr().out.strip())
    assert launcher == tmp_path / "out" / LAUNCHER_NAME and launcher.stat().st_mode & 0o111
    assert "-m envs.standin play" in launcher.read_text()
    with pytest.raises(ValueError, match="strips '.app'"):
        write_launcher(tmp_path / "my.apps")


def test_sensors_are_sent_as_separate_observations(standin_build):
    env = open_env(standin_build, "--sensors", "1,18", "--agents", "2")
    try:
        env.reset()
        specs = env.behavior_specs[BEHAVIOR].observation_specs
        assert [(s.shape, s.name) for s in specs] == [((1,), "VectorSensor0_size1"), ((18,), "VectorSensor1_size18")]
        decisions, _ = env.get_steps(BEHAVIOR)
        assert [o.shape for o in decisions.obs] == [(2, 1), (2, 18)]
    finally:
        env.close()


@pytest.mark.parametrize("args, problem", [
    (["--crash-once", "x"], "--crash-once needs --crash-after"),
    (["--sensors", "1,17"], "--sensors 1,17: the sizes must be positive and add up to 19"),
    (["--sensors", "0,19"], "the sizes must be positive"),
])
def test_bad_player_options_exit_2(standin_build, args, problem):
    result = subprocess.run([str(standin_build), "--mlagents-port", "1", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and problem in result.stderr


def test_obstacle_course_served_with_the_jax_scene(tmp_path):
    """``build --scene MobileRobotObstacles``: a 22-observation behavior still named MobileRobot (as Unity's s7
    build), whose transitions are the JAX scene's own (s7 starts each arena at a fixed spot, so they match exactly)."""
    import jax

    import envs

    build = write_launcher(tmp_path / "s7", scene="MobileRobotObstacles")
    env = open_env(build)
    scene = envs.make("MobileRobotObstacles")
    try:
        env.reset()
        (obs_spec,) = env.behavior_specs[BEHAVIOR].observation_specs
        assert obs_spec.shape == (22,)
        decisions, _ = env.get_steps(BEHAVIOR)
        order = np.argsort(decisions.agent_id)
        obs, state = scene.reset_batch(jax.random.PRNGKey(0), None, 8)
        np.testing.assert_allclose(decisions.obs[0][order], np.asarray(obs), atol=1e-5)
        actions = np.tile(np.array([[1.0, 0.5]], np.float32), (8, 1))
        for _ in range(5):
            env.set_actions(BEHAVIOR, ActionTuple(continuous=actions))
            env.step()
            obs, state, *_ = scene.step_batch(jax.random.PRNGKey(1), state, actions)
        decisions, _ = env.get_steps(BEHAVIOR)
        np.testing.assert_allclose(decisions.obs[0][np.argsort(decisions.agent_id)], np.asarray(obs), atol=1e-5)
    finally:
        env.close()


def test_unknown_scene_is_refused(tmp_path, capsys):
    assert standin_main(["build", str(tmp_path / "x"), "--scene", "NoSuchScene"]) == 2
    assert "NoSuchScene: not a built-in scene; known: MobileRobot" in capsys.readouterr().err
