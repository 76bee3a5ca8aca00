"""The Unity adapter (envs.unity) against the stand-in player, launched as a process through mlagents-envs."""
from __future__ import annotations

import ast
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # unity_ports
from unity_ports import free_base_port, no_leftover_players, standin_build  # noqa: E402,F401

from envs.unity import PlayerFailure, RestartBudget, UnityBatchEnv, UnityError, UnityVectorEnv, check_policy_sizes  # noqa: E402


def steer(obs: np.ndarray) -> np.ndarray:
    """Turn toward the goal (obs[0] > 0: goal to the left; a1 > 0 turns right), drive once roughly facing it."""
    bearing = obs[:, 0]
    return np.stack([np.where(np.abs(bearing) < 0.15, 1.0, 0.2), np.clip(-6.0 * bearing, -1.0, 1.0)],
                    1).astype(np.float32)


def open_env(build: Path, *args: str, **kwargs) -> UnityBatchEnv:
    kwargs.setdefault("timeout_wait", 10)
    return UnityBatchEnv(str(build), base_port=free_base_port(), additional_args=args, **kwargs)


def drive(env, steps: int):
    """Steer every slot for ``steps`` steps; returns the UnitySteps."""
    obs, outs = env.reset(), []
    for _ in range(steps):
        outs.append(env.step(steer(obs)))
        obs = outs[-1].obs
    return outs


def check_ends(outs) -> int:
    """Goals reached; every ended slot's final_obs differs from its new obs, the others' are equal."""
    goals = 0
    for out in outs:
        done = out.terminated | out.truncated
        assert not (out.terminated & out.truncated).any()
        assert np.array_equal(out.final_obs[~done], out.obs[~done])
        for slot in np.flatnonzero(done):
            assert not np.array_equal(out.final_obs[slot], out.obs[slot])
        assert (out.reward[out.terminated] > 9.0).all()
        goals += int(out.terminated.sum())
    return goals


def test_specs_shapes_goals_with_shuffled_order(standin_build):
    with open_env(standin_build, "--shuffle-order", behavior="MobileRobot") as env:
        assert (env.behavior_name, env.brain_name) == ("MobileRobot?team=0", "MobileRobot")
        assert (env.observation_size, env.action_size, env.num_agents) == (19, 2, 8)
        obs = env.reset()
        assert obs.shape == (8, 19) and obs.dtype == np.float32
        outs = drive(env, 80)
        out = outs[0]
        assert out.obs.shape == out.final_obs.shape == (8, 19) and out.obs.dtype == out.final_obs.dtype == np.float32
        assert out.reward.shape == out.terminated.shape == out.truncated.shape == (8,)
        assert out.reward.dtype == np.float32 and out.terminated.dtype == out.truncated.dtype == bool
        goals = check_ends(outs)
        assert goals >= 16  # actions reach the right robot although the order changes every message
        reached = env.pop_stats()["Environment/GoalReached"]
        assert len(reached) == goals and reached[0] == (1.0, "sum") and env.pop_stats() == {}


def test_decision_period_accumulates_and_drops_the_idle_rewards(standin_build):
    """Period 3, episodes of 7 Academy steps, zero actions: ends happen between decisions (step 7, decision at 9)."""
    params = {"max_episode_steps": 7, "near_penalty": 0.0}
    with open_env(standin_build, "--decision-period", "3", environment_parameters=params) as env:
        env.reset()
        zeros = np.zeros((8, 2), np.float32)
        outs = [env.step(zeros) for _ in range(5)]
    rewards = [out.reward for out in outs]
    assert np.allclose(rewards[0], -0.015) and np.allclose(rewards[1], -0.015)   # 3 Academy steps each
    assert outs[2].truncated.all() and not outs[2].terminated.any()               # ended at step 7 ...
    assert np.allclose(rewards[2], -0.005)                                        # ... idled at 8, 9: dropped
    assert np.allclose(rewards[3], -0.015) and not outs[3].truncated.any()        # new episode: steps 10-12
    assert outs[4].truncated.all() and np.allclose(rewards[4], -0.010)            # t = 7 at step 14
    assert not np.array_equal(outs[2].final_obs, outs[2].obs)


def test_decision_period_with_controller(standin_build):
    with open_env(standin_build, "--decision-period", "2", "--shuffle-order") as env:
        assert check_ends(drive(env, 50)) >= 8
        assert env.dropped_episodes == 0


