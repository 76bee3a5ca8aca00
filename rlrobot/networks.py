"""Actor, critic and observation normaliser, initialised and wired the way ML-Agents builds them.

ML-Agents (``shared_critic: false``) keeps two separate MLPs, each behind its own observation normaliser. Both are
mirrored here so that training dynamics match and the ONNX export can carry the actor's normaliser exactly.
With ``shared_critic: true`` (ML-Agents' ``SharedActorCritic``) the value head sits on the actor's body instead, so
the value loss also trains that body; the critic's parameters are then the head alone.
Parameters (``AgentParams``) and normaliser statistics live apart so gradients are taken w.r.t. the parameters
while the statistics stay fixed.
"""
from __future__ import annotations

from dataclasses import dataclass

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

NORMALIZED_OBS_CLIP = 5.0
ACTION_CLIP = 3.0

# torch kaiming_normal_(linear): std 1/sqrt(fan_in)
_kaiming_linear = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
_mu_head = nn.initializers.variance_scaling(0.2**2, "fan_in", "normal")  # the same, times kernel_gain 0.2
_zeros = nn.initializers.zeros


@dataclass(frozen=True)
class NetworkSpec:
    """Static network shape; hashable so jitted code can close over it or take it as a static argument."""

    obs_size: int
    action_size: int
    hidden_units: int = 128
    num_layers: int = 2
    normalize: bool = False
    shared_critic: bool = False  # last, defaulted: older checkpoint metadata still builds a spec


@flax.struct.dataclass
class NormalizerState:
    """ML-Agents' running statistics; ``var`` is a running sum of squared deviations, not a variance."""

    steps: chex.Array
    mean: chex.Array
    var: chex.Array


def normalizer_init(size: int) -> NormalizerState:
    """ML-Agents' initial buffers: one pseudo-sample at 0 with unit variance."""
    return NormalizerState(
        steps=jnp.ones((), jnp.float32), mean=jnp.zeros((size,), jnp.float32), var=jnp.ones((size,), jnp.float32)
    )


def normalizer_update(state: NormalizerState, x: chex.Array, mask: chex.Array | None = None) -> NormalizerState:
    """Fold a batch ``x[n, d]`` into the statistics with ML-Agents' batched update (exact Chan merge); with a
    boolean ``mask[n]`` only the rows where it is set (the rest may hold anything finite)."""
    chex.assert_rank(x, 2)
    chex.assert_axis_dimension(x, 1, state.mean.shape[0])
    if mask is None:
        total = state.steps + x.shape[0]
        to_old_mean = x - state.mean
        new_mean = state.mean + jnp.sum(to_old_mean / total, axis=0)
        new_var = state.var + jnp.sum((x - new_mean) * to_old_mean, axis=0)
        return NormalizerState(steps=total, mean=new_mean, var=new_var)
    keep = mask[:, None]
    total = state.steps + jnp.sum(mask, dtype=jnp.float32)
    to_old_mean = jnp.where(keep, x - state.mean, 0.0)
    new_mean = state.mean + jnp.sum(to_old_mean / total, axis=0)
    new_var = state.var + jnp.sum(jnp.where(keep, x - new_mean, 0.0) * to_old_mean, axis=0)
    return NormalizerState(steps=total, mean=new_mean, var=new_var)


def normalize(state: NormalizerState, x: chex.Array) -> chex.Array:
    """Standardise and clip to ±5; no epsilon, as in ML-Agents (var starts at 1 and only grows)."""
    return jnp.clip((x - state.mean) / jnp.sqrt(state.var / state.steps), -NORMALIZED_OBS_CLIP, NORMALIZED_OBS_CLIP)


#: On a CPU a kernel's gradient with up to this many outputs is taken column by column, and one whose both sides
#: lie in this range through an explicit transpose (``_kernel_gradient_cpu``).
FEW_OUTPUTS = 4
MID_SIZED = (16, 256)


@jax.custom_vjp
def matmul(x: chex.Array, kernel: chex.Array) -> chex.Array:
    """``x @ kernel``, whose kernel gradient ``xᵀ g`` is taken in a form the backend runs fast.

    Autodiff takes ``xᵀ g`` as one dot contracting the batch axis of both operands, a form XLA's CPU backend runs
    well below its plain matmuls (on 512 rows: 82 µs against 51 µs with the transpose for a 64×64 kernel, 52 µs
    against 13 µs for the 64×2 policy head), the largest cost of a small network's update. Accelerators run it as
    fast as any other form, and keep it.
    """
    return x @ kernel


