"""GAE, distributions, schedules and the PPO loss checked against reference formulas in numpy."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlrobot.networks import NetworkSpec, init_agent, normalizer_update
from rlrobot.ppo import (
    BETA_FLOOR,
    EPSILON_FLOOR,
    LR_FLOOR,
    Batch,
    compute_gae,
    decayed_value,
    gaussian_entropy,
    gaussian_log_prob,
    normalize_advantages,
    ppo_loss,
    schedule_at,
)

GAMMA, LAM = 0.95, 0.9


def course_compute_gae(next_value, rewards, masks, values, gamma=0.99, tau=0.95):
    """Numpy port of the course's reference GAE (single env, masks = 1 - done); returns the returns."""
    values = list(values) + [next_value]
    gae = 0.0
    returns = []
    for step in reversed(range(len(rewards))):
        delta = rewards[step] + gamma * values[step + 1] * masks[step] - values[step]
        gae = delta + gamma * tau * masks[step] * gae
        returns.insert(0, gae + values[step])
    return np.array(returns)


def _random_rollout(seed: int, steps: int, envs: int, p_term: float, p_trunc: float):
    """Auto-reset style data: next_values[t] = values[t+1] unless step t ended an episode."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(steps, envs))
    values_ext = rng.normal(size=(steps + 1, envs))
    terminated = rng.random((steps, envs)) < p_term
    truncated = (rng.random((steps, envs)) < p_trunc) & ~terminated
    done = terminated | truncated
    final_obs_values = rng.normal(size=(steps, envs)) * 5.0  # V(final obs), unrelated to V(reset obs)
    next_values = np.where(done, final_obs_values, values_ext[1:])
    return rewards, values_ext, next_values, terminated, truncated


def _gae(rewards, values, next_values, terminated, truncated):
    as_f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return compute_gae(
        as_f32(rewards), as_f32(values), as_f32(next_values), jnp.asarray(terminated), jnp.asarray(truncated),
        GAMMA, LAM,
    )


def test_gae_matches_course_reference_with_terminations():
    rewards, values_ext, next_values, terminated, truncated = _random_rollout(0, 40, 5, p_term=0.15, p_trunc=0.0)
    assert terminated.any() and not truncated.any()
    advantages, returns = _gae(rewards, values_ext[:-1], next_values, terminated, truncated)
    for n in range(rewards.shape[1]):
        expected = course_compute_gae(
            values_ext[-1, n], rewards[:, n], 1.0 - terminated[:, n], values_ext[:-1, n], gamma=GAMMA, tau=LAM
        )
        np.testing.assert_allclose(returns[:, n], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(advantages[:, n], expected - values_ext[:-1, n], rtol=1e-5, atol=1e-5)


def test_gae_with_truncation_equals_per_episode_reference():
    """ML-Agents' view: each episode piece is its own trajectory, bootstrapped from V(final obs) unless terminal."""
    rewards, values_ext, next_values, terminated, truncated = _random_rollout(1, 50, 4, p_term=0.08, p_trunc=0.08)
    assert terminated.any() and truncated.any()
    values = values_ext[:-1]
    _, returns = _gae(rewards, values, next_values, terminated, truncated)
    steps = rewards.shape[0]
    for n in range(rewards.shape[1]):
        ends = [t for t in range(steps) if terminated[t, n] or truncated[t, n] or t == steps - 1]
        start = 0
        for end in ends:
            piece = slice(start, end + 1)
            bootstrap = 0.0 if terminated[end, n] else next_values[end, n]
            ones = np.ones(end + 1 - start)
            expected = course_compute_gae(bootstrap, rewards[piece, n], ones, values[piece, n], gamma=GAMMA, tau=LAM)
            np.testing.assert_allclose(returns[piece, n], expected, rtol=1e-5, atol=1e-5)
            start = end + 1