def test_max_step_reached_is_truncated_and_parameters_apply_midrun(standin_build):
    with open_env(standin_build, environment_parameters={"max_episode_steps": 5}) as env:
        env.reset()
        zeros = np.zeros((8, 2), np.float32)
        outs = [env.step(zeros) for _ in range(5)]
        assert not any(out.truncated.any() for out in outs[:4])
        assert outs[4].truncated.all() and not outs[4].terminated.any()
        env.set_environment_parameters({"max_episode_steps": 2})  # sent with the next step
        outs = [env.step(zeros) for _ in range(2)]
        assert outs[1].truncated.all()


def test_vector_env_concatenates_players(standin_build):
    base = free_base_port(2)
    with UnityVectorEnv(str(standin_build), num_envs=2, base_port=base, timeout_wait=10,
                        additional_args=("--agents", "3")) as env:
        assert (env.num_agents, env.observation_size, env.action_size) == (6, 19, 2)
        assert env.brain_name == "MobileRobot"
        obs = env.reset()
        assert obs.shape == (6, 19)
        outs = drive(env, 40)
        assert outs[-1].obs.shape == outs[-1].final_obs.shape == (6, 19)
        assert check_ends(outs) >= 6


def test_crash_is_reported(standin_build):
    env = open_env(standin_build, "--crash-after", "3")
    env.reset()
    zeros = np.zeros((8, 2), np.float32)
    for _ in range(3):
        env.step(zeros)
    with pytest.raises(PlayerFailure, match=r"crashed while stepping: return code -9 \(SIGKILL\)") as failure:
        env.step(zeros)
    assert failure.value.workers == (0,)
    with pytest.raises(UnityError, match="closed") as closed:
        env.step(zeros)
    assert not isinstance(closed.value, PlayerFailure)
    env.close()


def test_hang_times_out(standin_build):
    env = open_env(standin_build, "--hang-after", "1", timeout_wait=10)
    env.reset()
    zeros = np.zeros((8, 2), np.float32)
    env.step(zeros)
    start = time.monotonic()
    with pytest.raises(PlayerFailure, match="did not answer within 10 s while stepping"):
        env.step(zeros)
    assert time.monotonic() - start < 14  # and the player was killed at once, not after another timeout_wait


def test_busy_port_and_missing_build(standin_build, tmp_path):
    port = free_base_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("localhost", port))
        taken.listen()
        with pytest.raises(UnityError, match=f"port {port} .*is busy"):
            UnityBatchEnv(str(standin_build), base_port=port)
    with pytest.raises(UnityError, match="Unity build not found: .*nowhere"):
        UnityBatchEnv(str(tmp_path / "nowhere" / "MobileRobot.x86_64"), base_port=free_base_port())
    mangled = tmp_path / "robot.apps"
    mangled.mkdir()
    (mangled / "MobileRobot.x86_64").write_bytes(standin_build.read_bytes())
    with pytest.raises(UnityError, match="strips '.app'"):
        UnityBatchEnv(str(mangled / "MobileRobot.x86_64"), base_port=free_base_port())


def test_unknown_behavior_lists_the_builds(standin_build):
    with pytest.raises(UnityError, match=r"behavior Walker not found; the build has MobileRobot\?team=0"):
        open_env(standin_build, behavior="Walker")


def test_check_policy_sizes_names_both_sizes():
    env = SimpleNamespace(behavior_name="MobileRobot?team=0", observation_size=19, action_size=2)
    check_policy_sizes(env, 19, 2, "the policy")
    with pytest.raises(UnityError, match="the policy take 22 observations and 2 actions, but .* has 19 observations"):
        check_policy_sizes(env, 22, 2, "the policy")


def engine_settings(log: Path) -> list[dict]:
    """Every ``engine settings: {...}`` the player logged, oldest first."""
    marker = "engine settings: "
    return [ast.literal_eval(line.split(marker, 1)[1]) for line in log.read_text().splitlines() if marker in line]


def test_engine_settings_graphics_and_num_areas_reach_the_player(standin_build, tmp_path):
    with open_env(standin_build, log_folder=tmp_path, no_graphics=False, num_areas=2, width=96, height=72,
                  quality_level=2, time_scale=7.5, target_frame_rate=30, capture_frame_rate=25) as env:
        assert env.num_agents == 16  # 8 robots per area
    log = tmp_path / "Player-0.log"
    assert engine_settings(log)[-1] == {"resolution": (96, 72), "quality_level": 2, "time_scale": 7.5,
                                        "target_frame_rate": 30, "capture_frame_rate": 25}
    assert "-nographics" not in log.read_text()