def _matmul_forward(x: chex.Array, kernel: chex.Array) -> tuple[chex.Array, tuple]:
    return matmul(x, kernel), (x, kernel)


def _matmul_backward(saved: tuple, g: chex.Array) -> tuple[chex.Array, chex.Array]:
    x, kernel = saved
    rows, g_rows = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    kernel_grad = jax.lax.platform_dependent(rows, g_rows, cpu=_kernel_gradient_cpu, default=lambda x, g: x.T @ g)
    return g @ kernel.T, kernel_grad


def _kernel_gradient_cpu(x: chex.Array, g: chex.Array) -> chex.Array:
    """``xᵀ g`` for ``x[B, I]``, ``g[B, O]`` on a CPU, in the form measured fastest for its shape: one output is the
    matrix-vector product ``(gᵀ x)ᵀ``; a few are multiply-sums over the batch, one per column; a mid-sized kernel is
    a plain matmul of an explicit ``xᵀ`` (the barrier keeps XLA from folding the transpose back into the dot); a thin
    or wide one stays one dot (for 512×512 the transpose costs more than it saves)."""
    inputs, outputs = x.shape[1], g.shape[1]
    if outputs == 1:
        return (g.T @ x).T
    if outputs <= FEW_OUTPUTS:
        return jnp.stack([jnp.sum(x * g[:, j:j + 1], axis=0) for j in range(outputs)], axis=1)
    if MID_SIZED[0] <= min(inputs, outputs) and max(inputs, outputs) <= MID_SIZED[1]:
        return jax.lax.optimization_barrier(x.T) @ g
    return x.T @ g


matmul.defvjp(_matmul_forward, _matmul_backward)


def _dense_dot_general(lhs: chex.Array, rhs: chex.Array, dimension_numbers, precision=None,
                       preferred_element_type=None) -> chex.Array:
    """``flax.linen.Dense``'s ``dot_general`` (the input's last axis against the kernel's first) as :func:`matmul`."""
    assert dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())), dimension_numbers
    return matmul(lhs, rhs)


def _dense(features: int, kernel_init: nn.initializers.Initializer, name: str | None = None) -> nn.Dense:
    """ML-Agents' linear layer: zero bias, and the kernel gradient of :func:`matmul`."""
    return nn.Dense(features, kernel_init=kernel_init, bias_init=_zeros, dot_general=_dense_dot_general, name=name)


class MLPBody(nn.Module):
    """ML-Agents' ``LinearEncoder``: Linear→Swish layers (it always builds at least one)."""

    hidden_units: int
    num_layers: int

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        for _ in range(max(self.num_layers, 1)):
            x = nn.swish(_dense(self.hidden_units, _kaiming_linear)(x))
        return x


class Actor(nn.Module):
    """Gaussian policy with a state-independent log-std (``conditional_sigma=False``); returns ``(mu, log_std)``."""

    hidden_units: int
    num_layers: int
    action_size: int

    @nn.compact
    def __call__(self, x: chex.Array) -> tuple[chex.Array, chex.Array]:
        hidden = MLPBody(self.hidden_units, self.num_layers)(x)
        mu = _dense(self.action_size, _mu_head, name="mu")(hidden)
        log_std = self.param("log_std", _zeros, (self.action_size,))
        return mu, jnp.broadcast_to(log_std, mu.shape)


def _value_layer(hidden: chex.Array) -> chex.Array:
    """ML-Agents' ``ValueHeads`` for the one extrinsic stream: a Xavier-uniform ``Dense(1)`` named ``value``.

    Only call inside a compact ``__call__``; both critics use it so their heads cannot drift apart.
    """
    value = _dense(1, nn.initializers.xavier_uniform(), name="value")(hidden)
    return jnp.squeeze(value, -1)


class Critic(nn.Module):
    """Value network with its own body and a Xavier-uniform head (``shared_critic: false``)."""

    hidden_units: int
    num_layers: int

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        return _value_layer(MLPBody(self.hidden_units, self.num_layers)(x))


class ValueHead(nn.Module):
    """The head alone, applied to the actor's body output (``shared_critic: true``); params ``{"value": ...}``."""

    @nn.compact
    def __call__(self, hidden: chex.Array) -> chex.Array:
        return _value_layer(hidden)


