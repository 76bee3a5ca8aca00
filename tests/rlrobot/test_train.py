import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from probe_envs import DiscountProbe, TargetProbe

from rlrobot.config import NetworkSettings, PPOSettings, RewardSignalSettings, TrainerSettings
from rlrobot.networks import policy_distribution, value_estimate
from rlrobot.train import (
    init_train_state,
    make_train_iterations,
    make_train_periods,
    make_train_spec,
    summary_scalars,
)


def trainer(**overrides) -> TrainerSettings:
    hp = PPOSettings(batch_size=256, buffer_size=1024, learning_rate=3e-3, beta=1e-4, num_epoch=4,
                     learning_rate_schedule="constant")
    base = TrainerSettings(hyperparameters=hp, network_settings=NetworkSettings(hidden_units=32, num_layers=2),
                           reward_signals={"extrinsic": RewardSignalSettings(gamma=0.9)}, max_steps=200_000,
                           time_horizon=64)
    return dataclasses.replace(base, **overrides)


def train(env, settings, iterations, num_envs=64, seed=0):
    spec = make_train_spec(settings, env.observation_size, env.action_size, num_envs)
    state = init_train_state(jax.random.PRNGKey(seed), env, env.default_params, spec)
    state, metrics = make_train_iterations(env, env.default_params, spec)(state, jnp.int32(iterations))
    return spec, state, metrics


def test_actor_learns_to_copy_the_observation():
    """Six seeds, the learning rate decaying linearly to 0 over the 60 updates (ML-Agents' default schedule). At a
    constant 3e-3, PPO's std could collapse before the mean had converged and 1-3 seeds of 6 kept a too-shallow slope
    (12-13 of 16 seeds within 0.1, by XLA flags; linear: 12 of 12 within 0.015)."""
    obs = jnp.linspace(-0.8, 0.8, 9)[:, None]
    iterations, steps_per_iteration = 60, 1024
    settings = trainer(max_steps=iterations * steps_per_iteration)
    settings = dataclasses.replace(settings, hyperparameters=dataclasses.replace(
        settings.hyperparameters, learning_rate_schedule="linear"))
    errors = []
    for seed in range(6):
        spec, state, _ = train(TargetProbe(), settings, iterations=iterations, seed=seed)
        assert spec.steps_per_iteration == steps_per_iteration
        mu, _ = policy_distribution(state.agent.params, state.agent.actor_norm, obs, spec.network)
        errors.append(float(np.max(np.abs(np.clip(mu[:, 0], -3, 3) / 3 - obs[:, 0]))))
    assert max(errors) <= 0.05, errors


@pytest.mark.parametrize("truncate", [False, True])
def test_critic_learns_discounted_values_and_bootstraps_truncation(truncate):
    env = DiscountProbe(truncate=truncate)
    spec, state, _ = train(env, trainer(), iterations=40)
    left = jnp.float32([[4.0], [3.0], [2.0], [1.0]])
    values = value_estimate(state.agent.params, state.agent.critic_norm, left, spec.network)
    if truncate:
        # Truncated episodes are not ends: the reward repeats every 4 steps, V(k left) = γ^(k-1) / (1 - γ^4).
        expected = 0.9 ** (left[:, 0] - 1) / (1 - 0.9**4)
    else:
        expected = 0.9 ** (left[:, 0] - 1)
    np.testing.assert_allclose(values, expected, rtol=0.1)


def test_iteration_counts_agent_steps_and_reports_ml_agents_tags():
    env = TargetProbe()
    spec, state, metrics = train(env, trainer(), iterations=3, num_envs=48)
    assert spec.rollout_steps == 22 and spec.steps_per_iteration == 1056  # ceil(1024 / 48) steps of 48 robots
    assert int(state.iteration) == 3
    scalars = summary_scalars(metrics)
    assert set(scalars) >= {"Environment/Cumulative Reward", "Environment/Episode Length", "Environment/Success Rate",
                            "Policy/Entropy", "Policy/Extrinsic Value Estimate", "Policy/Learning Rate",
                            "Policy/Epsilon", "Policy/Beta", "Losses/Policy Loss", "Losses/Value Loss"}
    # One-decision episodes: ML-Agents books a step when the next one arrives and never the episode's end, so 0.
    assert scalars["Environment/Episode Length"] == 0.0 and scalars["Environment/Success Rate"] == 1.0
    assert scalars["Policy/Learning Rate"] == pytest.approx(3e-3)