def test_gae_hand_computed_truncation_and_termination():
    gamma, lam = 0.9, 0.8
    rewards = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
    values = jnp.array([0.5, 0.6, 0.7, 0.8, 0.9])
    next_values = jnp.array([0.6, 9.0, 0.8, 7.0, 1.0])
    terminated = jnp.array([False, False, False, True, False])
    truncated = jnp.array([False, True, False, True, False])  # step 3 is both: termination wins
    advantages, returns = compute_gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    gae4 = 5.0 + gamma * 1.0 - 0.9  # rollout cut: bootstrap V(next obs)
    gae3 = 4.0 - 0.8  # terminal: bootstrap 0, nothing from step 4
    gae2 = (3.0 + gamma * 0.8 - 0.7) + gamma * lam * gae3
    gae1 = 2.0 + gamma * 9.0 - 0.6  # time limit: bootstrap V(final obs), nothing from step 2
    gae0 = (1.0 + gamma * 0.6 - 0.5) + gamma * lam * gae1
    expected = np.array([gae0, gae1, gae2, gae3, gae4])
    np.testing.assert_allclose(advantages, expected, rtol=1e-6)
    np.testing.assert_allclose(returns, expected + np.asarray(values), rtol=1e-6)


def test_gae_accepts_float_flags_and_jit():
    rewards, values_ext, next_values, terminated, truncated = _random_rollout(2, 16, 3, p_term=0.1, p_trunc=0.1)
    expected = _gae(rewards, values_ext[:-1], next_values, terminated, truncated)
    jitted = jax.jit(compute_gae, static_argnums=(5, 6))(
        jnp.asarray(rewards, jnp.float32),
        jnp.asarray(values_ext[:-1], jnp.float32),
        jnp.asarray(next_values, jnp.float32),
        jnp.asarray(terminated, jnp.float32),
        jnp.asarray(truncated, jnp.float32),
        GAMMA,
        LAM,
    )
    for got, want in zip(jitted, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_normalize_advantages_uses_population_std():
    adv = np.array([1.0, 2.0, 4.0, -3.0, 0.5], np.float32)
    np.testing.assert_allclose(normalize_advantages(jnp.asarray(adv)), (adv - adv.mean()) / (adv.std() + 1e-10),
                               rtol=1e-6)


def _analytic_normal_log_pdf(a, mu, sigma):
    return -0.5 * ((a - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2.0 * np.pi)


def _mlagents_log_prob(a, mu, log_std):
    std = np.exp(log_std)
    return -((a - mu) ** 2) / (2.0 * std**2 + 1e-7) - np.log(std + 1e-7) - np.log(np.sqrt(2.0 * np.pi))


def _mlagents_entropy(log_std):
    return np.mean(0.5 * np.log(2.0 * np.pi * np.e * np.exp(log_std) ** 2 + 1e-7), axis=-1)


def test_gaussian_log_prob_is_per_dimension_normal_log_pdf():
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(64, 3))
    sigma = rng.uniform(0.3, 3.0, size=(64, 3))
    a = mu + sigma * rng.normal(size=(64, 3)) * 2.0
    got = gaussian_log_prob(jnp.asarray(a), jnp.asarray(mu), jnp.asarray(np.log(sigma)))
    assert got.shape == (64, 3)
    np.testing.assert_allclose(got, _analytic_normal_log_pdf(a, mu, sigma), rtol=1e-5, atol=1e-5)


def test_gaussian_log_prob_keeps_mlagents_epsilons_for_tiny_sigma():
    mu, a = np.array([0.0, 1.0]), np.array([1e-4, 1.0 - 2e-4])
    log_std = np.log(np.array([1e-4, 2e-4]))
    got = gaussian_log_prob(jnp.asarray(a), jnp.asarray(mu), jnp.asarray(log_std))
    np.testing.assert_allclose(got, _mlagents_log_prob(a, mu, log_std), rtol=1e-4)
    assert not np.allclose(got, _analytic_normal_log_pdf(a, mu, np.exp(log_std)), rtol=1e-2)


def test_gaussian_entropy_mlagents_formula():
    log_std = np.log(np.array([[0.5, 2.0], [1.0, 1e-5]]))
    got = gaussian_entropy(jnp.asarray(log_std, jnp.float32))
    assert got.shape == (2,)
    np.testing.assert_allclose(got, _mlagents_entropy(log_std), rtol=1e-5)
    analytic_first = np.mean(0.5 * np.log(2 * np.pi * np.e) + log_std[0])
    np.testing.assert_allclose(got[0], analytic_first, rtol=1e-6)  # the 1e-7 is negligible at sigma ~ 1
    assert float(got[1]) > np.mean(0.5 * np.log(2 * np.pi * np.e) + log_std[1]) + 1.0  # ... and not at 1e-5


FLOORS = [(3e-4, LR_FLOOR), (0.2, EPSILON_FLOOR), (5e-3, BETA_FLOOR)]


@pytest.mark.parametrize(("initial", "floor"), FLOORS)
def test_decayed_value_linear_with_floor(initial, floor):
    max_steps = 1000
    cases = {0: initial, 500: (initial - floor) * 0.5 + floor, 250: (initial - floor) * 0.75 + floor,
             1000: floor, 5000: floor}
    for step, expected in cases.items():
        assert float(decayed_value(initial, floor, step, max_steps, "linear")) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("initial", "floor"), FLOORS)
