"""Normaliser, initialisation and forward passes checked against ML-Agents' numbers and a numpy port."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlrobot.networks import (
    Actor,
    AgentParams,
    Critic,
    MLPBody,
    NetworkSpec,
    _kernel_gradient_cpu,
    deterministic_action,
    env_action,
    init_agent,
    matmul,
    normalize,
    normalizer_init,
    normalizer_update,
    policy_distribution,
    sample_action,
    update_normalizers,
    value_estimate,
)

SHARED = NetworkSpec(obs_size=3, action_size=2, hidden_units=6, num_layers=2, shared_critic=True)
SEPARATE = NetworkSpec(obs_size=3, action_size=2, hidden_units=6, num_layers=2)


def _swish(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _numpy_body(variables: dict, x: np.ndarray, num_layers: int) -> np.ndarray:
    body = variables["params"]["MLPBody_0"]
    for i in range(num_layers):
        layer = body[f"Dense_{i}"]
        x = _swish(x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64))
    return x


def test_normalizer_init_is_mlagents_buffers():
    state = normalizer_init(3)
    assert float(state.steps) == 1.0
    np.testing.assert_array_equal(state.mean, np.zeros(3))
    np.testing.assert_array_equal(state.var, np.ones(3))


def test_normalizer_update_hand_computed():
    # steps 1, mean 0, var 1; add [2]: total 2, mean 1, var 1 + (2-1)(2-0) = 3
    state = normalizer_update(normalizer_init(1), jnp.array([[2.0]]))
    assert float(state.steps) == 2.0
    np.testing.assert_allclose(state.mean, [1.0])
    np.testing.assert_allclose(state.var, [3.0])
    # add [4, -1]: total 4, mean 1 + (3 - 2)/4 = 1.25, var 3 + 2.75*3 + (-2.25)(-2) = 15.75
    state = normalizer_update(state, jnp.array([[4.0], [-1.0]]))
    assert float(state.steps) == 4.0
    np.testing.assert_allclose(state.mean, [1.25])
    np.testing.assert_allclose(state.var, [15.75])
    np.testing.assert_allclose(normalize(state, jnp.array([[3.0]])), [[1.75 / np.sqrt(15.75 / 4.0)]], rtol=1e-6)


def test_normalizer_equals_pseudo_sample_statistics():
    """The batched rule is an exact merge: stats equal those of {0} ∪ data, with the initial var 1 added."""
    rng = np.random.default_rng(0)
    batches = [rng.normal([1.0, -2.0], [0.5, 3.0], size=(n, 2)) for n in (1, 5, 17, 3)]
    state = normalizer_init(2)
    for b in batches:
        state = normalizer_update(state, jnp.asarray(b, jnp.float32))
    pooled = np.concatenate([np.zeros((1, 2))] + batches)
    assert float(state.steps) == len(pooled)
    np.testing.assert_allclose(state.mean, pooled.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.var, 1.0 + ((pooled - pooled.mean(0)) ** 2).sum(0), rtol=1e-5)


def test_normalizer_converges_to_data_mean_and_variance():
    rng = np.random.default_rng(1)
    data = rng.normal([3.0, -1.0, 0.0], [2.0, 0.1, 10.0], size=(20000, 3)).astype(np.float32)
    state = normalizer_init(3)
    for chunk in np.split(data, 20):
        state = normalizer_update(state, jnp.asarray(chunk))
    np.testing.assert_allclose(state.mean, data.mean(0), rtol=1e-3, atol=1e-3)
    # the pseudo-sample biases var/steps by about (1 + mean^2) / n, i.e. ~1e-4 here
    np.testing.assert_allclose(state.var / state.steps, data.var(0), rtol=1e-3, atol=1e-3)
    z = np.asarray(normalize(state, jnp.asarray(data)))
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-2)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-2)


def test_normalize_clips_at_five():
    state = normalizer_init(2)  # identity: mean 0, var/steps 1
    out = normalize(state, jnp.array([[7.0, -9.0], [4.5, -4.5]]))
    np.testing.assert_array_equal(out, [[5.0, -5.0], [4.5, -4.5]])


def test_body_kernel_init_is_untruncated_kaiming_normal():
    fan_in, hidden = 256, 256
    variables = MLPBody(hidden, 2).init(jax.random.PRNGKey(0), jnp.zeros((1, fan_in)))
    for name in ("Dense_0", "Dense_1"):
        kernel = np.asarray(variables["params"][name]["kernel"])
        std = 1.0 / np.sqrt(fan_in)
        assert kernel.std() == pytest.approx(std, rel=0.03)
        assert np.abs(kernel).max() > 3.5 * std  # a truncated normal (cut at 2σ) never gets here
        np.testing.assert_array_equal(variables["params"][name]["bias"], 0.0)


def test_num_layers_zero_still_builds_one_layer_like_mlagents():
    variables = MLPBody(8, 0).init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    assert list(variables["params"]) == ["Dense_0"]


def test_actor_and_critic_heads_init():
    hidden = 512
    spec = NetworkSpec(obs_size=4, action_size=64, hidden_units=hidden, num_layers=2)
    agent = init_agent(jax.random.PRNGKey(3), spec)
    actor = agent.params.actor["params"]
    mu_kernel = np.asarray(actor["mu"]["kernel"])
    assert mu_kernel.shape == (hidden, 64)
    assert mu_kernel.std() == pytest.approx(0.2 / np.sqrt(hidden), rel=0.03)
    np.testing.assert_array_equal(actor["mu"]["bias"], 0.0)
    np.testing.assert_array_equal(actor["log_std"], np.zeros(64))

    value_kernel = np.asarray(agent.params.critic["params"]["value"]["kernel"])
    bound = np.sqrt(6.0 / (hidden + 1))
    assert value_kernel.shape == (hidden, 1)
    assert np.abs(value_kernel).max() <= bound
    assert value_kernel.std() == pytest.approx(bound / np.sqrt(3.0), rel=0.1)
    np.testing.assert_array_equal(agent.params.critic["params"]["value"]["bias"], 0.0)

    obs = jax.random.normal(jax.random.PRNGKey(4), (1000, 4))
    mu, log_std = policy_distribution(agent.params, agent.actor_norm, obs, spec)
    assert mu.shape == log_std.shape == (1000, 64)
    np.testing.assert_array_equal(log_std, 0.0)
    assert 0.01 < float(jnp.std(mu)) < 0.2  # small initial means: actions start near the sigma=1 noise
    assert value_estimate(agent.params, agent.critic_norm, obs, spec).shape == (1000,)


def test_forward_matches_numpy_swish_mlp():
    spec = NetworkSpec(obs_size=3, action_size=2, hidden_units=5, num_layers=1)
    agent = init_agent(jax.random.PRNGKey(7), spec)
    obs = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -0.25]], np.float32)
    mu, log_std = policy_distribution(agent.params, agent.actor_norm, jnp.asarray(obs), spec)

    actor = agent.params.actor
    hidden = _numpy_body(actor, obs.astype(np.float64), 1)
    expected_mu = hidden @ np.asarray(actor["params"]["mu"]["kernel"], np.float64)
    np.testing.assert_allclose(mu, expected_mu, rtol=1e-5, atol=1e-6)
    # a ReLU or tanh body would give different numbers
    relu_mu = np.maximum(obs @ np.asarray(actor["params"]["MLPBody_0"]["Dense_0"]["kernel"]), 0) @ np.asarray(
        actor["params"]["mu"]["kernel"]
    )
    assert not np.allclose(mu, relu_mu, atol=1e-4)

    critic = agent.params.critic
    value_kernel = np.asarray(critic["params"]["value"]["kernel"], np.float64)
    expected_v = _numpy_body(critic, obs.astype(np.float64), 1) @ value_kernel
    value = value_estimate(agent.params, agent.critic_norm, jnp.asarray(obs), spec)
    np.testing.assert_allclose(value, expected_v[:, 0], rtol=1e-5, atol=1e-6)


def test_each_network_uses_its_own_normalizer():
    spec = NetworkSpec(obs_size=2, action_size=1, hidden_units=4, num_layers=1, normalize=True)
    agent = init_agent(jax.random.PRNGKey(0), spec)
    agent = agent.replace(actor_norm=normalizer_update(agent.actor_norm, jnp.array([[10.0, -10.0], [20.0, 5.0]])))
    obs = jnp.array([[1.0, 2.0]])
    mu, _ = policy_distribution(agent.params, agent.actor_norm, obs, spec)
    mu_raw, _ = Actor(4, 1, 1).apply(agent.params.actor, normalize(agent.actor_norm, obs))
    np.testing.assert_allclose(mu, mu_raw)
    value = value_estimate(agent.params, agent.critic_norm, obs, spec)
    np.testing.assert_allclose(value, Critic(4, 1).apply(agent.params.critic, obs))  # critic norm still identity
    unnormalized = NetworkSpec(obs_size=2, action_size=1, hidden_units=4, num_layers=1, normalize=False)
    mu_plain, _ = policy_distribution(agent.params, agent.actor_norm, obs, unnormalized)
    assert not np.allclose(mu_plain, mu)


def test_update_normalizers_updates_both_identically():
    spec = NetworkSpec(obs_size=2, action_size=1, hidden_units=4, num_layers=1, normalize=True)
    agent = update_normalizers(init_agent(jax.random.PRNGKey(0), spec), jnp.array([[1.0, 2.0], [3.0, 4.0]]))
    expected = normalizer_update(normalizer_init(2), jnp.array([[1.0, 2.0], [3.0, 4.0]]))
    for norm in (agent.actor_norm, agent.critic_norm):
        np.testing.assert_allclose(norm.mean, expected.mean)
        np.testing.assert_allclose(norm.var, expected.var)
        assert float(norm.steps) == 3.0


def test_params_are_a_differentiable_pytree():
    spec = NetworkSpec(obs_size=2, action_size=2, hidden_units=4, num_layers=2)
    agent = init_agent(jax.random.PRNGKey(0), spec)
    def mu_sum(p):
        return jnp.sum(policy_distribution(p, agent.actor_norm, jnp.ones((3, 2)), spec)[0])

    grads = jax.grad(mu_sum)(agent.params)
    assert isinstance(grads, AgentParams)
    assert float(jnp.abs(grads.actor["params"]["mu"]["kernel"]).sum()) > 0.0


def test_env_action_and_deterministic_action_clip_then_scale():
    raw = jnp.array([-7.0, -3.0, -1.5, 0.0, 0.3, 3.0, 4.2])
    expected = [-1.0, -1.0, -0.5, 0.0, 0.1, 1.0, 1.0]
    np.testing.assert_allclose(env_action(raw), expected, rtol=1e-6)
    np.testing.assert_allclose(deterministic_action(raw), expected, rtol=1e-6)


def test_sample_action_has_policy_moments():
    mu = jnp.full((50000, 2), jnp.array([0.5, -1.0]))
    log_std = jnp.broadcast_to(jnp.log(jnp.array([0.2, 2.0])), mu.shape)
    a = np.asarray(sample_action(jax.random.PRNGKey(0), mu, log_std))
    np.testing.assert_allclose(a.mean(0), [0.5, -1.0], atol=0.03)
    np.testing.assert_allclose(a.std(0), [0.2, 2.0], rtol=0.02)


def _count(tree: dict) -> int:
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(tree))


def test_shared_critic_defaults_off():
    assert NetworkSpec(obs_size=3, action_size=2).shared_critic is False
    # a checkpoint written before the field existed
    metadata = {"obs_size": 3, "action_size": 2, "hidden_units": 6, "num_layers": 2, "normalize": True}
    assert NetworkSpec(**metadata) == NetworkSpec(3, 2, 6, 2, True, False)


def test_shared_critic_params_are_the_head_only():
    shared = init_agent(jax.random.PRNGKey(0), SHARED)
    separate = init_agent(jax.random.PRNGKey(0), SEPARATE)
    # export reads this layout
    assert jax.tree.structure(shared.params.actor) == jax.tree.structure(separate.params.actor)
    jax.tree.map(np.testing.assert_array_equal, shared.params.actor, separate.params.actor)
    assert list(shared.params.critic["params"]) == ["value"]
    assert _count(shared.params.critic) == SHARED.hidden_units + 1
    assert _count(shared.params) == _count(shared.params.actor) + SHARED.hidden_units + 1
    head = shared.params.critic["params"]["value"]
    assert head["kernel"].shape == (SHARED.hidden_units, 1)
    assert np.abs(np.asarray(head["kernel"])).max() <= np.sqrt(6.0 / (SHARED.hidden_units + 1))  # Xavier uniform
    np.testing.assert_array_equal(head["bias"], 0.0)


def test_shared_value_is_head_on_actor_body():
    agent = init_agent(jax.random.PRNGKey(1), SHARED)
    obs = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -0.25], [0.0, 0.1, 0.2], [1.0, 1.0, 1.0]], np.float32)
    value = value_estimate(agent.params, agent.critic_norm, jnp.asarray(obs), SHARED)
    assert value.shape == (4,)
    head = agent.params.critic["params"]["value"]
    hidden = _numpy_body(agent.params.actor, obs.astype(np.float64), SHARED.num_layers)
    expected = hidden @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"], np.float64)
    np.testing.assert_allclose(value, expected[:, 0], rtol=1e-5, atol=1e-6)
    assert value_estimate(agent.params, agent.critic_norm, jnp.ones((2, 5, 3)), SHARED).shape == (2, 5)


def test_shared_value_uses_the_shared_normalizer():
    spec = NetworkSpec(obs_size=3, action_size=2, hidden_units=6, num_layers=1, normalize=True, shared_critic=True)
    agent = update_normalizers(init_agent(jax.random.PRNGKey(2), spec),
                               jnp.array([[10.0, -10.0, 0.0], [20.0, 5.0, 1.0]]))
    obs = jnp.array([[1.0, 2.0, 3.0]])
    value = value_estimate(agent.params, agent.critic_norm, obs, spec)
    hidden = MLPBody(6, 1).apply({"params": agent.params.actor["params"]["MLPBody_0"]},
                                 normalize(agent.actor_norm, obs))
    head = agent.params.critic["params"]["value"]
    expected = hidden @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(value, expected[:, 0], rtol=1e-6)
    raw = value_estimate(agent.params, agent.critic_norm, obs, NetworkSpec(3, 2, 6, 1, False, True))
    assert not np.allclose(raw, value)


@pytest.mark.parametrize("spec", [SHARED, SEPARATE], ids=["shared", "separate"])
def test_value_gradient_reaches_actor_body_only_when_shared(spec):
    agent = init_agent(jax.random.PRNGKey(3), spec)
    obs = jax.random.normal(jax.random.PRNGKey(4), (8, 3))
    grads = jax.grad(lambda p: jnp.sum(value_estimate(p, agent.critic_norm, obs, spec)))(agent.params)
    assert isinstance(grads, AgentParams)
    body_grad = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads.actor["params"]["MLPBody_0"]))
    head_grad = float(jnp.abs(grads.critic["params"]["value"]["kernel"]).sum())
    assert head_grad > 0.0
    if spec.shared_critic:
        assert body_grad > 0.0
        assert "MLPBody_0" not in grads.critic["params"]
    else:
        assert body_grad == 0.0
        assert float(jnp.abs(grads.critic["params"]["MLPBody_0"]["Dense_0"]["kernel"]).sum()) > 0.0
    # the policy heads never get value gradients
    np.testing.assert_array_equal(grads.actor["params"]["mu"]["kernel"], 0.0)
    np.testing.assert_array_equal(grads.actor["params"]["log_std"], 0.0)


def test_separate_critic_unchanged_by_shared_option():
    """Default behaviour is the same key use and values as a separately built ``Critic``."""
    spec = NetworkSpec(obs_size=3, action_size=2, hidden_units=6, num_layers=2, normalize=True)
    key = jax.random.PRNGKey(5)
    agent = update_normalizers(init_agent(key, spec), jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0]]))
    _, critic_key = jax.random.split(key)
    critic = Critic(6, 2).init(critic_key, jnp.zeros((1, 3)))
    jax.tree.map(np.testing.assert_array_equal, agent.params.critic, critic)
    obs = jax.random.normal(jax.random.PRNGKey(6), (5, 3))
    expected = Critic(6, 2).apply(critic, normalize(agent.critic_norm, obs))
    np.testing.assert_array_equal(value_estimate(agent.params, agent.critic_norm, obs, spec), expected)


@pytest.mark.parametrize("inputs,outputs", [(19, 1), (40, 2), (19, 64), (8, 64), (300, 40)])
def test_matmul_gradients_equal_autodiff_of_the_plain_product(inputs, outputs):
    """Each of the kernel gradient's CPU forms (multiply-sums per column, a matmul of an explicit transpose, one dot)
    gives autodiff's gradients, for a batch with two leading axes too."""
    keys = jax.random.split(jax.random.PRNGKey(outputs), 4)
    x = jax.random.normal(keys[0], (4, 9, inputs))
    kernel = jax.random.normal(keys[1], (inputs, outputs))

    def loss(product):
        return lambda x, kernel: jnp.sum(jnp.sin(product(x, kernel)) * jnp.arange(outputs))

    expected = jax.grad(loss(lambda x, k: x @ k), argnums=(0, 1))(x, kernel)
    got = jax.jit(jax.grad(loss(matmul), argnums=(0, 1)))(x, kernel)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)  # summation order differs
    rows, g_rows = x.reshape(-1, inputs), jax.random.normal(keys[3], (36, outputs))
    np.testing.assert_allclose(_kernel_gradient_cpu(rows, g_rows), rows.T @ g_rows, rtol=1e-5, atol=1e-5)