def test_schedules_decay_with_agent_steps():
    env = TargetProbe()
    settings = trainer(max_steps=4096, hyperparameters=dataclasses.replace(trainer().hyperparameters,
                                                                           learning_rate_schedule="linear"))
    _, _, metrics = train(env, settings, iterations=2, num_envs=64)
    # iterations run at steps 0 and 1024 of 4096: mean lr = 3e-3 * (1 + 0.75) / 2
    assert float(metrics.learning_rate) / 2 == pytest.approx(3e-3 * 0.875, rel=1e-4)


def test_chunked_runs_equal_one_long_run():
    env = TargetProbe()
    settings = trainer()
    spec = make_train_spec(settings, 1, 1, 32)
    run = make_train_iterations(env, env.default_params, spec)
    state = init_train_state(jax.random.PRNGKey(1), env, env.default_params, spec)
    once, _ = run(state, jnp.int32(4))
    twice, _ = run(run(state, jnp.int32(1))[0], jnp.int32(3))
    for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(twice)):
        np.testing.assert_array_equal(a, b)


def test_periods_in_one_call_equal_a_call_per_period():
    """Several summary periods in one device call: the same state, each period's own metrics and the iteration
    count after it, as one call per period; unused slots run nothing."""
    env = TargetProbe()
    spec = make_train_spec(trainer(), 1, 1, 32)
    state = init_train_state(jax.random.PRNGKey(2), env, env.default_params, spec)
    run = make_train_iterations(env, env.default_params, spec)
    periods = make_train_periods(env, env.default_params, spec, 4)
    together, metrics, ends = periods(state, jnp.array([2, 1, 3, 0], jnp.int32))
    one_by_one = state
    for index, count in enumerate([2, 1, 3]):
        one_by_one, expected = run(one_by_one, jnp.int32(count))
        assert int(ends[index]) == int(one_by_one.iteration)
        for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(jax.tree.map(lambda x, i=index: x[i], metrics))):
            np.testing.assert_array_equal(a, b)
    assert int(ends[3]) == 6 and float(metrics.iterations[3]) == 0.0
    for a, b in zip(jax.tree.leaves(one_by_one), jax.tree.leaves(together)):
        np.testing.assert_array_equal(a, b)


def test_periods_after_a_nan_run_nothing():
    """A non-finite loss stops the call: its period reports it, and the later periods run no iteration."""
    env = TargetProbe()
    spec = make_train_spec(trainer(), 1, 1, 32)
    state = init_train_state(jax.random.PRNGKey(2), env, env.default_params, spec)
    poisoned = state.replace(agent=state.agent.replace(params=jax.tree.map(lambda x: x * jnp.nan,
                                                                           state.agent.params)))
    _, metrics, ends = make_train_periods(env, env.default_params, spec, 3)(poisoned, jnp.array([1, 2, 2], jnp.int32))
    assert not bool(metrics.loss_is_finite[0])
    assert metrics.iterations.tolist() == [1.0, 0.0, 0.0]
    assert ends.tolist() == [0, 0, 0]  # the state before the offending update


class ShiftedResetProbe(DiscountProbe):
    """DiscountProbe whose reset observation differs from a truncated episode's final one, so the final value must
    be evaluated on its own (``train.window_values``' gathered path)."""

    def reset_env(self, key, params, slot, prev_state):
        obs, state = super().reset_env(key, params, slot, prev_state)
        return obs + 0.5, state


def _raw_advantages(agent, transitions, last_obs, spec, ready=None):
    from rlrobot import ppo
    from rlrobot.train import window_values
    values, next_values = window_values(agent, transitions, last_obs, spec, ready)
    advantages, _ = ppo.compute_gae(transitions.reward, values, next_values, transitions.terminated,
                                    transitions.truncated, spec.gamma, spec.lambd)
    return np.asarray(advantages)


@pytest.mark.parametrize("env", [DiscountProbe(), DiscountProbe(truncate=True), ShiftedResetProbe(truncate=True)],
                         ids=["terminal", "truncated", "final-obs"])