def test_decayed_value_constant(initial, floor):
    for step in (0, 500, 1000, 5000):
        assert float(decayed_value(initial, floor, step, 1000, "constant")) == pytest.approx(initial, rel=1e-7)


def test_decayed_value_rejects_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        decayed_value(0.1, 0.0, 0, 10, "cosine")


def test_schedule_at_uses_the_floors_and_traced_steps():
    make = jax.jit(
        functools.partial(
            schedule_at, max_steps=2000, learning_rate=3e-4, beta=5e-3, epsilon=0.3, learning_rate_schedule="constant"
        )
    )
    half = make(jnp.asarray(1000))
    assert float(half.learning_rate) == pytest.approx(3e-4, rel=1e-6)
    assert float(half.epsilon) == pytest.approx(0.2, rel=1e-6)
    assert float(half.beta) == pytest.approx((5e-3 - 1e-5) / 2 + 1e-5, rel=1e-6)
    late = schedule_at(10**7, 2000, 3e-4, 5e-3, 0.3)
    assert float(late.learning_rate) == pytest.approx(1e-10, rel=1e-5)
    assert float(late.epsilon) == pytest.approx(0.1, rel=1e-6)
    assert float(late.beta) == pytest.approx(1e-5, rel=1e-5)


# --- PPO loss -------------------------------------------------------------------------------------------------

SPEC = NetworkSpec(obs_size=3, action_size=2, hidden_units=6, num_layers=1, normalize=True)
OBS = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -0.25], [-1.5, 1.0, 0.0], [0.2, 0.2, 4.0]])
RAW_ACTION = np.array([[0.3, -1.2], [2.5, 0.1], [-0.4, -3.5], [0.0, 0.9]])


def _agent():
    agent = init_agent(jax.random.PRNGKey(11), SPEC)
    actor = agent.params.actor
    actor = {"params": {**actor["params"], "log_std": jnp.array([-0.3, 0.2])}}
    return agent.replace(
        params=agent.params.replace(actor=actor),
        actor_norm=normalizer_update(agent.actor_norm,
                                     jnp.array([[1.0, 2.0, -1.0], [3.0, -2.0, 0.5], [0.0, 0.0, 8.0]])),
        critic_norm=normalizer_update(agent.critic_norm, jnp.array([[-4.0, 1.0, 2.0], [2.0, 6.0, -3.0]])),
    )


def _np(x):
    return np.asarray(x, np.float64)


def _numpy_forward(agent, obs):
    """Independent numpy port of normaliser + Swish MLP + heads."""

    def norm(state, x):
        return np.clip((x - _np(state.mean)) / np.sqrt(_np(state.var) / float(state.steps)), -5.0, 5.0)

    def body(p, x):
        h = x @ _np(p["MLPBody_0"]["Dense_0"]["kernel"]) + _np(p["MLPBody_0"]["Dense_0"]["bias"])
        return h / (1.0 + np.exp(-h))

    actor, critic = agent.params.actor["params"], agent.params.critic["params"]
    mu = body(actor, norm(agent.actor_norm, obs)) @ _np(actor["mu"]["kernel"]) + _np(actor["mu"]["bias"])
    log_std = np.broadcast_to(_np(actor["log_std"]), mu.shape)
    value = ((body(critic, norm(agent.critic_norm, obs)) @ _np(critic["value"]["kernel"]))[:, 0]
             + _np(critic["value"]["bias"]))
    return mu, log_std, value