@flax.struct.dataclass
class AgentParams:
    """The trainable part: one flax variables pytree per network.

    With ``shared_critic`` the ``critic`` tree is only the value head; the body it reads is ``actor``'s ``MLPBody_0``.
    One optimiser over this whole pytree is then ML-Agents' one optimiser over the shared network.
    """

    actor: dict
    critic: dict


@flax.struct.dataclass
class AgentState:
    """Parameters plus the two normalisers ML-Agents keeps (both updated with the same observations)."""

    params: AgentParams
    actor_norm: NormalizerState
    critic_norm: NormalizerState


def _actor(spec: NetworkSpec) -> Actor:
    return Actor(spec.hidden_units, spec.num_layers, spec.action_size)


def _critic(spec: NetworkSpec) -> Critic:
    return Critic(spec.hidden_units, spec.num_layers)


def _init_critic(key: chex.PRNGKey, spec: NetworkSpec) -> dict:
    """A full critic, or with ``shared_critic`` just the head (its input is the actor body's width)."""
    if spec.shared_critic:
        return ValueHead().init(key, jnp.zeros((1, spec.hidden_units), jnp.float32))
    return _critic(spec).init(key, jnp.zeros((1, spec.obs_size), jnp.float32))


def init_agent(key: chex.PRNGKey, spec: NetworkSpec) -> AgentState:
    """Fresh networks with ML-Agents' initialisation and identity-like normalisers."""
    actor_key, critic_key = jax.random.split(key)
    dummy = jnp.zeros((1, spec.obs_size), jnp.float32)
    params = AgentParams(actor=_actor(spec).init(actor_key, dummy), critic=_init_critic(critic_key, spec))
    return AgentState(params=params, actor_norm=normalizer_init(spec.obs_size),
                      critic_norm=normalizer_init(spec.obs_size))


def update_normalizers(agent: AgentState, obs: chex.Array, mask: chex.Array | None = None) -> AgentState:
    """Update both normalisers with the same observations ``obs[n, obs_size]``, as ML-Agents does per trajectory."""
    return agent.replace(actor_norm=normalizer_update(agent.actor_norm, obs, mask),
                         critic_norm=normalizer_update(agent.critic_norm, obs, mask))


def policy_distribution(
    params: AgentParams, actor_norm: NormalizerState, obs: chex.Array, spec: NetworkSpec
) -> tuple[chex.Array, chex.Array]:
    """``(mu, log_std)`` of the Gaussian policy for ``obs[..., obs_size]``; log_std is broadcast to mu's shape."""
    chex.assert_axis_dimension(obs, -1, spec.obs_size)
    x = normalize(actor_norm, obs) if spec.normalize else obs
    return _actor(spec).apply(params.actor, x)


def value_estimate(params: AgentParams, critic_norm: NormalizerState, obs: chex.Array, spec: NetworkSpec) -> chex.Array:
    """Critic value ``[...]`` for ``obs[..., obs_size]``.

    With ``shared_critic`` the head is applied to the actor's body, so value gradients reach ``params.actor`` too.
    ML-Agents then has a single normaliser; ``update_normalizers`` keeps ``critic_norm`` equal to ``actor_norm``,
    so the normaliser passed here is the shared one whichever of the two the caller holds.
    """
    chex.assert_axis_dimension(obs, -1, spec.obs_size)
    x = normalize(critic_norm, obs) if spec.normalize else obs
    if not spec.shared_critic:
        return _critic(spec).apply(params.critic, x)
    body = MLPBody(spec.hidden_units, spec.num_layers)
    hidden = body.apply({"params": params.actor["params"]["MLPBody_0"]}, x)
    return ValueHead().apply(params.critic, hidden)


def sample_action(key: chex.PRNGKey, mu: chex.Array, log_std: chex.Array) -> chex.Array:
    """Unclipped Gaussian sample; this raw action is what the buffer stores and the log-prob is taken of."""
    return mu + jax.random.normal(key, mu.shape, mu.dtype) * jnp.exp(log_std)


def env_action(raw_action: chex.Array) -> chex.Array:
    """What ML-Agents sends to the environment (and the ONNX graph outputs): ``clip(a, -3, 3) / 3``."""
    return jnp.clip(raw_action, -ACTION_CLIP, ACTION_CLIP) / ACTION_CLIP


def deterministic_action(mu: chex.Array) -> chex.Array:
    """The deterministic action (``deterministic_continuous_actions``): the mean, clipped like a sample."""
    return env_action(mu)
