"""envs.sampled (ML-Agents' samplers, drawn per robot at every reset) and envs.randomization (domain randomisation)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.parameters import ParameterError, sampled_parameters
from envs.sampled import SampledParameter, SampledParams, draw, with_lessons

ENV = envs.make("MobileRobot")
PARAMS = ENV.default_params
KEY = jax.random.PRNGKey(0)


def draws(sampler, n=20000):
    return np.asarray(jax.vmap(lambda k: draw(sampler, k))(jax.random.split(KEY, n)))


def wrapped(*parameters, params=PARAMS):
    return SampledParams(ENV, sampled_parameters(params, {name: [(name, kind, args) for kind, args in lessons]
                                                          for name, lessons in parameters}))


def test_distributions():
    uniform = draws(("uniform", (0.3, 0.7)))
    assert uniform.min() >= 0.3 and uniform.max() < 0.7 and abs(uniform.mean() - 0.5) < 0.005
    gaussian = draws(("gaussian", (1.0, 0.2)))
    assert abs(gaussian.mean() - 1.0) < 0.01 and abs(gaussian.std() - 0.2) < 0.01
    multi = draws(("multirangeuniform", ((0.0, 1.0), (3.0, 5.0))))
    inside = ((multi >= 0) & (multi <= 1)) | ((multi >= 3) & (multi <= 5))
    assert inside.all() and abs((multi >= 3).mean() - 2 / 3) < 0.01  # an interval in proportion to its length
    assert (draws(("constant", (0.25,)), 10) == np.float32(0.25)).all()


def test_each_robot_draws_its_own_value_and_draws_again_at_every_reset():
    env = wrapped(("goal_radius", [("uniform", (0.3, 0.7))]), ("max_episode_steps", [("constant", (1,))]))

    @jax.jit
    def reset_and_step():
        _, state = env.reset_batch(KEY, PARAMS, 512)
        _, after, _, _, truncated, _ = env.step_batch(jax.random.PRNGKey(1), state, jnp.zeros((512, 2)), PARAMS)
        return state.values[:, 0], after.values[:, 0], truncated

    first, second, truncated = map(np.asarray, reset_and_step())
    assert len(np.unique(first)) == 512 and first.min() >= 0.3 and first.max() < 0.7
    assert truncated.all() and not np.any(first == second) and second.min() >= 0.3  # 1-step episodes: drawn again


def test_a_robots_value_reaches_its_scene():
    env = wrapped(("step_reward", [("uniform", (-1.0, -0.1))]), ("near_penalty", [("constant", (0.0,))]),
                  ("goal_reward", [("constant", (0.0,))]))

    @jax.jit
    def first_step():
        _, state = env.reset_batch(KEY, PARAMS, 64)
        return state.values[:, 0], env.step_batch(KEY, state, jnp.zeros((64, 2)), PARAMS)[2]

    values, reward = first_step()
    np.testing.assert_array_equal(reward, values)  # each robot is paid its own step_reward


def test_integer_draws_are_rounded_and_every_draw_is_clipped_to_the_fields_range():
    env = wrapped(("max_episode_steps", [("uniform", (10.0, 13.0))]), ("ray_dropout", [("gaussian", (0.5, 2.0))]))
    _, state = jax.jit(lambda: env.reset_batch(KEY, PARAMS, 2000))()
    steps, dropout = np.asarray(state.values[:, 0]), np.asarray(state.values[:, 1])
    assert set(np.unique(steps)) == {10.0, 11.0, 12.0, 13.0}
    assert dropout.min() == 0.0 and dropout.max() == 1.0  # the Gaussian's tails land on the probability's bounds
    params = env.robot_params(PARAMS, state.values[0])
    assert params.max_episode_steps.dtype == jnp.int32


def test_lessons_change_without_a_recompile():
    traces = []
    env = wrapped(("spawn_randomness", [("constant", (0.0,)), ("constant", (1.0,))]))

    def reset_all(key, state):
        traces.append(1)  # runs once per trace
        keys = jax.random.split(key, state.lesson.shape[0])
        return jax.vmap(lambda k, s: env.reset_env(k, PARAMS, env.slot_of(s), s)[1])(keys, state)

    reset_all = jax.jit(reset_all)
    _, state = jax.jit(lambda: env.reset_batch(KEY, PARAMS, 128))()
    fixed = reset_all(KEY, state)
    assert np.all(np.asarray(fixed.values) == 0.0)
    moved = reset_all(KEY, with_lessons(state, jnp.array([1])))
    assert np.all(np.asarray(moved.values) == 1.0) and np.all(np.asarray(moved.lesson) == 1)
    assert len(traces) == 1
    spawns = np.asarray(envs.mobile_robot.S6_CAR_SPAWNS)
    distance = np.linalg.norm(np.asarray(moved.pos)[:, None] - spawns[None], axis=-1).min(axis=1)
    assert (distance > 0.75).mean() > 0.5  # random spawns, not the fixed ones with their 0.5 m jitter


# Every randomisation at its off value, as a traced per-robot draw: the general code path gives the same episodes
# (observations up to XLA's rounding: the program computing them is another fusion).
OFF = {"spawn_randomness": 0.0, "heading_randomness": 0.0, "action_noise": 0.0, "actuation_scale": 1.0,
       "observation_noise": 0.0, "ray_dropout": 0.0, "sensor_range": 0.0, "goal_radius": 0.5}


def rollout(env, params, steps=20, n=48):
    obs, state = env.reset_batch(KEY, params, n)
    actions = jax.random.uniform(jax.random.PRNGKey(7), (steps, n, 2), minval=-1.5, maxval=1.5)

    def body(carry, inputs):
        state = carry
        key, action = inputs
        obs, state, reward, terminated, truncated, _ = env.step_batch(key, state, action, params)
        return state, (obs, reward, terminated | truncated)

    _, out = jax.lax.scan(body, state, (jax.random.split(KEY, steps), actions))
    return (obs, *out)


def test_sampled_defaults_reproduce_the_scene():
    plain = jax.jit(lambda: rollout(ENV, PARAMS))()
    env = wrapped(*[(name, [("constant", (value,))]) for name, value in OFF.items()])
    sampled = jax.jit(lambda: rollout(env, PARAMS))()
    for a, b in zip(plain[:2], sampled[:2]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    for a, b in zip(plain[2:], sampled[2:]):  # rewards and episode ends
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_domain_randomisation_changes_what_the_robot_does_and_senses_not_the_reward():
    variants = [{}, {"ray_dropout": 1.0}, {"sensor_range": 1.0}, {"observation_noise": 0.05},
                {"actuation_scale": 0.0, "action_noise": 0.3}, {"action_noise": 0.3}]
    # every variant's fields as traced arrays: one compile, the general code path
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[PARAMS.replace(**{k: float(v) for k, v in change.items()})
                                                         for change in variants])
    out = jax.jit(jax.vmap(lambda p: rollout(ENV, p)))(stacked)
    base, blind, short, noisy, stuck, shaky = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), out) for i in range(6)]
    assert np.all(blind[1][..., 1:] == 1.0) and np.array_equal(blind[2], base[2])
    rays = short[1][..., 1:]
    assert np.all((rays <= 0.25) | (rays == 1.0))  # nothing beyond 1 m of the 4 m rays
    np.testing.assert_array_equal(short[2], base[2])  # the reward uses the scene's rays
    diff = noisy[1] - base[1]
    assert 0.02 < diff[0].std() < 0.08 and noisy[1][..., 1:].min() >= 0.0
    alive = ~stuck[3].any(axis=0)  # robots whose first episode is still on
    assert alive.sum() > 24 and np.all(stuck[1][:, alive] == stuck[1][0:1, alive])  # scale 0: nothing moves
    assert not np.array_equal(shaky[1], base[1])


def test_random_heading_share():
    _, state = ENV.reset_batch(KEY, PARAMS.replace(heading_randomness=0.5), 2000)
    yaw = np.asarray(state.yaw)
    assert np.abs(yaw).max() <= 90.0 and yaw.std() > 45


def test_switches_and_ranges_are_checked():
    with pytest.raises(ParameterError, match=r"environment_parameters.random_spawn: a switch .* spawn_randomness"):
        sampled_parameters(PARAMS, {"random_spawn": [("p", "uniform", (0.0, 1.0))]})
    with pytest.raises(ParameterError, match=r"^x.min_value: -1.0 must be >= 0 \(the range of action_noise\)$"):
        sampled_parameters(PARAMS, {"action_noise": [("x", "uniform", (-1.0, 1.0))]})
    with pytest.raises(ParameterError, match=r"^x.intervals\[1\]: 2.0 must be in \[0, 1\]"):
        sampled_parameters(PARAMS, {"ray_dropout": [("x", "multirangeuniform", ((0.0, 0.5), (0.6, 2.0)))]})
    with pytest.raises(ParameterError, match=r"^y: 0 must be an integer in \[1,"):
        sampled_parameters(PARAMS, {"max_episode_steps": [("y", "constant", (0,))]})
    assert sampled_parameters(PARAMS, {"goal_radius": [("z", "gaussian", (0.5, 3.0))]}) == (
        SampledParameter("goal_radius", (("gaussian", (0.5, 3.0)),), low=1e-6, high=np.inf),)