def _numpy_ppo_loss(agent, batch, epsilon, beta):
    mu, log_std, value = _numpy_forward(agent, _np(batch.obs))
    log_ratio = _mlagents_log_prob(_np(batch.raw_action), mu, log_std) - _np(batch.log_prob)
    ratio = np.exp(log_ratio)
    adv = _np(batch.advantage)[:, None]
    policy = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 1 - epsilon, 1 + epsilon) * adv))
    old_v, ret = _np(batch.value), _np(batch.returns)
    clipped = old_v + np.clip(value - old_v, -epsilon, epsilon)
    value_loss = np.mean(np.maximum((ret - value) ** 2, (ret - clipped) ** 2))
    entropy = np.mean(_mlagents_entropy(log_std))
    metrics = {
        "policy_loss": abs(policy),
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": np.mean(ratio - 1 - log_ratio),
        "clip_fraction": np.mean(np.abs(ratio - 1) > epsilon),
    }
    return policy + 0.5 * value_loss - beta * entropy, metrics


def _batch(agent, log_prob_shift, value_shift, advantage, returns):
    mu, log_std, value = _numpy_forward(agent, OBS)
    current_log_prob = _mlagents_log_prob(RAW_ACTION, mu, log_std)
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return Batch(
        obs=f32(OBS),
        raw_action=f32(RAW_ACTION),
        log_prob=f32(current_log_prob + np.asarray(log_prob_shift)),
        value=f32(value + np.asarray(value_shift)),
        advantage=f32(advantage),
        returns=f32(returns),
    )


def test_ppo_loss_matches_numpy_on_hand_built_batch():
    agent = _agent()
    batch = _batch(
        agent,
        # ratio = e^-shift; the clip binds at [0][0] (r>1.2, A>0) and [1][0] (r<0.8, A<0), not at [2][1], [3][1]
        log_prob_shift=[[-0.3, -0.05], [0.4, 0.1], [0.0, 0.25], [0.1, -0.3]],
        value_shift=[0.5, -0.05, -0.3, 0.1],  # some value moves outside ±0.2
        advantage=[1.0, -0.5, 2.0, -1.5],
        returns=[1.5, -0.2, 0.3, 2.0],
    )
    epsilon, beta = 0.2, 0.01
    loss, metrics = ppo_loss(agent.params, agent.actor_norm, agent.critic_norm, batch, epsilon, beta, SPEC)
    expected_loss, expected_metrics = _numpy_ppo_loss(agent, batch, epsilon, beta)
    assert 0.0 < expected_metrics["clip_fraction"] < 1.0
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert set(metrics) == set(expected_metrics)
    for name, value in expected_metrics.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_ppo_loss_at_old_policy_is_minus_mean_advantage():
    agent = _agent()
    advantage = np.array([1.0, 2.0, 3.0, -0.5])
    returns = np.array([0.4, -1.0, 2.0, 0.0])
    batch = _batch(agent, np.zeros((4, 2)), np.zeros(4), advantage, returns)
    beta = 0.01
    loss, metrics = ppo_loss(agent.params, agent.actor_norm, agent.critic_norm, batch, 0.2, beta, SPEC)
    _, _, value = _numpy_forward(agent, OBS)
    value_loss = np.mean((returns - value) ** 2)
    np.testing.assert_allclose(metrics["policy_loss"], abs(-advantage.mean()), rtol=1e-5)
    np.testing.assert_allclose(metrics["value_loss"], value_loss, rtol=1e-5)
    np.testing.assert_allclose(loss, -advantage.mean() + 0.5 * value_loss - beta * metrics["entropy"], rtol=1e-5)
    assert float(metrics["clip_fraction"]) == 0.0
    assert float(metrics["approx_kl"]) == pytest.approx(0.0, abs=1e-6)
    expected_entropy = np.mean(0.5 * np.log(2 * np.pi * np.e) + np.array([-0.3, 0.2]))
    np.testing.assert_allclose(metrics["entropy"], expected_entropy, rtol=1e-5)


def test_ppo_loss_gradient_is_finite_under_jit():
    agent = _agent()
    batch = _batch(agent, np.full((4, 2), 0.1), np.full(4, 0.1), [1.0, -0.5, 2.0, -1.5], [1.5, -0.2, 0.3, 2.0])
    grad_fn = jax.jit(jax.value_and_grad(functools.partial(ppo_loss, spec=SPEC), has_aux=True))
    (loss, metrics), grads = grad_fn(agent.params, agent.actor_norm, agent.critic_norm, batch, 0.2, 0.005)
    assert np.isfinite(float(loss))
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
    assert float(jnp.abs(grads.actor["params"]["log_std"]).sum()) > 0.0
    assert float(jnp.abs(grads.critic["params"]["value"]["kernel"]).sum()) > 0.0
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(agent.params)
