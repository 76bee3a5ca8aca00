"""``step_batch`` resets only the robots that finished: the same transitions and reset distribution as ``step``."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import api, geometry
from envs.mobile_robot import S6_CAR_SPAWNS, S6_GOAL_SPAWNS

ENV = envs.make("MobileRobot")
NUM_ENVS = 1024


def observation_of(state, params):
    """What the robot senses in ``state`` (no noise)."""
    return ENV._observation(state, ENV._rays(state, params)[0], params)


@pytest.fixture(scope="module")
def stepped():
    """A batch stepped once from mid-episode states, with every third robot at its last step."""
    params = ENV.default_params.replace(max_episode_steps=50)
    _, state = ENV.reset_batch(jax.random.PRNGKey(0), params, NUM_ENVS)
    state = state.replace(t=jnp.where(jnp.arange(NUM_ENVS) % 3 == 0, 49, 10).astype(jnp.int32),
                          yaw=jnp.linspace(-170.0, 170.0, NUM_ENVS, dtype=jnp.float32))
    action = jax.random.uniform(jax.random.PRNGKey(1), (NUM_ENVS, 2), minval=-1.0, maxval=1.0)
    out = jax.jit(ENV.step_batch)(jax.random.PRNGKey(2), state, action, params)
    expected = jax.vmap(lambda s, a: ENV.step_env(jax.random.PRNGKey(3), s, a, params))(state, action)
    return params, state, out, expected


def test_more_robots_finish_than_one_chunk_holds(stepped):
    assert api.reset_chunk(NUM_ENVS) < NUM_ENVS // 3  # the loop needs several passes here


def test_running_robots_step_as_step_env(stepped):
    params, _, (obs, state, reward, terminated, truncated, info), expected = stepped
    expected_obs, expected_state, expected_reward, *_ = expected
    running = ~np.asarray(terminated | truncated)
    assert running.sum() > NUM_ENVS // 2
    # Equal up to the rounding of a differently fused program.
    np.testing.assert_allclose(np.asarray(obs)[running], np.asarray(expected_obs)[running], atol=1e-5)
    np.testing.assert_allclose(np.asarray(state.pos)[running], np.asarray(expected_state.pos)[running], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(state.t)[running], np.asarray(expected_state.t)[running])
    np.testing.assert_allclose(np.asarray(reward), np.asarray(expected_reward), atol=1e-6)
    np.testing.assert_allclose(np.asarray(info["final_obs"]), np.asarray(expected_obs), atol=1e-5)


def test_every_finished_robot_starts_a_new_episode_in_its_arena(stepped):
    params, before, (obs, state, _, terminated, truncated, _), (_, finished, *_) = stepped
    done = np.asarray(terminated | truncated)
    assert done.sum() >= NUM_ENVS // 3
    assert np.all(np.asarray(state.t)[done] == 0) and np.all(np.asarray(state.yaw)[done] == 0.0)
    np.testing.assert_array_equal(state.slot, before.slot)
    arena = np.asarray(state.slot) % 8
    goal_offset = np.asarray(state.goal) - np.asarray(S6_GOAL_SPAWNS)[arena]
    assert np.all(np.abs(goal_offset[done]) <= params.spawn_jitter + 1e-5)
    # The car's jitter is turned by the finished episode's last yaw, as Unity translates in the car's own frame.
    offset = np.asarray(state.pos) - np.asarray(S6_CAR_SPAWNS)[arena]
    local = geometry.into_frame(geometry.Vec(offset[:, 0], offset[:, 1]), geometry.heading(finished.yaw))
    assert np.all(np.abs(np.asarray(local.x)[done]) <= params.spawn_jitter + 1e-4)
    assert np.all(np.abs(np.asarray(local.z)[done]) <= params.spawn_jitter + 1e-4)
    np.testing.assert_allclose(np.asarray(obs)[done], np.asarray(jax.vmap(
        lambda s: observation_of(s, params))(state))[done], atol=1e-5)


def test_each_finished_robot_draws_its_own_spawn(stepped):
    _, _, (_, state, _, terminated, truncated, _), _ = stepped
    goals = np.asarray(state.goal)[np.asarray(terminated | truncated)]
    assert len(np.unique(goals.round(5), axis=0)) == len(goals)


def test_the_reset_distribution_is_the_reset_batch_one():
    """All robots truncate on the same step: the chunked resets draw the spawns reset_batch draws (uniform jitter)."""
    params = ENV.default_params.replace(max_episode_steps=1)
    num_envs = 8192
    _, state = ENV.reset_batch(jax.random.PRNGKey(4), params, num_envs)
    _, state, _, _, truncated, _ = jax.jit(ENV.step_batch)(jax.random.PRNGKey(5), state, jnp.zeros((num_envs, 2)),
                                                           params)
    assert bool(jnp.all(truncated))
    _, fresh = ENV.reset_batch(jax.random.PRNGKey(6), params, num_envs)
    for reset in (state, fresh):
        offset = np.asarray(reset.goal) - np.asarray(S6_GOAL_SPAWNS)[np.arange(num_envs) % 8]
        np.testing.assert_allclose(offset.mean(0), 0.0, atol=0.02)
        np.testing.assert_allclose(offset.std(0), params.spawn_jitter / np.sqrt(3), rtol=0.03)


def test_noise_gives_each_robot_its_own_draw():
    params = ENV.default_params.replace(action_noise=0.3)
    assert ENV.step_needs_key(params) and not ENV.step_needs_key(ENV.default_params)
    _, state = ENV.reset_batch(jax.random.PRNGKey(0), params, 16)
    state = state.replace(slot=jnp.zeros(16, jnp.int32), pos=jnp.zeros((16, 2)), goal=jnp.full((16, 2), -4.0))
    _, moved, *_ = ENV.step_batch(jax.random.PRNGKey(1), state, jnp.full((16, 2), 0.5), params)
    assert len(np.unique(np.asarray(moved.pos).round(6), axis=0)) == 16


def test_computed_once_changes_no_value():
    x = jnp.array([1.5, -jnp.inf, jnp.inf, 0.0, -0.0, 1e-30, -7.25])
    for a, b in zip(geometry.computed_once(x, 2.0 * x), (x, 2.0 * x)):
        np.testing.assert_array_equal(a, b)