def test_carried_trajectories_get_the_gae_of_the_whole_trajectory(env):
    """Rollouts of 3 steps, time_horizon 5, episodes of 7: trajectories (5, 2, 5, 2, ...) straddle the rollout ends.
    Every step is learned from exactly once, in the update after its trajectory completes, with the advantage GAE
    gives it over one long rollout (the same critic; the probe's rewards do not depend on the actions)."""
    from rlrobot.train import carry_slots, collect, make_window, next_carry
    params = env.default_params.replace(episode_length=7)
    settings = trainer(time_horizon=5, hyperparameters=dataclasses.replace(trainer().hyperparameters,
                                                                           buffer_size=6, batch_size=2))
    spec = make_train_spec(settings, env.observation_size, env.action_size, num_envs=2)
    assert spec.rollout_steps == 3 and carry_slots(spec) == 4
    state = init_train_state(jax.random.PRNGKey(0), env, params, spec)
    agent = state.agent

    rollouts = 8
    long_spec = dataclasses.replace(spec, rollout_steps=3 * rollouts)
    _, long, _ = collect(env, params, long_spec, state, jax.random.PRNGKey(1))
    whole = _raw_advantages(agent, long, None, long_spec)   # next values evaluated on every next_obs
    learned = np.full(whole.shape, np.nan)
    for k in range(rollouts):
        pending = state.tracker.trajectory_length
        state, transitions, _ = collect(env, params, spec, state, jax.random.PRNGKey(10 + k))
        window = make_window(spec, state.carry, transitions, pending, state.tracker.trajectory_length, state.obs)
        # The critic only where the ready steps need it, in passes of 6 of the window's 16 rows (envs.masked).
        advantages = _raw_advantages(agent, window.transitions, window.last_obs, spec, window.ready)
        slots, robots = np.nonzero(np.asarray(window.ready))
        steps = 3 * k + slots - carry_slots(spec)
        assert np.all(steps >= 0) and np.all(np.isnan(learned[steps, robots]))   # each step once
        learned[steps, robots] = advantages[slots, robots]
        state = state.replace(carry=next_carry(spec, window.transitions))
    open_steps = int(state.tracker.trajectory_length[0])
    assert np.all(np.isnan(learned[len(learned) - open_steps:]))   # the open trajectory waits for the next update
    done = slice(0, len(learned) - open_steps)
    assert not np.any(np.isnan(learned[done]))
    np.testing.assert_allclose(learned[done], whole[done], rtol=1e-5, atol=1e-6)
    cut_at_rollout_ends = _raw_advantages(agent, jax.tree.map(lambda x: x[:3], long), None, spec)
    assert not np.allclose(cut_at_rollout_ends[:3], whole[:3], rtol=1e-5, atol=1e-6)   # the test can tell


def test_the_update_learns_from_ready_steps_only():
    """A window with fewer ready steps than a minibatch leaves the parameters and the optimiser untouched."""
    from rlrobot.train import Window, carry_slots, collect, learn
    env = TargetProbe()
    settings = trainer(time_horizon=5, network_settings=NetworkSettings(hidden_units=32, num_layers=2, normalize=True))
    spec = make_train_spec(settings, env.observation_size, env.action_size, num_envs=64)
    state = init_train_state(jax.random.PRNGKey(0), env, env.default_params, spec)
    state, transitions, _ = collect(env, env.default_params, spec, state, jax.random.PRNGKey(1))
    joined = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), state.carry, transitions)
    ready = jnp.zeros(joined.reward.shape, bool).at[carry_slots(spec), :3].set(True)
    agent, opt_state, metrics = learn(state.agent, state.opt_state, Window(joined, ready, state.obs), jnp.float32(0),
                                      jax.random.PRNGKey(2), spec)
    for a, b in zip(jax.tree.leaves((state.agent.params, state.opt_state)), jax.tree.leaves((agent.params, opt_state))):
        np.testing.assert_array_equal(a, b)
    assert float(agent.actor_norm.steps) == 1.0 + 3   # the normaliser saw the 3 ready observations only
    assert bool(metrics.loss_is_finite)
