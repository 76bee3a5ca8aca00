"""The Gymnasium/SB3 wrappers of the NumPy robot and the SB3 PPO baseline (``benchmarks/gym_robot.py``,
``benchmarks/sb3_ppo.py``) and the time-to-solve helpers they use (``benchmarks/solving.py``); skipped without
gymnasium or stable-baselines3."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from benchmarks.gym_robot import RobotEnv, RobotVecEnv  # noqa: E402
from benchmarks.sb3_ppo import SolveCallback, make_model, sb3_settings, time_to_solve  # noqa: E402
from benchmarks.solving import EpisodeLog, first_episodes_numpy, solved_from  # noqa: E402
from envs.numpy_robot import NumpyMobileRobot  # noqa: E402

FAST = "configs/MobileRobot-fast.yaml"


def test_single_robot_env_passes_gymnasiums_checker():
    env = RobotEnv(slot=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's complaints are warnings: none allowed
        check_env(env, skip_render_check=True)
    first, _ = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(first, again)
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0], np.float32))
    assert obs.shape == (19,) and isinstance(reward, float) and not (terminated or truncated)


def test_vec_env_takes_the_numpy_ports_transitions():
    n, rng = 16, np.random.default_rng(0)
    vec, port = RobotVecEnv(n, seed=3), NumpyMobileRobot(n, seed=3)
    np.testing.assert_array_equal(vec.reset(), port.reset())
    ended = {"terminated": 0, "truncated": 0}
    for _ in range(port.max_episode_steps + 5):  # long enough for goals and time limits
        actions = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        obs, reward, done, infos = vec.step(actions)
        p_obs, p_reward, terminated, truncated, final_obs = port.step(actions)
        np.testing.assert_array_equal(obs, p_obs)
        np.testing.assert_array_equal(reward, p_reward)
        np.testing.assert_array_equal(done, terminated | truncated)
        for i in range(n):
            assert ("terminal_observation" in infos[i]) == done[i]
            if done[i]:
                np.testing.assert_array_equal(infos[i]["terminal_observation"], final_obs[i])
                assert infos[i]["TimeLimit.truncated"] == truncated[i] and infos[i]["is_success"] == terminated[i]
        ended["terminated"] += int(terminated.sum())
        ended["truncated"] += int(truncated.sum())
    assert ended["terminated"] > 0 and ended["truncated"] > 0


def test_vec_env_seed_reseeds_the_spawns():
    vec = RobotVecEnv(8, seed=0)
    vec.seed(7)
    np.testing.assert_array_equal(vec.reset(), NumpyMobileRobot(8, seed=7).reset())


def test_settings_follow_the_config():
    s = sb3_settings(FAST)
    p = s["ppo"]
    assert s["num_envs"] == 512 and p["n_steps"] == 32 and p["batch_size"] == 512 and p["n_epochs"] == 3
    assert p["gamma"] == 0.99 and p["gae_lambda"] == 0.95 and p["ent_coef"] == pytest.approx(0.001 / 2)
    assert p["policy_kwargs"]["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}
    assert p["learning_rate"](1.0) == pytest.approx(1e-3) and p["learning_rate"](0.0) == pytest.approx(1e-10)
    assert p["clip_range"](0.5) == pytest.approx(0.15)


def test_a_tiny_sb3_run_learns_and_logs_a_curve():
    s = sb3_settings(FAST, num_envs=16)
    s["ppo"].update(n_steps=16, batch_size=64)
    model = make_model(s, seed=0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    log = EpisodeLog(16)
    callback = SolveCallback(log, time.perf_counter(), 60.0, s["beta"], max_steps=512)
    model.learn(total_timesteps=512, callback=callback)
    assert model.num_timesteps == 512 and len(log.curve) == 2 and log.curve[-1]["step"] == 512
    assert model.ent_coef < s["ppo"]["ent_coef"]  # the entropy weight decays with the steps
    assert any(not np.array_equal(a, b.detach()) for a, b in zip(before, model.policy.parameters()))


def test_time_to_solve_gives_a_curve_and_a_validation():
    r = time_to_solve(FAST, seed=0, budget_s=120.0, max_steps=16384, threads=1)  # one update: 512 robots x 32 steps
    assert r["steps"] == 16384 and len(r["curve"]) == 1 and r["curve"][0]["seconds"] > 0
    assert r["final"]["episodes"] + r["final"]["unfinished"] == 1000 and not r["out_of_time"]


def test_episode_log_and_solved_from():
    log = EpisodeLog(2)
    log.record(np.array([1.0, -1.0]), np.array([False, False]), np.array([False, False]))
    log.record(np.array([9.0, -1.0]), np.array([True, False]), np.array([False, True]))
    assert log.summary(2, 0.5) == {"step": 2, "seconds": 0.5, "success_rate": 0.5, "mean_reward": 4.0}
    assert log.summary(4, 1.0)["success_rate"] is None  # no episode ended since
    curve = [{"success_rate": s, "mean_reward": r, "seconds": i + 1}
             for i, (s, r) in enumerate([(1.0, 9.0), (0.5, 9.0), (1.0, 8.0), (0.995, 7.9)])]
    assert solved_from(curve)["seconds"] == 3 and solved_from(curve[:2]) is None


def test_numpy_validation_counts_first_episodes():
    summary = first_episodes_numpy(lambda obs: np.zeros((obs.shape[0], 2), np.float32), episodes=16, max_steps=1000)
    assert summary["episodes"] == 16 and summary["success_rate"] == 0.0  # standing still never reaches the goal
