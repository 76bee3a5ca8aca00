"""The Unity adapter (envs.unity) against the stand-in player, launched as a process through mlagents-envs."""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # unity_ports
from unity_ports import free_base_port, no_leftover_players, standin_build  # noqa: E402,F401

from envs.unity import UnityBatchEnv, UnityError, UnityVectorEnv, check_policy_sizes  # noqa: E402


def steer(obs: np.ndarray) -> np.ndarray:
    """Turn toward the goal (obs[0] > 0: goal to the left; a1 > 0 turns right), drive once roughly facing it."""
    bearing = obs[:, 0]
    return np.stack([np.where(np.abs(bearing) < 0.15, 1.0, 0.2), np.clip(-6.0 * bearing, -1.0, 1.0)], 1).astype(np.float32)


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
    with pytest.raises(UnityError, match=r"crashed while stepping: return code -9 \(SIGKILL\)"):
        env.step(zeros)
    with pytest.raises(UnityError, match="closed"):
        env.step(zeros)
    env.close()


def test_hang_times_out(standin_build):
    env = open_env(standin_build, "--hang-after", "1", timeout_wait=10)
    env.reset()
    zeros = np.zeros((8, 2), np.float32)
    env.step(zeros)
    start = time.monotonic()
    with pytest.raises(UnityError, match="did not answer within 10 s while stepping"):
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
