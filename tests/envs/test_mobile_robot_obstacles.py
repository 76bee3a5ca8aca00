import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs.mobile_robot_obstacles import S7_ARENAS, MobileRobotObstaclesState

ENV = envs.make("MobileRobotObstacles")
PARAMS = ENV.default_params


def place(x, z, yaw=0.0, slot=0):
    return MobileRobotObstaclesState(pos=jnp.array([x, z], jnp.float32), yaw=jnp.float32(yaw), slot=jnp.int32(slot),
                                     t=jnp.int32(0), stage=jnp.int32(0))


def observe(state):
    return np.asarray(jax.jit(ENV._observe)(state, PARAMS)[0])


def test_layout_fixed_starts_and_one_hot_stage():
    assert ENV.observation_size == 22 and ENV.action_size == 2
    obs, state = ENV.reset_batch(jax.random.PRNGKey(0), PARAMS, 16)
    assert obs.shape == (16, 22)
    np.testing.assert_allclose(state.pos, np.asarray([a[0] for a in S7_ARENAS])[np.arange(16) % 8])
    np.testing.assert_allclose(obs[:, :3].sum(-1), 1.0)
    assert jnp.all((obs[:, 4:] > 0) & (obs[:, 4:] <= 1))


def test_stages_and_facing_angle():
    # arena 4: goal box at (-1.45, 3.224), block at (-0.09, 0.354) between.
    behind = observe(place(-1.45, 0.0, yaw=180.0, slot=4))
    np.testing.assert_allclose(behind[:4], [0, 0, 1, 0])           # stage 3: goal more than 40° off
    # 35° to the right of a clear line of sight (car above the block, goal ahead-right): stage 1, angle > 0
    clear = observe(place(-3.2, 1.2, yaw=5.0, slot=4))
    assert clear[0] == 1 and clear[3] > 29.5
    # facing the goal straight on: the car's own head blocks the pivot ray → stage 2, angle reported as 0
    straight = observe(place(-1.45, 1.2, yaw=0.0, slot=4))
    np.testing.assert_allclose(straight[:4], [0, 1, 0, 0])
    # the block between car and goal: stage 2 even when 35° off
    blocked = observe(place(-0.8, -1.5, yaw=-35.0, slot=4))
    np.testing.assert_allclose(blocked[:4], [0, 1, 0, 0])


def test_the_block_is_solid():
    state = place(-0.09, -2.3, slot=0)  # arena 0's block spans z in [-0.356, 0.244]
    step = jax.jit(ENV.step_env)
    for _ in range(10):
        _, state, *_ = step(jax.random.PRNGKey(0), state, jnp.array([1.0, 0.0]), PARAMS)
    assert float(state.pos[1]) + 1.0 <= -0.356 + 1e-5  # the nose stops before the block
    np.testing.assert_allclose(state.pos[1], -1.5, atol=1e-5)  # after two 0.4 m steps


def test_builtin_scene_names_are_the_registry():
    """``rlrobot.config`` names the scenes without loading JAX; the list must be the registry's."""
    from rlrobot.config import BUILTIN_SCENES

    assert sorted(BUILTIN_SCENES) == envs.registered()


def test_a_car_with_its_nose_on_a_wall_still_turns():
    """Unity's Rotate always turns the car, and the physics pushes it off the wall; refusing the turn instead left a
    car pressed against a wall stuck for good (a trap for deterministic policies)."""
    env = envs.make("MobileRobotObstacles")
    params = env.default_params
    state = MobileRobotObstaclesState(pos=jnp.array([0.0, -3.0]), yaw=jnp.float32(180.0), slot=jnp.int32(0),
                                      t=jnp.int32(0), stage=jnp.int32(3))
    for _ in range(10):  # forward, facing the near wall (yaw 180 faces -z)
        _, state, *_ = env.step_env(None, state, jnp.array([1.0, 0.0]), params)
    nose_gap = float(state.pos[1]) - 1.0 - (-5.016 + 0.2715)
    assert abs(nose_gap) < 0.41  # against the wall
    for _ in range(9):
        _, state, *_ = env.step_env(None, state, jnp.array([0.0, 1.0]), params)
    assert abs(float(state.yaw) - (-90.0)) < 1e-3  # turned 90° right
    walls, blocks, goal = env.solids(jnp.int32(0), params)
    from envs import car

    assert bool(car.body_is_free(state.pos, state.yaw, walls + blocks + (goal,)))


def rollout(params, steps=60, robots=64):
    """Every robot's observations, rewards, positions and stages over ``steps`` of the same random actions."""
    def body(carry, key):
        obs, state = carry
        action = jax.random.uniform(jax.random.fold_in(key, 1), (robots, 2), minval=-1.0, maxval=1.0)
        obs2, state2, reward, *_ = ENV.step_batch(key, state, action, params)
        return (obs2, state2), (obs, reward, state.pos, state.stage)

    carry = ENV.reset_batch(jax.random.PRNGKey(3), params, robots)
    return jax.lax.scan(body, carry, jax.random.split(jax.random.PRNGKey(4), steps))[1]


def test_domain_randomisation_changes_what_the_robot_does_and_senses_not_the_reward_or_stage():
    assert not ENV.step_needs_key(PARAMS) and ENV.step_needs_key(PARAMS.replace(action_noise=0.1))
    program = jax.jit(rollout)  # the params traced: one compile, the general path of every field

    def run(params):
        return [np.asarray(x) for x in program(params)]

    base = run(PARAMS)
    blind = run(PARAMS.replace(ray_dropout=1.0))
    assert np.all(blind[0][..., 4:] == 1.0)
    for a, b in zip(base[1:], blind[1:]):  # the same rewards, moves and stages: only the sensing changed
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(blind[0][..., :4], base[0][..., :4])
    short = run(PARAMS.replace(sensor_range=1.0))
    rays = short[0][..., 4:]
    assert np.all((rays <= 0.25) | (rays == 1.0)) and np.any(base[0][..., 4:] < 1.0)
    np.testing.assert_array_equal(short[1], base[1])
    noisy = run(PARAMS.replace(observation_noise=0.05))
    np.testing.assert_array_equal(noisy[1], base[1])
    np.testing.assert_array_equal(noisy[0][..., :3], base[0][..., :3])  # the stage is the scene's own
    stage1 = base[0][..., 0] == 1.0
    facing_noise = (noisy[0][..., 3] - base[0][..., 3])[stage1]
    assert stage1.sum() > 50 and 4.0 < facing_noise.std() < 14.0  # 0.05 of s6's 180° unit
    assert np.all(noisy[0][..., 3][~stage1] == 0.0)  # still reported in stage 1 only
    ray_noise = noisy[0][..., 4:] - base[0][..., 4:]
    assert 0.02 < ray_noise[(base[0][..., 4:] > 0.2) & (base[0][..., 4:] < 0.8)].std() < 0.08
    stuck = run(PARAMS.replace(actuation_scale=0.0, action_noise=0.3))
    assert np.all(stuck[2] == stuck[2][0:1])  # scale 0: no robot moves
    shaky = run(PARAMS.replace(action_noise=0.3))
    assert not np.array_equal(shaky[2], base[2])
