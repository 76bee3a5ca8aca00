import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from probe_envs import DiscountProbe, TargetProbe

from rlrobot.config import NetworkSettings, PPOSettings, RewardSignalSettings, TrainerSettings
from rlrobot.networks import policy_distribution, value_estimate
from rlrobot.train import init_train_state, make_train_iterations, make_train_spec, summary_scalars


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
    env = TargetProbe()
    spec, state, _ = train(env, trainer(), iterations=60)
    obs = jnp.linspace(-0.8, 0.8, 9)[:, None]
    mu, _ = policy_distribution(state.agent.params, state.agent.actor_norm, obs, spec.network)
    np.testing.assert_allclose(np.clip(mu[:, 0], -3, 3) / 3, obs[:, 0], atol=0.1)


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
    assert int(state.step) == 3 * 1056
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
