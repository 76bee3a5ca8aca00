import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import car
from envs.mobile_robot import S6_CAR_SPAWNS, MobileRobotState

ENV = envs.make("MobileRobot")
PARAMS = ENV.default_params
FAR_GOAL = jnp.array([-4.5, -4.5])  # a corner no test ray of these placements reaches


def place(x, z, yaw=0.0, goal=FAR_GOAL, t=0):
    return MobileRobotState(pos=jnp.array([x, z], jnp.float32), yaw=jnp.float32(yaw),
                            goal=jnp.asarray(goal, jnp.float32), slot=jnp.int32(0), t=jnp.int32(t))


def observe(state, params=PARAMS):
    distances, _ = ENV._rays(state, params)
    return np.asarray(ENV._observation(state, distances, params))


def step(state, action, params=PARAMS):
    return ENV.step_env(jax.random.PRNGKey(0), state, jnp.asarray(action, jnp.float32), params)


def test_sizes_layout_and_ranges():
    assert ENV.observation_size == 19 and ENV.action_size == 2
    obs, state = ENV.reset_batch(jax.random.PRNGKey(0), PARAMS, 64)
    assert obs.shape == (64, 19) and obs.dtype == jnp.float32
    assert jnp.all(jnp.abs(obs[:, 0]) <= 1.0)
    assert jnp.all((obs[:, 1:] > 0.0) & (obs[:, 1:] <= 1.0))
    assert state.yaw.dtype == jnp.float32 and jnp.all(state.yaw == 0.0)


def test_rays_straight_at_a_wall():
    obs = observe(place(0.0, 3.0))
    np.testing.assert_allclose(obs[1], (4.95 - 2.99) / 4, rtol=1e-5)            # ray 0 to the far wall face
    np.testing.assert_allclose(obs[3], (4.95 - 2.99) / np.cos(np.deg2rad(40)) / 4, rtol=1e-5)  # ray 2, 40° right
    assert obs[10] == 1.0                                                         # ray 9 (back): 7.84 m > 4 m
    np.testing.assert_allclose(obs[5], 1.0)                                       # ray 4 (80°): right wall 4.9 m away


def test_rays_in_a_corner():
    obs = observe(place(4.0, 3.8))
    np.testing.assert_allclose(obs[1], (4.95 - 3.79) / 4, rtol=1e-5)
    np.testing.assert_allclose(obs[5], (4.84 - 4.0) / np.sin(np.deg2rad(80)) / 4, rtol=1e-5)
    # right wall before top wall
    np.testing.assert_allclose(obs[3], (4.84 - 4.0) / np.sin(np.deg2rad(40)) / 4, rtol=1e-5)


def test_ray_sees_goal_at_sensor_height():
    obs = observe(place(0.0, 0.0, goal=(0.0, 3.0)))
    radius = float(PARAMS.goal_ray_radius)
    assert 0.43 < radius < 0.45
    np.testing.assert_allclose(obs[1], (3.01 - radius) / 4, rtol=1e-5)


def test_facing_angle_sign_and_elevation():
    left = observe(place(0.0, 0.0, goal=(-2.0, 2.0)))[0]
    right = observe(place(0.0, 0.0, goal=(2.0, 2.0)))[0]
    assert left > 0 and right < 0
    np.testing.assert_allclose(left, -right, rtol=1e-5)
    # Facing the goal, the 3-D angle is the elevation of the goal centre, not 0 (docs/mobile-robot.md,
    # "The facing angle").
    ahead = observe(place(0.0, 0.0, goal=(0.0, 2.5)))[0]
    elevation = np.degrees(np.arctan2(0.68 - 0.203, 2.5)) / 180
    np.testing.assert_allclose(ahead, elevation, rtol=1e-4)
    # turning right (a1 > 0) brings a goal on the right towards the heading
    state = place(0.0, 0.0, goal=(2.0, 2.0))
    _, turned, *_ = step(state, [0.0, 1.0])
    assert float(turned.yaw) == pytest.approx(10.0)
    assert abs(observe(turned)[0]) < abs(right)


def test_driving_straight_at_goal_terminates_with_plus_ten():
    state = place(0.0, 0.0, goal=(0.0, 3.51))
    for k in range(1, 10):  # noqa: B007 (k is read after the loop)
        _, state, reward, terminated, truncated = step(state, [1.0, 0.0])
        if terminated:
            break
    # ray 0 starts 3.52 - r ≈ 3.08 m from the goal's edge and closes 0.2 m a step: under 2 m at step 6
    assert k == 6 and bool(terminated) and not bool(truncated)
    assert float(reward) == pytest.approx(10.0 - 0.005)


def test_close_rays_cost_five_each():
    state = place(4.0, 3.8)
    distances, _ = ENV._rays(state, PARAMS)
    _, _, reward, terminated, _ = step(state, [0.0, 0.0])
    assert not terminated
    assert float(reward) == pytest.approx(-0.005 - 5.0 * int(jnp.sum(distances < 2.0)))


