"""The NumPy port of MobileRobot (``envs/numpy_robot.py``) takes the same transitions as the JAX env."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.mobile_robot import S6_FREE_AREA, MobileRobot, MobileRobotState
from envs.numpy_robot import NumpyMobileRobot

OBS_ATOL = 1e-4
POS_ATOL = 1e-4
THRESHOLD_MARGIN = 1e-3  # metres: rays this close to the 2 m threshold may round either way


@pytest.fixture(scope="module")
def setup():
    env = MobileRobot()
    params = env.default_params.replace(max_episode_steps=10**6)  # no time limit inside the comparisons
    step = jax.jit(jax.vmap(lambda s, a: env.step_env(None, s, a, params)))
    return env, params, step


def jax_state(pos, yaw, goal, slot, t) -> MobileRobotState:
    return MobileRobotState(pos=jnp.asarray(pos, jnp.float32), yaw=jnp.asarray(yaw, jnp.float32),
                            goal=jnp.asarray(goal, jnp.float32), slot=jnp.asarray(slot, jnp.int32),
                            t=jnp.asarray(t, jnp.int32))


def yaw_difference(a, b) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


def clear_of_threshold(obs: np.ndarray, params) -> np.ndarray:
    """Robots none of whose rays is within ``THRESHOLD_MARGIN`` of the near distance (where the reward is exact)."""
    distances = obs[:, 1:] * params.ray_length
    return ~np.any(np.abs(distances - params.near_distance) < THRESHOLD_MARGIN, axis=1)


def assert_same_step(numpy_out, jax_out, params, mask=None):
    obs, pos, yaw, t, reward, terminated, truncated = numpy_out
    j_obs, j_state, j_reward, j_terminated, j_truncated = jax.tree.map(np.asarray, jax_out)
    mask = np.ones(len(obs), bool) if mask is None else mask
    np.testing.assert_allclose(obs[mask], j_obs[mask], atol=OBS_ATOL, rtol=0)
    np.testing.assert_allclose(pos[mask], j_state.pos[mask], atol=POS_ATOL, rtol=0)
    assert yaw_difference(yaw, j_state.yaw)[mask].max(initial=0.0) < 1e-3
    np.testing.assert_array_equal(t[mask], j_state.t[mask])
    exact = mask & clear_of_threshold(j_obs, params)
    assert exact.sum() > 0.9 * mask.sum()
    np.testing.assert_array_equal(terminated[exact], j_terminated[exact])
    np.testing.assert_array_equal(truncated[exact], j_truncated[exact])
    np.testing.assert_allclose(reward[exact], j_reward[exact], atol=1e-5, rtol=0)


def test_reset_observation_matches(setup):
    env, params, _ = setup
    j_obs, state = env.reset_batch(jax.random.PRNGKey(1), params, 256)
    robots = NumpyMobileRobot(256, params=params)
    pos, yaw, goal = (np.asarray(x) for x in (state.pos, state.yaw, state.goal))
    obs = robots.observation(pos, yaw, goal, robots.rays(pos, yaw, goal)[0])
    np.testing.assert_allclose(obs, np.asarray(j_obs), atol=OBS_ATOL, rtol=0)


def test_trajectories_match(setup):
    """Both run 200 steps from the same spawns with the same actions; robots are compared until either terminates."""
    env, params, step = setup
    n = 512
    _, state = env.reset_batch(jax.random.PRNGKey(0), params, n)
    robots = NumpyMobileRobot(n, params=params)
    pos, yaw, goal, t = (np.asarray(x) for x in (state.pos, state.yaw, state.goal, state.t))
    rng = np.random.default_rng(0)
    alive = np.ones(n, bool)
    blocked = reached = 0
    for _ in range(200):
        # Mostly forward, so that robots run into walls and reach goals.
        actions = np.stack([rng.uniform(-0.3, 1.0, n), rng.uniform(-1.0, 1.0, n)], axis=1).astype(np.float32)
        previous = pos
        out = robots.transition(pos, yaw, goal, t, actions)
        j_out = step(state, jnp.asarray(actions))
        assert_same_step(out, j_out, params, alive)
        moved = np.linalg.norm(out[1] - previous, axis=1)
        blocked += np.sum(alive & (moved < 0.99 * 0.2 * np.abs(actions[:, 0])))
        reached += np.sum(alive & out[5])
        alive &= ~(out[5] | np.asarray(j_out[3]))
        _, pos, yaw, t = out[:4]
        state = j_out[1]
    assert alive.sum() > n // 2
    assert blocked > 0 and reached > 0  # walls and goals were both exercised


def test_random_states_match(setup):
    """Single transitions from many random collision-free states: any yaw, near walls, goals close by."""
    env, params, step = setup
    rng = np.random.default_rng(1)
    n = 8192
    robots = NumpyMobileRobot(n, params=params)
    lo, hi = np.asarray(S6_FREE_AREA[:2]), np.asarray(S6_FREE_AREA[2:])
    pos = rng.uniform(lo + 0.3, hi - 0.3, (n, 2)).astype(np.float32)
    yaw = rng.uniform(-180.0, 180.0, n).astype(np.float32)
    near_goal = pos + rng.uniform(-3.0, 3.0, (n, 2))
    goal = np.where(rng.random((n, 1)) < 0.5, near_goal, rng.uniform(lo + 0.6, hi - 0.6, (n, 2))).astype(np.float32)
    t = rng.integers(0, 500, n).astype(np.int32)
    fx, fz = np.sin(np.deg2rad(yaw)), np.cos(np.deg2rad(yaw))
    valid = robots.body_is_free(pos[:, 0], pos[:, 1], fx, fz)
    assert valid.sum() > n // 2
    actions = rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32)
    actions[: n // 8] *= 3.0  # some beyond [-1, 1]: both clip
    out = robots.transition(pos, yaw, goal, t, actions)
    j_out = step(jax_state(pos, yaw, goal, np.arange(n), t), jnp.asarray(actions))
    assert_same_step(out, j_out, params, valid)
    moved = np.linalg.norm(out[1] - pos, axis=1)
    assert np.sum(valid & (moved < 0.99 * 0.2 * np.minimum(np.abs(actions[:, 0]), 1.0))) > 0
    assert np.sum(valid & out[5]) > 0 and np.sum(valid & (out[4] <= -5.0)) > 0


def test_auto_reset():
    env = MobileRobot()
    params = env.default_params.replace(max_episode_steps=5)
    n = 64
    robots = NumpyMobileRobot(n, seed=3, params=params)
    obs = robots.reset()
    assert obs.shape == (n, 19) and obs.dtype == np.float32
    car_spawns, goal_spawns = np.asarray(params.car_spawns), np.asarray(params.goal_spawns)
    arena = np.arange(n) % 8
    # Spawns: ±0.5 m jitter around the arena's spots (the car's in its pre-reset frame, so within a 0.5·√2 disc).
    assert np.all(np.linalg.norm(robots.pos - car_spawns[arena], axis=1) <= 0.5 * np.sqrt(2) + 1e-5)
    assert np.all(np.abs(robots.goal - goal_spawns[arena]) <= 0.5 + 1e-5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        actions = np.stack([np.zeros(n), rng.uniform(-1.0, 1.0, n)], axis=1).astype(np.float32)  # turn on the spot
        goal_before = robots.goal.copy()
        obs, reward, terminated, truncated, final_obs = robots.step(actions)
        assert reward.dtype == np.float32 and obs.dtype == np.float32
    done = terminated | truncated
    assert np.all(done) and np.all(truncated == ~terminated)
    # The finished episode's last observation is in final_obs; obs and the state belong to the new episode.
    assert np.all(robots.yaw == 0.0) and np.all(robots.t == 0)
    assert not np.allclose(final_obs, obs)
    np.testing.assert_allclose(obs, robots.observation(robots.pos, robots.yaw, robots.goal,
                                                      robots.rays(robots.pos, robots.yaw, robots.goal)[0]))
    assert np.all(np.linalg.norm(robots.pos - car_spawns[arena], axis=1) <= 0.5 * np.sqrt(2) + 1e-5)
    assert not np.allclose(robots.goal, goal_before)


def test_terminated_robot_resets_alone():
    robots = NumpyMobileRobot(2, params=MobileRobot().default_params)
    robots.reset()
    # Robot 0 faces its goal 1.5 m ahead: its front ray reaches it (< 2 m) and the episode ends.
    robots.pos[0], robots.yaw[0], robots.goal[0] = (0.0, 0.0), 0.0, (0.0, 1.5)
    keep_pos, keep_goal = robots.pos[1].copy(), robots.goal[1].copy()
    obs, reward, terminated, truncated, final_obs = robots.step(np.zeros((2, 2), np.float32))
    assert terminated.tolist() == [True, False] and not truncated.any()
    assert reward[0] == pytest.approx(10.0 - 0.005)
    assert robots.t.tolist() == [0, 1]
    radius = float(robots.params.goal_ray_radius)
    assert final_obs[0, 1] == pytest.approx((1.5 + 0.01 - radius) / 4.0, abs=1e-5)  # sensors 0.01 m behind the pivot
    np.testing.assert_array_equal(robots.pos[1], keep_pos)
    np.testing.assert_array_equal(robots.goal[1], keep_goal)
    np.testing.assert_array_equal(obs[1], final_obs[1])
    assert not np.array_equal(obs[0], final_obs[0])
