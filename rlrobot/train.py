"""The jitted PPO iteration: rollout over vmapped robots, normaliser update, GAE and the epoch/minibatch update.

One iteration collects ``num_envs × rollout_steps`` agent transitions (≥ ``buffer_size``) and updates on all of
them, as ML-Agents does once its buffer is full. ``make_train_iterations`` runs a dynamic number of iterations in
one compiled ``lax.while_loop`` and returns summed metrics, so the host wakes only to log and save, and a changing
number of iterations per wake-up never recompiles. The same program runs split across devices (``mesh``, see
``parallel``) and vmapped over independent runs (``batched``: seeds, and swept ``Hyperparams``). Device code only:
``rlrobot.trainer`` builds it from settings, ``rlrobot.runner`` drives it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh

from envs.api import Environment
from rlrobot import parallel, ppo
from rlrobot.config import TrainerSettings
from rlrobot.networks import (
    AgentState,
    NetworkSpec,
    env_action,
    init_agent,
    policy_distribution,
    sample_action,
    update_normalizers,
    value_estimate,
)
from rlrobot.run import Summary


@dataclass(frozen=True)
class TrainSpec:
    """Everything static about a run: shapes and hyperparameters (hashable, closed over by the jitted code)."""

    network: NetworkSpec
    num_envs: int
    rollout_steps: int
    batch_size: int
    num_epoch: int
    time_horizon: int
    gamma: float
    lambd: float
    max_steps: int
    learning_rate: float
    beta: float
    epsilon: float
    learning_rate_schedule: str
    beta_schedule: str
    epsilon_schedule: str
    reward_strength: float = 1.0   # reward_signals.extrinsic.strength: the learner's reward is the env's times it

    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs * self.rollout_steps

    @property
    def num_minibatches(self) -> int:
        return max(1, self.steps_per_iteration // self.batch_size)


def default_num_envs(settings: TrainerSettings, backend: str) -> int:
    """Robots per iteration: rollouts of ~128 steps on a CPU (32 on an accelerator), never past time_horizon."""
    target_steps = min(settings.time_horizon, 128 if backend == "cpu" else 32)
    return max(1, settings.hyperparameters.buffer_size // target_steps)


def make_train_spec(settings: TrainerSettings, obs_size: int, action_size: int, num_envs: int) -> TrainSpec:
    hp, net = settings.hyperparameters, settings.network_settings
    return TrainSpec(
        network=NetworkSpec(obs_size=obs_size, action_size=action_size, hidden_units=net.hidden_units,
                            num_layers=net.num_layers, normalize=net.normalize, shared_critic=hp.shared_critic),
        num_envs=num_envs,
        rollout_steps=math.ceil(hp.buffer_size / num_envs),
        batch_size=min(hp.batch_size, num_envs * math.ceil(hp.buffer_size / num_envs)),
        num_epoch=hp.num_epoch, time_horizon=settings.time_horizon, gamma=settings.gamma, lambd=hp.lambd,
        max_steps=settings.max_steps, learning_rate=hp.learning_rate, beta=hp.beta, epsilon=hp.epsilon,
        learning_rate_schedule=hp.learning_rate_schedule, beta_schedule=hp.beta_schedule,
        epsilon_schedule=hp.epsilon_schedule, reward_strength=settings.reward_signals["extrinsic"].strength,
    )


@struct.dataclass
class Hyperparams:
    """The numbers a sweep varies. A run closes over Python floats (constants, as before); a sweep passes arrays,
    traced, so one compile serves every value."""

    learning_rate: Any
    beta: Any
    epsilon: Any
    lambd: Any
    gamma: Any

    @classmethod
    def from_spec(cls, spec: TrainSpec) -> Hyperparams:
        return cls(learning_rate=spec.learning_rate, beta=spec.beta, epsilon=spec.epsilon, lambd=spec.lambd,
                   gamma=spec.gamma)



@struct.dataclass
class EpisodeTracker:
    """Per-robot running episode return/length and steps since the last trajectory cut (time_horizon)."""

    returns: jnp.ndarray
    lengths: jnp.ndarray
    trajectory_length: jnp.ndarray


@struct.dataclass
class TrainState:
    """Everything a run needs to continue bit-exactly: networks, optimiser, robots, RNG and step count."""

    agent: AgentState
    opt_state: Any
    env_state: Any
    obs: jnp.ndarray
    tracker: EpisodeTracker
    key: jnp.ndarray
    step: jnp.ndarray


RETURNS_SAMPLE = 1024  # episode returns kept per summary for the Cumulative Reward histogram


@struct.dataclass
class Metrics:
    """Sums over the iterations since the host last looked; ``summary_scalars`` turns them into summary scalars.

    ``iterations`` counts rollouts (the divisor of ``entropy``), ``updates`` the buffers learned from (the divisor of
    the learned fields: with a threaded Unity run a rollout's update can land in the next summary). ``returns_sample``
    holds the first ``RETURNS_SAMPLE`` episode returns of the period, in order, for the reward histogram.
    """

    iterations: jnp.ndarray
    updates: jnp.ndarray
    episodes: jnp.ndarray
    episode_return: jnp.ndarray
    episode_return_sq: jnp.ndarray
    episode_length: jnp.ndarray
    successes: jnp.ndarray
    entropy: jnp.ndarray
    value_estimate: jnp.ndarray
    policy_loss: jnp.ndarray
    value_loss: jnp.ndarray
    approx_kl: jnp.ndarray
    clip_fraction: jnp.ndarray
    learning_rate: jnp.ndarray
    beta: jnp.ndarray
    epsilon: jnp.ndarray
    loss_is_finite: jnp.ndarray
    returns_sample: jnp.ndarray

    @classmethod
    def zeros(cls) -> Metrics:
        values = {name: jnp.float32(0.0) for name in cls.__dataclass_fields__}
        values["loss_is_finite"] = jnp.bool_(True)
        values["returns_sample"] = jnp.zeros(RETURNS_SAMPLE, jnp.float32)
        return cls(**values)

    def add(self, other: Metrics) -> Metrics:
        """Sum two periods; the returns sample keeps this period's episodes, then the other's."""
        summed = jax.tree.map(jnp.add, self, other)
        return summed.replace(loss_is_finite=self.loss_is_finite & other.loss_is_finite,
                              returns_sample=_append_sample(self.returns_sample, self.episodes, other.returns_sample))


def _append_sample(first: jnp.ndarray, count: jnp.ndarray, second: jnp.ndarray) -> jnp.ndarray:
    """The first ``min(count, C)`` entries of ``first`` followed by ``second``, cut to C (leading axes: runs)."""
    size = first.shape[-1]
    index = jnp.arange(size)
    kept = jnp.minimum(jnp.asarray(count, jnp.int32), size)[..., None]
    later = jnp.take_along_axis(second, jnp.clip(index - kept, 0, size - 1), axis=-1)
    return jnp.where(index < kept, first, later)


def returns_sample(ended_returns: jnp.ndarray, ended: jnp.ndarray) -> jnp.ndarray:
    """The first ``RETURNS_SAMPLE`` returns of episodes that ended, in time order, from ``[T, N]`` arrays."""
    flat_ended, flat_returns = ended.reshape(-1), ended_returns.reshape(-1)
    position = jnp.cumsum(flat_ended) - 1
    target = jnp.where(flat_ended & (position < RETURNS_SAMPLE), position, RETURNS_SAMPLE)
    return jnp.zeros(RETURNS_SAMPLE, jnp.float32).at[target].set(flat_returns, mode="drop")


def make_optimizer() -> optax.GradientTransformation:
    """Adam with torch's defaults and a learning rate set every update (ML-Agents: one Adam, no grad clipping)."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=0.0)


def init_train_state(key: chex.PRNGKey, env: Environment, env_params, spec: TrainSpec) -> TrainState:
    key_agent, key_env, key_run = jax.random.split(key, 3)
    agent = init_agent(key_agent, spec.network)
    obs, env_state = env.reset_batch(key_env, env_params, spec.num_envs)
    zeros = jnp.zeros(spec.num_envs, jnp.float32)
    return TrainState(agent=agent, opt_state=make_optimizer().init(agent.params), env_state=env_state, obs=obs,
                      tracker=EpisodeTracker(returns=zeros, lengths=zeros, trajectory_length=zeros.astype(jnp.int32)),
                      key=key_run, step=jnp.int32(0))


@struct.dataclass
class Transition:
    obs: jnp.ndarray
    raw_action: jnp.ndarray
    log_prob: jnp.ndarray
    reward: jnp.ndarray
    terminated: jnp.ndarray
    truncated: jnp.ndarray   # time limit, or a time_horizon cut: bootstrap from V(next_obs)
    next_obs: jnp.ndarray    # the real next observation (the final one when an episode ended)


@struct.dataclass
class EpisodeEnds:
    """Per robot and decision: whether an episode ended there, and its return and length if so."""

    done: jnp.ndarray
    returns: jnp.ndarray
    lengths: jnp.ndarray


def _rollout_step(env: Environment, env_params, spec: TrainSpec, explore: bool, carry, key):
    """One decision for every robot: act, step, and book-keep episodes and trajectory cuts."""
    agent, env_state, obs, tracker = carry
    key_act, key_env = jax.random.split(key)
    mu, log_std = policy_distribution(agent.params, agent.actor_norm, obs, spec.network)
    raw = sample_action(key_act, mu, log_std) if explore else mu
    next_obs, env_state, reward, terminated, truncated, info = env.step_batch(key_env, env_state, env_action(raw),
                                                                              env_params)
    done = terminated | truncated
    trajectory_length = tracker.trajectory_length + 1
    cut = (trajectory_length >= spec.time_horizon) & ~done
    transition = Transition(obs=obs, raw_action=raw, log_prob=ppo.gaussian_log_prob(raw, mu, log_std), reward=reward,
                            terminated=terminated, truncated=truncated | cut, next_obs=info["final_obs"])
    returns, lengths = tracker.returns + reward, tracker.lengths + 1.0
    ends = EpisodeEnds(done=done, returns=returns, lengths=lengths)
    tracker = EpisodeTracker(returns=jnp.where(done, 0.0, returns), lengths=jnp.where(done, 0.0, lengths),
                             trajectory_length=jnp.where(done | cut, 0, trajectory_length))
    return (agent, env_state, next_obs, tracker), (transition, ends, jnp.mean(ppo.gaussian_entropy(log_std)))


def episode_metrics(ends: EpisodeEnds, terminated: jnp.ndarray, entropy: jnp.ndarray) -> Metrics:
    """One rollout's episode sums from its ``[T, N]`` episode ends (shared by the JAX and the Unity rollouts)."""
    done = ends.done
    return Metrics.zeros().replace(
        iterations=jnp.float32(1.0), episodes=jnp.sum(done, dtype=jnp.float32),
        episode_return=jnp.sum(jnp.where(done, ends.returns, 0.0)),
        episode_return_sq=jnp.sum(jnp.where(done, ends.returns**2, 0.0)),
        episode_length=jnp.sum(jnp.where(done, ends.lengths, 0.0)),
        successes=jnp.sum(terminated, dtype=jnp.float32), entropy=jnp.mean(entropy),
        returns_sample=returns_sample(ends.returns, done))


def collect(env: Environment, env_params, spec: TrainSpec, state: TrainState, key, explore: bool = True):
    """Roll all robots ``rollout_steps`` decisions; returns the advanced state, time-major transitions, episode sums."""
    carry = (state.agent, state.env_state, state.obs, state.tracker)
    step = partial(_rollout_step, env, env_params, spec, explore)
    (_, env_state, obs, tracker), (transitions, ends, entropy) = jax.lax.scan(
        step, carry, jax.random.split(key, spec.rollout_steps))
    state = state.replace(env_state=env_state, obs=obs, tracker=tracker, step=state.step + spec.steps_per_iteration)
    return state, transitions, episode_metrics(ends, transitions.terminated, entropy)


def _flatten(x: jnp.ndarray) -> jnp.ndarray:
    return x.reshape((-1,) + x.shape[2:])


def make_batch(agent: AgentState, transitions: Transition, spec: TrainSpec,
               hparams: Hyperparams | None = None) -> ppo.Batch:
    """Values with the freshly updated normaliser, GAE per robot on the strength-scaled reward (ML-Agents' extrinsic
    signal), advantages standardised over the whole buffer."""
    hp = Hyperparams.from_spec(spec) if hparams is None else hparams
    values = value_estimate(agent.params, agent.critic_norm, transitions.obs, spec.network)
    next_values = value_estimate(agent.params, agent.critic_norm, transitions.next_obs, spec.network)
    rewards = transitions.reward * spec.reward_strength
    advantages, returns = ppo.compute_gae(rewards, values, next_values, transitions.terminated,
                                          transitions.truncated, hp.gamma, hp.lambd)
    return ppo.Batch(obs=_flatten(transitions.obs), raw_action=_flatten(transitions.raw_action),
                     log_prob=_flatten(transitions.log_prob), value=_flatten(values),
                     advantage=ppo.normalize_advantages(_flatten(advantages)), returns=_flatten(returns))


def update(agent: AgentState, opt_state, batch: ppo.Batch, schedule: ppo.Schedule, key, spec: TrainSpec,
           mesh: Mesh | None = None):
    """``num_epoch`` shuffled passes of ``size // batch_size`` minibatches (remainder dropped), one Adam step each.

    With a ``mesh`` each minibatch is split across the devices; the loss is a global mean, so its gradient is the
    average of the devices' gradients, all-reduced by the partitioner.
    """
    optimizer = make_optimizer()
    opt_state.hyperparams["learning_rate"] = schedule.learning_rate
    loss_grad = jax.value_and_grad(partial(ppo.ppo_loss, spec=spec.network), has_aux=True)
    size = batch.obs.shape[0]
    used = spec.num_minibatches * spec.batch_size

    def minibatch_step(carry, minibatch):
        params, opt_state = carry
        (loss, metrics), grads = loss_grad(params, agent.actor_norm, agent.critic_norm, minibatch, schedule.epsilon,
                                           schedule.beta)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics["loss_is_finite"] = jnp.isfinite(loss)
        return (optax.apply_updates(params, updates), opt_state), metrics

    def epoch(carry, epoch_key):
        order = jax.random.permutation(epoch_key, size)[:used].reshape(spec.num_minibatches, spec.batch_size)
        minibatches = parallel.constrain(jax.tree.map(lambda x: x[order], batch), mesh, axis=1)
        return jax.lax.scan(minibatch_step, carry, minibatches)

    (params, opt_state), metrics = jax.lax.scan(epoch, (agent.params, opt_state), jax.random.split(key, spec.num_epoch))
    return agent.replace(params=params), opt_state, metrics


def _all_finite(tree) -> jnp.ndarray:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


LEARNED_FIELDS = ("updates", "value_estimate", "policy_loss", "value_loss", "approx_kl", "clip_fraction",
                  "learning_rate", "beta", "epsilon", "loss_is_finite")


def learn(agent: AgentState, opt_state, transitions: Transition, step: jnp.ndarray, key: chex.PRNGKey, spec: TrainSpec,
          hparams: Hyperparams | None = None, mesh: Mesh | None = None) -> tuple[AgentState, Any, Metrics]:
    """Normalisers, GAE and the epoch/minibatch update on one time-major buffer collected from ``step`` agent-steps on.

    The half of an iteration that does not care where the buffer came from: the JAX rollout or a Unity build's
    players (``rlrobot.unity_runner``). Only the ``LEARNED_FIELDS`` of the returned metrics are filled.
    """
    hp = Hyperparams.from_spec(spec) if hparams is None else hparams
    schedule = ppo.schedule_at(step, spec.max_steps, hp.learning_rate, hp.beta, hp.epsilon,
                               spec.learning_rate_schedule, spec.beta_schedule, spec.epsilon_schedule)
    agent = update_normalizers(agent, _flatten(transitions.obs)) if spec.network.normalize else agent
    batch = make_batch(agent, transitions, spec, hp)
    agent, opt_state, losses = update(agent, opt_state, batch, schedule, key, spec, mesh)
    metrics = Metrics.zeros().replace(
        updates=jnp.float32(1.0), value_estimate=jnp.mean(batch.value), policy_loss=jnp.mean(losses["policy_loss"]),
        value_loss=jnp.mean(losses["value_loss"]), approx_kl=jnp.mean(losses["approx_kl"]),
        clip_fraction=jnp.mean(losses["clip_fraction"]), learning_rate=schedule.learning_rate, beta=schedule.beta,
        epsilon=schedule.epsilon, loss_is_finite=jnp.all(losses["loss_is_finite"]) & _all_finite(agent.params))
    return agent, opt_state, metrics


def iteration(env: Environment, env_params, spec: TrainSpec, state: TrainState, hparams: Hyperparams | None = None,
              mesh: Mesh | None = None, deterministic: bool = False) -> tuple[TrainState, Metrics]:
    """One PPO iteration: collect (acting with the mean when ``deterministic``, as ML-Agents' flag does), then
    ``learn``. Pure; jit it (``make_train_iterations`` does)."""
    key, key_collect, key_update = jax.random.split(state.key, 3)
    step = state.step
    state, transitions, episodes = collect(env, env_params, spec, state.replace(key=key), key_collect,
                                           explore=not deterministic)
    agent, opt_state, learned = learn(state.agent, state.opt_state, transitions, step, key_update, spec, hparams, mesh)
    metrics = episodes.replace(**{name: getattr(learned, name) for name in LEARNED_FIELDS})
    return state.replace(agent=agent, opt_state=opt_state), metrics


def inference_iteration(env: Environment, env_params, spec: TrainSpec, state: TrainState,
                        hparams: Hyperparams | None = None, mesh: Mesh | None = None,
                        deterministic: bool = False) -> tuple[TrainState, Metrics]:
    """``--inference``: act (sampled, or the mean with ``--deterministic``) and report episodes, entropy and the value
    estimate, as ML-Agents does, without learning.

    Takes ``iteration``'s arguments so one loop drives both; acting needs no hyperparameters, and the robots' sharding
    follows the state's.
    """
    key, key_collect = jax.random.split(state.key)
    state, transitions, episodes = collect(env, env_params, spec, state.replace(key=key), key_collect,
                                           explore=not deterministic)
    values = value_estimate(state.agent.params, state.agent.critic_norm, transitions.obs, spec.network)
    return state, episodes.replace(updates=jnp.float32(1.0), value_estimate=jnp.mean(values))


def make_train_iterations(env: Environment, env_params, spec: TrainSpec, inference: bool = False,
                          deterministic: bool = False, *, mesh: Mesh | None = None, batched: bool = False):
    """A compiled ``(state, n[, hparams]) -> (state, summed Metrics)`` running ``n`` iterations on the device.

    It stops early (with the state before the offending update) if a loss or a parameter becomes NaN/inf.
    ``mesh`` splits the robots across its devices (pass a state placed with ``parallel.place``); ``batched``
    vmaps independent runs: every leaf of the state (and of ``hparams``, if given) has a leading run axis.
    """
    body_fn = partial(inference_iteration if inference else iteration, deterministic=deterministic)

    def run(state: TrainState, num_iterations: jnp.ndarray,
            hparams: Hyperparams | None = None) -> tuple[TrainState, Metrics]:
        def cond(carry):
            _, metrics, i = carry
            return (i < num_iterations) & metrics.loss_is_finite

        def body(carry):
            state, metrics, i = carry
            new_state, new_metrics = body_fn(env, env_params, spec, state, hparams, mesh)
            total = metrics.add(new_metrics)
            keep = jax.tree.map(lambda new, old: jnp.where(new_metrics.loss_is_finite, new, old), new_state, state)
            return parallel.constrain_state(keep, mesh), total, i + 1

        state, metrics, _ = jax.lax.while_loop(cond, body, (state, Metrics.zeros(), jnp.int32(0)))
        return state, metrics

    return jax.jit(jax.vmap(run, in_axes=(0, None, 0)) if batched else run)


def summary_scalars(metrics: Metrics, inference: bool = False, reward_strength: float = 1.0) -> dict[str, float]:
    """Host side: summed metrics as ML-Agents' TensorBoard tags (plus ``Environment/Success Rate``).

    As in ML-Agents, ``Episode Length`` counts an episode's decisions but the first (ML-Agents books a step only when
    the next one arrives, and an episode's end is not counted), ``Policy/Extrinsic Reward`` is the episode return
    times the signal's strength, and ``--inference`` still reports entropy and the value estimate.
    """
    m = jax.device_get(metrics)
    scalars: dict[str, float] = {}
    if m.episodes > 0:
        mean = float(m.episode_return / m.episodes)
        scalars["Environment/Cumulative Reward"] = mean
        scalars["Environment/Episode Length"] = float((m.episode_length - m.episodes) / m.episodes)
        scalars["Environment/Success Rate"] = float(m.successes / m.episodes)
        scalars["Policy/Extrinsic Reward"] = reward_strength * mean
    if m.iterations > 0:
        scalars["Policy/Entropy"] = float(m.entropy / m.iterations)
    if m.updates > 0:
        scalars["Policy/Extrinsic Value Estimate"] = float(m.value_estimate / m.updates)
        if not inference:
            scalars.update({tag: float(getattr(m, name) / m.updates) for tag, name in LEARNED_TAGS.items()})
    return scalars


LEARNED_TAGS = {"Policy/Learning Rate": "learning_rate", "Policy/Epsilon": "epsilon", "Policy/Beta": "beta",
                "Losses/Policy Loss": "policy_loss", "Losses/Value Loss": "value_loss"}


def episode_returns(metrics: Metrics) -> np.ndarray:
    """The sampled episode returns of a summary period (for the ``Cumulative Reward`` histogram)."""
    m = jax.device_get(metrics)
    return np.asarray(m.returns_sample)[:int(min(m.episodes, RETURNS_SAMPLE))]


def summarize(metrics: Metrics, training: bool, reward_strength: float = 1.0) -> Summary:
    """One run's summary period (host metrics, no run axis) as the scalars, histogram and console figures to write."""
    mean, std = reward_mean_std(metrics)
    return Summary(scalars=summary_scalars(metrics, inference=not training, reward_strength=reward_strength),
                   histograms={"Environment/Cumulative Reward": episode_returns(metrics)},
                   mean_reward=mean, std_reward=std)


def reward_mean_std(metrics: Metrics) -> tuple[float | None, float | None]:
    m = jax.device_get(metrics)
    if m.episodes <= 0:
        return None, None
    mean = float(m.episode_return / m.episodes)
    return mean, float(max(m.episode_return_sq / m.episodes - mean**2, 0.0) ** 0.5)