def test_walls_stop_the_car_and_actions_are_clipped():
    state = place(0.0, 3.0)
    for _ in range(20):
        _, state, *_ = step(state, [1.0, 0.0])
    assert float(state.pos[1]) + 1.0 <= 4.95 + 1e-5  # the nose never enters the wall
    assert float(state.pos[1]) > 3.7                  # but it got close
    _, a, *_ = step(place(0.0, 0.0), [5.0, -7.0])
    _, b, *_ = step(place(0.0, 0.0), [1.0, -1.0])
    np.testing.assert_allclose(a.pos, b.pos) and np.testing.assert_allclose(a.yaw, b.yaw)
    np.testing.assert_allclose(b.pos, [0.0, 0.2], atol=1e-6)
    assert float(b.yaw) == pytest.approx(-10.0)


def test_car_slides_along_a_wall():
    state = place(3.5, 0.0, yaw=45.0)  # heading into the right wall at 45°
    for _ in range(10):
        _, state, *_ = step(state, [1.0, 0.0])
    assert float(state.pos[0]) < 4.84 - 0.88 + 1e-4  # stopped at the wall
    assert float(state.pos[1]) > 1.0  # but kept moving along it


def test_spawns_use_arena_slot_mod_eight_with_jitter():
    _, state = ENV.reset_batch(jax.random.PRNGKey(3), PARAMS, 32)
    spawns = np.asarray(S6_CAR_SPAWNS)[np.arange(32) % 8]
    offset = np.abs(np.asarray(state.pos) - spawns)
    assert np.all(offset <= 0.5 + 1e-6) and offset.max() > 0.1
    assert np.all(np.asarray(state.slot) == np.arange(32))


def test_determinism_for_a_fixed_key():
    key = jax.random.PRNGKey(7)
    a = ENV.step(key, ENV.reset(key, PARAMS, 3)[1], jnp.array([0.3, -0.2]), PARAMS)
    b = ENV.step(key, ENV.reset(key, PARAMS, 3)[1], jnp.array([0.3, -0.2]), PARAMS)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_jit_and_vmap_over_4096_envs():
    obs, state = jax.jit(ENV.reset_batch, static_argnums=2)(jax.random.PRNGKey(0), PARAMS, 4096)
    actions = jax.random.uniform(jax.random.PRNGKey(1), (4096, 2), minval=-1, maxval=1)
    obs, state, reward, terminated, truncated, info = jax.jit(ENV.step_batch)(jax.random.PRNGKey(2), state, actions,
                                                                              PARAMS)
    assert obs.shape == (4096, 19) and reward.shape == (4096,) and info["final_obs"].shape == (4096, 19)
    assert reward.dtype == jnp.float32 and terminated.dtype == jnp.bool_


def test_auto_reset_keeps_final_obs():
    params = PARAMS.replace(max_episode_steps=3)
    _, state = ENV.reset(jax.random.PRNGKey(0), params, 2)
    for _ in range(3):
        key = jax.random.PRNGKey(5)
        expected_obs, *_ = ENV.step_env(jax.random.split(key)[0], state, jnp.array([0.5, 0.5]), params)
        obs, state, reward, terminated, truncated, info = ENV.step(key, state, jnp.array([0.5, 0.5]), params)
    assert bool(truncated) and not bool(terminated)
    np.testing.assert_allclose(info["final_obs"], expected_obs)
    assert int(state.t) == 0 and int(state.slot) == 2
    assert not np.allclose(obs, info["final_obs"])
    assert float(state.yaw) == 0.0


def test_wheel_mode_is_a_differential_drive():
    params = PARAMS.replace(action_mode="wheels")
    _, straight, *_ = step(place(0.0, 0.0), [1.0, 1.0], params)
    np.testing.assert_allclose(straight.pos, [0.0, 0.2], atol=1e-6)
    _, spin, *_ = step(place(0.0, 0.0), [-1.0, 1.0], params)  # right wheel forward: spin left in place
    np.testing.assert_allclose(spin.pos, [0.0, 0.0], atol=1e-6)
    assert float(spin.yaw) == pytest.approx(-np.degrees(0.4), rel=1e-5)
    _, arc, *_ = step(place(0.0, 0.0), [0.5, 1.0], params)  # an arc to the left
    assert float(arc.pos[0]) < 0 and float(arc.yaw) < 0


def test_random_spawn_and_heading():
    params = PARAMS.replace(random_spawn=True, random_heading=True)
    _, state = ENV.reset_batch(jax.random.PRNGKey(0), params, 256)
    gap = np.linalg.norm(np.asarray(state.pos - state.goal), axis=-1)
    assert gap.min() >= params.min_spawn_distance
    assert np.asarray(state.yaw).std() > 50
    walls = envs.mobile_robot.wall_boxes(params.walls)
    free = jax.vmap(lambda p, y: car.body_is_free(p, y, walls))(state.pos, state.yaw)
    assert bool(jnp.all(free))


def test_wrap_degrees_is_jnp_mod_bit_for_bit():
    angle = np.concatenate([np.linspace(-539.99, 539.99, 1_000_001),
                            np.nextafter(np.float32([-180, 180, 0, 360, -360]), np.float32(0))]).astype(np.float32)
    angle = np.concatenate([angle, -angle, np.float32([-180, 180, 0, 360, -360, 540 - 1e-4])])
    expected = jax.jit(lambda a: jnp.mod(a + 180.0, 360.0) - 180.0)(angle)
    np.testing.assert_array_equal(np.asarray(jax.jit(car.wrap_degrees)(angle)), np.asarray(expected))