def test_no_graphics_monitor_shows_worker_0_only(standin_build, tmp_path):
    with UnityVectorEnv(str(standin_build), num_envs=2, base_port=free_base_port(2), timeout_wait=10,
                        no_graphics=False, no_graphics_monitor=True, log_folder=str(tmp_path),
                        additional_args=("--agents", "1")):
        pass
    assert "-nographics" not in (tmp_path / "Player-0.log").read_text()
    assert "'-nographics', '-batchmode'" in (tmp_path / "Player-1.log").read_text()
    assert engine_settings(tmp_path / "Player-1.log")[-1] == {  # mlagents-learn's defaults
        "resolution": (84, 84), "quality_level": 5, "time_scale": 20.0, "target_frame_rate": -1,
        "capture_frame_rate": 60}


def test_restart_after_a_crash_relaunches_with_the_same_settings(standin_build, tmp_path):
    env = open_env(standin_build, "--crash-after", "5", "--crash-once", str(tmp_path / "crashed"),
                   log_folder=tmp_path, time_scale=3.0)
    zeros = np.zeros((8, 2), np.float32)
    with env:
        env.reset()
        env.set_environment_parameters({"max_episode_steps": 4})  # set mid-run: the new player must get it too
        outs = [env.step(zeros) for _ in range(5)]
        assert outs[3].truncated.all()
        with pytest.raises(PlayerFailure, match="crashed while stepping") as failure:
            env.step(zeros)
        assert failure.value.workers == (0,)
        with pytest.raises(ValueError, match="only worker 0"):
            env.restart((1,))
        obs = env.restart((0,))
        assert obs.shape == (8, 19) and env.num_agents == 8
        outs = [env.step(zeros) for _ in range(8)]  # past --crash-after: the relaunched player does not crash
        assert [out.truncated.all() for out in outs] == [False, False, False, True] * 2  # the parameter came along
    assert (tmp_path / "crashed").exists()
    settings = engine_settings(tmp_path / "Player-0.log")  # the relaunched player appends to the same log
    assert len(settings) == 2 and settings[0] == settings[1] and settings[1]["time_scale"] == 3.0
    with pytest.raises(UnityError, match="closed"):
        env.restart()


def test_vector_env_names_the_failed_player_and_restarts_it(standin_build, tmp_path):
    """Both players may crash after 5 steps, but the --crash-once file lets only the first one do it."""
    with UnityVectorEnv(str(standin_build), num_envs=2, base_port=free_base_port(2), timeout_wait=10,
                        log_folder=str(tmp_path), additional_args=("--agents", "3", "--crash-after", "5",
                                                                   "--crash-once", str(tmp_path / "crashed"))) as env:
        env.reset()
        zeros = np.zeros((6, 2), np.float32)
        for _ in range(5):
            env.step(zeros)
        with pytest.raises(PlayerFailure, match="crashed while stepping") as failure:
            env.step(zeros)
        crashed = [i for i in range(2) if "killing myself" in (tmp_path / f"Player-{i}.log").read_text()]
        assert len(crashed) == 1 and failure.value.workers == tuple(crashed)
        with pytest.raises(ValueError, match="no player 2"):
            env.restart((2,))
        obs = env.restart(failure.value.workers)
        assert obs.shape == (6, 19)
        outs = drive(env, 10)
        assert outs[-1].obs.shape == (6, 19)


def test_restart_budget_follows_mlagents_quota():
    now = [0.0]
    budget = RestartBudget(max_lifetime_restarts=3, rate_limit_n=2, rate_limit_period_s=60.0, clock=lambda: now[0])
    assert budget.allow(0) and budget.allow(0)
    assert not budget.allow(0)           # 2 within 60 s
    assert budget.allow(1)               # per worker
    now[0] = 60.0                        # the first two are no longer *within* the last 60 s
    assert budget.allow(0)
    now[0] = 200.0
    assert not budget.allow(0)           # lifetime: 3 restarts done
    unlimited = RestartBudget(max_lifetime_restarts=-1, rate_limit_n=-1, rate_limit_period_s=1.0, clock=lambda: 0.0)
    assert all(unlimited.allow(0) for _ in range(100))
    never = RestartBudget(max_lifetime_restarts=0, rate_limit_n=-1, rate_limit_period_s=1.0, clock=lambda: 0.0)
    assert not never.allow(0)


def test_several_sensors_are_concatenated(standin_build):
    with open_env(standin_build, "--sensors", "1,18", seed=7) as split, open_env(standin_build, seed=7) as whole:
        assert (split.observation_sizes, split.observation_size) == ((1, 18), 19)
        assert (whole.observation_sizes, whole.observation_size) == ((19,), 19)
        for a, b in zip(drive(split, 5), drive(whole, 5)):
            assert np.array_equal(a.obs, b.obs) and np.array_equal(a.reward, b.reward)
