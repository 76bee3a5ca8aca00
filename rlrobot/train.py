"""The jitted PPO iteration: rollout over vmapped robots, normaliser update, GAE and the epoch/minibatch update.

One iteration collects ``num_envs × rollout_steps`` agent transitions (≥ ``buffer_size``) and updates on all of
them, as ML-Agents does once its buffer is full. ``make_train_iterations`` runs a dynamic number of iterations in
one compiled ``lax.while_loop`` and returns summed metrics, so the host wakes only to log and save, and a changing
number of iterations per wake-up never recompiles; ``make_train_periods`` runs several summary periods in one call,
each summed apart. The same program runs split across devices (``mesh``, see ``parallel``) and vmapped over
independent runs (``batched``: seeds, and swept ``Hyperparams``). Device code only: ``rlrobot.trainer`` builds it
from settings, ``rlrobot.runner`` drives it.
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
from envs.masked import map_masked
from rlrobot import network_split, parallel, ppo
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
from rlrobot.shuffle import random_order


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
    """Everything a run needs to continue bit-exactly: networks, optimiser, robots, RNG and the rollouts done.

    ``iteration`` counts rollouts; the agent steps are ``iteration × spec.steps_per_iteration``, computed exactly on
    the host (a device int32 step count would overflow at 2³¹ steps, minutes into a large GPU run).
    """

    agent: AgentState
    opt_state: Any
    env_state: Any
    obs: jnp.ndarray
    tracker: EpisodeTracker
    key: jnp.ndarray
    iteration: jnp.ndarray
    carry: Transition   # [time_horizon - 1, N]: the unfinished trajectories' steps, right-aligned (see ``Window``)


RETURNS_SAMPLE = 1024  # episode returns kept per summary for the Cumulative Reward histogram


@struct.dataclass
class Metrics:
    """Sums over the iterations since the host last looked; ``summary_scalars`` turns them into summary scalars.

    ``iterations`` counts rollouts (the divisor of ``entropy``), ``updates`` the buffers learned from (the divisor of
    the schedules: with a threaded Unity run a rollout's update can land in the next summary). An update finds only
    the steps of finished trajectories, and with ``buffer_size / num_envs < time_horizon`` it can find fewer than a
    minibatch (no loss measured) or none (no value estimated): ``loss_updates`` and ``value_updates`` count the
    updates that measured each, so a summary averages over those and leaves out what none measured, as ML-Agents
    writes only what it measured. ``returns_sample``
    holds the first ``RETURNS_SAMPLE`` episode returns of the period, in order, for the reward histogram.
    """

    iterations: jnp.ndarray
    updates: jnp.ndarray
    loss_updates: jnp.ndarray     # updates that ran at least one minibatch: the divisor of the losses
    value_updates: jnp.ndarray    # updates with at least one finished step: the divisor of the value estimate
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


def agent_steps(iteration: jnp.ndarray, spec: TrainSpec) -> jnp.ndarray:
    """The agent steps after ``iteration`` rollouts, in float32: exact enough for the schedules at any step count."""
    return jnp.asarray(iteration, jnp.float32) * spec.steps_per_iteration


def init_train_state(key: chex.PRNGKey, env: Environment, env_params, spec: TrainSpec) -> TrainState:
    key_agent, key_env, key_run = jax.random.split(key, 3)
    agent = init_agent(key_agent, spec.network)
    obs, env_state = env.reset_batch(key_env, env_params, spec.num_envs)
    zeros = jnp.zeros(spec.num_envs, jnp.float32)
    return TrainState(agent=agent, opt_state=make_optimizer().init(agent.params), env_state=env_state, obs=obs,
                      tracker=EpisodeTracker(returns=zeros, lengths=zeros, trajectory_length=zeros.astype(jnp.int32)),
                      key=key_run, iteration=jnp.int32(0), carry=empty_carry(spec, spec.num_envs))


@struct.dataclass
class Transition:
    obs: jnp.ndarray
    raw_action: jnp.ndarray
    log_prob: jnp.ndarray
    reward: jnp.ndarray
    terminated: jnp.ndarray
    truncated: jnp.ndarray   # time limit, or a time_horizon cut: bootstrap from V(next_obs)
    next_obs: jnp.ndarray    # the real next observation (the final one when an episode ended)


def carry_slots(spec: TrainSpec) -> int:
    """Steps of an unfinished trajectory that can wait for the next update: a trajectory is cut at time_horizon."""
    return max(spec.time_horizon - 1, 0)


def window_steps(spec: TrainSpec) -> int:
    """Per robot, the carried slots followed by one rollout."""
    return carry_slots(spec) + spec.rollout_steps


def empty_carry(spec: TrainSpec, num_envs: int, xp=jnp) -> Transition:
    """An all-invalid carry (``xp``: ``jnp`` on the device, ``np`` for the Unity host buffer)."""
    c, net = carry_slots(spec), spec.network

    def zeros(*shape, dtype=xp.float32):
        return xp.zeros((c, num_envs, *shape), dtype)

    return Transition(obs=zeros(net.obs_size), raw_action=zeros(net.action_size), log_prob=zeros(net.action_size),
                      reward=zeros(), terminated=zeros(dtype=bool), truncated=zeros(dtype=bool),
                      next_obs=zeros(net.obs_size))


@struct.dataclass
class Window:
    """The buffer one update learns from, ML-Agents' way: per robot, the carried steps of its unfinished trajectory
    (right-aligned in the first ``carry_slots`` slots) followed by the new rollout, ``[W, N]`` time-major.

    A step is ``ready`` once its trajectory is complete (an episode end or a time_horizon cut at or after it inside
    the window): only ready steps feed the normaliser and the update, and their GAE runs over the whole trajectory.
    The steps after a robot's last cut are its next carry. ``last_obs`` is the robots' observation after the window
    (``obs[t + 1]`` of its last step), so values need not be computed twice for most steps.
    """

    transitions: Transition
    ready: jnp.ndarray
    last_obs: jnp.ndarray


def ready_mask(spec: TrainSpec, pending_before, pending_after, xp=jnp):
    """``[W, N]``: valid (the last ``pending_before + T`` slots) and at or before the last cut (the trailing
    ``pending_after`` slots are still open). ``pending_*`` are the trajectory lengths before/after the rollout."""
    c, w = carry_slots(spec), window_steps(spec)
    t = xp.arange(w)[:, None]
    return (t >= c - pending_before[None]) & (t < w - pending_after[None])


def make_window(spec: TrainSpec, carry: Transition, transitions: Transition, pending_before, pending_after,
                last_obs, xp=jnp) -> Window:
    """The carry followed by a rollout, with its ready steps (see ``Window``)."""
    joined = jax.tree.map(lambda a, b: xp.concatenate([a, b.astype(a.dtype)]), carry, transitions)
    return Window(transitions=joined, ready=ready_mask(spec, pending_before, pending_after, xp), last_obs=last_obs)


def next_carry(spec: TrainSpec, window: Transition) -> Transition:
    """The window's last ``carry_slots`` steps: their trailing ``trajectory_length`` slots are the open trajectory."""
    c = carry_slots(spec)
    return jax.tree.map(lambda x: x[x.shape[0] - c:], window)


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
    state = state.replace(env_state=env_state, obs=obs, tracker=tracker, iteration=state.iteration + 1)
    return state, transitions, episode_metrics(ends, transitions.terminated, entropy)


def _flatten(x: jnp.ndarray) -> jnp.ndarray:
    return x.reshape((-1,) + x.shape[2:])


def window_values(agent: AgentState, transitions: Transition, last_obs: jnp.ndarray | None,
                  spec: TrainSpec, ready: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``V(obs[t])`` and ``V(next_obs[t])`` for a time-major buffer.

    With ``last_obs`` (the observation after the buffer's last step) ``V(next_obs[t])`` is ``V(obs[t + 1])``
    wherever the two observations agree, i.e. everywhere but at episode ends that bootstrap (a time limit), so the
    critic runs once per step plus once per such end: up to N of them are gathered and evaluated alone, more (rare)
    fall back to evaluating every ``next_obs``.

    With a ``ready`` mask (a ``Window``'s), only the values GAE needs for the ready steps are computed: ``V(obs[t])``
    where step t or t − 1 is ready (the latter bootstraps a trajectory cut at t − 1); the others are 0 and unused.
    A window with a long ``time_horizon`` carries many more steps than it completes (1127 against ≈ 128 per robot
    with the course's YAML), and its critic pass was most of the iteration.
    """
    net = spec.network
    if last_obs is None:
        return (value_estimate(agent.params, agent.critic_norm, transitions.obs, net),
                value_estimate(agent.params, agent.critic_norm, transitions.next_obs, net))
    obs = jnp.concatenate([transitions.obs, last_obs[None].astype(transitions.obs.dtype)])
    values = _critic_where_needed(agent, obs, ready, spec)
    values, following = values[:-1], values[1:]
    differs = transitions.truncated & ~transitions.terminated & jnp.any(transitions.next_obs != obs[1:], axis=-1)
    flat = differs.reshape(-1)
    size, limit = flat.shape[0], min(flat.shape[0], transitions.obs.shape[1])

    def few():
        index = jnp.nonzero(flat, size=limit, fill_value=size)[0]
        final = value_estimate(agent.params, agent.critic_norm,
                               _flatten(transitions.next_obs)[jnp.minimum(index, size - 1)], net)
        return following.reshape(-1).at[index].set(final, mode="drop").reshape(following.shape)

    def many():
        return jnp.where(differs, value_estimate(agent.params, agent.critic_norm, transitions.next_obs, net),
                         following)

    return values, jax.lax.cond(jnp.sum(flat) <= limit, few, many)


def _critic_where_needed(agent: AgentState, obs: jnp.ndarray, ready: jnp.ndarray | None,
                         spec: TrainSpec) -> jnp.ndarray:
    """The critic on ``obs[W + 1, N]`` where row t or t − 1 of ``ready[W, N]`` is set (everywhere without it), in
    passes of a rollout's worth of rows (``envs.masked``)."""
    def critic(_, rows: jnp.ndarray) -> jnp.ndarray:
        return value_estimate(agent.params, agent.critic_norm, rows, spec.network)

    if ready is None:
        return critic(None, obs)
    none = jnp.zeros_like(ready[:1])
    needed = jnp.concatenate([ready, none]) | jnp.concatenate([none, ready])
    values = map_masked(critic, needed.reshape(-1), _flatten(obs), jnp.zeros(needed.size, jnp.float32),
                        spec.steps_per_iteration)
    return values.reshape(needed.shape)


def make_batch(agent: AgentState, transitions: Transition | Window, spec: TrainSpec,
               hparams: Hyperparams | None = None) -> ppo.Batch:
    """Values with the freshly updated normaliser, GAE per robot on the strength-scaled reward (ML-Agents' extrinsic
    signal), advantages standardised over the whole buffer (a ``Window``'s ready steps; the others are never
    used)."""
    hp = Hyperparams.from_spec(spec) if hparams is None else hparams
    window = transitions if isinstance(transitions, Window) else None
    if window is not None:
        transitions = window.transitions
    values, next_values = window_values(agent, transitions, None if window is None else window.last_obs, spec,
                                        None if window is None else window.ready)
    rewards = transitions.reward * spec.reward_strength
    advantages, returns = ppo.compute_gae(rewards, values, next_values, transitions.terminated,
                                          transitions.truncated, hp.gamma, hp.lambd)
    ready = None if window is None else _flatten(window.ready)
    return ppo.Batch(obs=_flatten(transitions.obs), raw_action=_flatten(transitions.raw_action),
                     log_prob=_flatten(transitions.log_prob), value=_flatten(values),
                     advantage=ppo.normalize_advantages(_flatten(advantages), ready), returns=_flatten(returns))


def update(agent: AgentState, opt_state, batch: ppo.Batch, schedule: ppo.Schedule, key, spec: TrainSpec,
           mesh: Mesh | None = None, ready: jnp.ndarray | None = None, learners: Mesh | None = None):
    """``num_epoch`` shuffled passes of ``size // batch_size`` minibatches (remainder dropped), one Adam step each.

    With a ``ready`` mask the buffer is its set entries: each epoch shuffles them to the front and runs
    ``count // batch_size`` minibatches in a ``while_loop`` (a dynamic count, no recompiling; under vmap it runs the
    longest run's count). The metrics then come back summed over the executed minibatches, with their ``count``.

    With a ``mesh`` each minibatch is split across the devices; the loss is a global mean, so its gradient is the
    average of the devices' gradients, all-reduced by the partitioner. With ``learners`` (``network_split``) the
    actor learns on one device and the critic on the other, each from whole minibatches.
    """
    if learners is not None:
        return network_split.split_update(partial(_update_with, spec=spec, mesh=mesh), learners, agent, opt_state,
                                          batch, ready, key, schedule)
    return _update_with(ppo.ppo_loss, agent, opt_state, batch, ready, key, schedule, spec, mesh)


def _update_with(loss, agent: AgentState, opt_state, batch: ppo.Batch, ready: jnp.ndarray | None, key,
                 schedule: ppo.Schedule, spec: TrainSpec, mesh: Mesh | None, learner: int | None = None):
    """``update`` with minibatch steps that descend ``loss`` (``ppo.ppo_loss``'s arguments and metrics); on one of
    ``network_split``'s learners, steps of ``learner``'s network only (``network_split.learnt_by``)."""
    optimizer = make_optimizer()
    opt_state.hyperparams["learning_rate"] = schedule.learning_rate
    loss_grad = jax.value_and_grad(partial(loss, spec=spec.network), has_aux=True)
    size = batch.obs.shape[0]
    used = spec.num_minibatches * spec.batch_size

    def minibatch_step(carry, minibatch):
        params, opt_state = carry
        (loss, metrics), grads = loss_grad(params, agent.actor_norm, agent.critic_norm, minibatch, schedule.epsilon,
                                           schedule.beta)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics["loss_is_finite"] = jnp.isfinite(loss)
        stepped = (optax.apply_updates(params, updates), opt_state)
        return (stepped if learner is None else network_split.learnt_by(learner, stepped, carry)), metrics

    if ready is not None:
        return _update_ready(agent, opt_state, batch, ready, minibatch_step, key, spec, mesh)

    def epoch(carry, epoch_key):
        order = random_order(epoch_key, jnp.ones(size, bool))[:used].reshape(spec.num_minibatches, spec.batch_size)
        minibatches = parallel.constrain(jax.tree.map(lambda x: x[order], batch), mesh, axis=1)
        return jax.lax.scan(minibatch_step, carry, minibatches)

    (params, opt_state), metrics = jax.lax.scan(epoch, (agent.params, opt_state), jax.random.split(key, spec.num_epoch))
    return agent.replace(params=params), opt_state, metrics


def _update_ready(agent: AgentState, opt_state, batch: ppo.Batch, ready: jnp.ndarray, minibatch_step, key,
                  spec: TrainSpec, mesh: Mesh | None):
    batch_size = spec.batch_size
    executed = jnp.sum(ready, dtype=jnp.int32) // batch_size
    shapes = jax.eval_shape(minibatch_step, (agent.params, opt_state),
                            jax.tree.map(lambda x: jax.ShapeDtypeStruct((batch_size, *x.shape[1:]), x.dtype), batch))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[1])
    zeros["loss_is_finite"] = jnp.bool_(True)

    def epoch(carry, epoch_key):
        # The ready steps in random order, gathered once per epoch, so that each minibatch is a contiguous slice (one
        # gather of every row costs far less than a small gather per minibatch).
        order = random_order(epoch_key, ready)  # once: XLA does not merge one call per field
        shuffled = jax.tree.map(lambda x: x[order], batch)

        def body(loop):
            i, carry, sums = loop
            minibatch = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, i * batch_size, batch_size), shuffled)
            minibatch = parallel.constrain(minibatch, mesh, axis=0)
            carry, metrics = minibatch_step(carry, minibatch)
            sums = {name: (sums[name] & value) if name == "loss_is_finite" else sums[name] + value
                    for name, value in metrics.items()}
            return i + 1, carry, sums

        _, carry, sums = jax.lax.while_loop(lambda loop: loop[0] < executed, body, (jnp.int32(0), carry, zeros))
        return carry, sums

    (params, opt_state), sums = jax.lax.scan(epoch, (agent.params, opt_state), jax.random.split(key, spec.num_epoch))
    sums = {name: jnp.all(value) if name == "loss_is_finite" else jnp.sum(value) for name, value in sums.items()}
    sums["count"] = (executed * spec.num_epoch).astype(jnp.float32)
    return agent.replace(params=params), opt_state, sums


def _all_finite(tree) -> jnp.ndarray:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


LEARNED_FIELDS = ("updates", "loss_updates", "value_updates", "value_estimate", "policy_loss", "value_loss",
                  "approx_kl", "clip_fraction", "learning_rate", "beta", "epsilon", "loss_is_finite")


def learn(agent: AgentState, opt_state, transitions: Transition | Window, step: jnp.ndarray, key: chex.PRNGKey,
          spec: TrainSpec, hparams: Hyperparams | None = None, mesh: Mesh | None = None,
          learners: Mesh | None = None) -> tuple[AgentState, Any, Metrics]:
    """Normalisers, GAE and the epoch/minibatch update on one time-major buffer collected from ``step`` agent-steps on.

    The half of an iteration that does not care where the buffer came from: the JAX rollout or a Unity build's
    players (``rlrobot.unity_runner``). A ``Window`` learns from its ready steps only, ML-Agents' way; a bare
    ``Transition`` buffer uses every step and cuts its trajectories at its end. Only the ``LEARNED_FIELDS`` of the
    returned metrics are filled. ``learners``: the actor and the critic learn on its two devices (``update``).
    """
    hp = Hyperparams.from_spec(spec) if hparams is None else hparams
    schedule = ppo.schedule_at(step, spec.max_steps, hp.learning_rate, hp.beta, hp.epsilon,
                               spec.learning_rate_schedule, spec.beta_schedule, spec.epsilon_schedule)
    is_window = isinstance(transitions, Window)
    obs = transitions.transitions.obs if is_window else transitions.obs
    ready = _flatten(transitions.ready) if is_window else None
    agent = update_normalizers(agent, _flatten(obs), ready) if spec.network.normalize else agent
    batch = make_batch(agent, transitions, spec, hp)
    agent, opt_state, losses = update(agent, opt_state, batch, schedule, key, spec, mesh, ready, learners)
    if is_window:
        count = jnp.maximum(losses["count"], 1.0)
        means = {name: losses[name] / count for name in ("policy_loss", "value_loss", "approx_kl", "clip_fraction")}
        finished = jnp.sum(ready, dtype=jnp.float32)
        value = jnp.sum(jnp.where(ready, batch.value, 0.0)) / jnp.maximum(finished, 1.0)
        measured = {"loss_updates": (losses["count"] > 0).astype(jnp.float32),
                    "value_updates": (finished > 0).astype(jnp.float32)}
    else:
        means = {name: jnp.mean(losses[name]) for name in ("policy_loss", "value_loss", "approx_kl", "clip_fraction")}
        value = jnp.mean(batch.value)
        measured = {"loss_updates": jnp.float32(1.0), "value_updates": jnp.float32(1.0)}
    metrics = Metrics.zeros().replace(
        updates=jnp.float32(1.0), value_estimate=value, **measured, learning_rate=schedule.learning_rate,
        beta=schedule.beta, epsilon=schedule.epsilon,
        loss_is_finite=jnp.all(losses["loss_is_finite"]) & _all_finite(agent.params), **means)
    return agent, opt_state, metrics


def iteration(env: Environment, env_params, spec: TrainSpec, state: TrainState, hparams: Hyperparams | None = None,
              mesh: Mesh | None = None, deterministic: bool = False,
              learners: Mesh | None = None) -> tuple[TrainState, Metrics]:
    """One PPO iteration: collect (acting with the mean when ``deterministic``, as ML-Agents' flag does), then
    ``learn``. Pure; jit it (``make_train_iterations`` does)."""
    key, key_collect, key_update = jax.random.split(state.key, 3)
    step = agent_steps(state.iteration, spec)
    pending = state.tracker.trajectory_length
    state, transitions, episodes = collect(env, env_params, spec, state.replace(key=key), key_collect,
                                           explore=not deterministic)
    window = make_window(spec, state.carry, transitions, pending, state.tracker.trajectory_length, state.obs)
    agent, opt_state, learned = learn(state.agent, state.opt_state, window, step, key_update, spec, hparams, mesh,
                                      learners)
    metrics = episodes.replace(**{name: getattr(learned, name) for name in LEARNED_FIELDS})
    return state.replace(agent=agent, opt_state=opt_state, carry=next_carry(spec, window.transitions)), metrics


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
    carry = next_carry(spec, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), state.carry, transitions))
    return state.replace(carry=carry), episodes.replace(updates=jnp.float32(1.0), value_updates=jnp.float32(1.0),
                                                        value_estimate=jnp.mean(values))


def make_train_iterations(env: Environment, env_params, spec: TrainSpec, inference: bool = False,
                          deterministic: bool = False, *, mesh: Mesh | None = None, batched: bool = False,
                          donate: bool = False, learners: Mesh | None = None):
    """A compiled ``(state, n[, hparams]) -> (state, summed Metrics)`` running ``n`` iterations on the device.

    It stops early (with the state before the offending update) if a loss or a parameter becomes NaN/inf.
    ``mesh`` splits the robots across its devices (pass a state placed with ``parallel.place``); ``batched``
    vmaps independent runs: every leaf of the state (and of ``hparams``, if given) has a leading run axis.
    ``donate`` gives the input state's buffers to the output state (the caller must not use the old state again):
    one copy of the state on the device instead of two. ``learners``: the actor and the critic learn on its two
    devices, each of which also acts for every robot (pass a state placed with ``parallel.replicate``).
    """
    run_periods = _periods(env, env_params, spec, 1, inference, deterministic, mesh, learners)

    def run(state: TrainState, num_iterations: jnp.ndarray,
            hparams: Hyperparams | None = None) -> tuple[TrainState, Metrics]:
        state, rows, _ = run_periods(state, jnp.reshape(num_iterations, (1,)), hparams)
        return state, jax.tree.map(lambda x: x[0], rows)

    return jax.jit(jax.vmap(run, in_axes=(0, None, 0)) if batched else run, donate_argnums=(0,) if donate else ())


def make_train_periods(env: Environment, env_params, spec: TrainSpec, periods: int, inference: bool = False,
                       deterministic: bool = False, *, mesh: Mesh | None = None, batched: bool = False,
                       donate: bool = False, learners: Mesh | None = None):
    """A compiled ``(state, counts[periods][, hparams]) -> (state, Metrics per period, iteration after each period)``:
    ``make_train_iterations`` for several summary periods in one device call, ``counts[p]`` iterations in period
    ``p`` (0: an unused slot), each period's metrics summed apart. Why: every device call allocates its temporaries
    afresh, which the kernel zeroes page by page; a config that sums up every iteration would pay that per
    iteration. After a NaN/inf the call stops, as ``make_train_iterations`` does. Batched runs add a leading run
    axis to every output.
    """
    run_periods = _periods(env, env_params, spec, periods, inference, deterministic, mesh, learners)
    return jax.jit(jax.vmap(run_periods, in_axes=(0, None, 0)) if batched else run_periods,
                   donate_argnums=(0,) if donate else ())


def _iteration_fn(inference: bool, deterministic: bool, learners: Mesh | None):
    """The iteration a training program repeats: ``iteration`` or, with ``--inference``, ``inference_iteration``."""
    return (partial(inference_iteration, deterministic=deterministic) if inference
            else partial(iteration, deterministic=deterministic, learners=learners))


def _periods(env: Environment, env_params, spec: TrainSpec, periods: int, inference: bool, deterministic: bool,
             mesh: Mesh | None, learners: Mesh | None):
    """``(state, counts, hparams) -> (state, Metrics per period, ends)`` (see ``make_train_periods``).

    One ``while_loop`` runs all the iterations and adds each one's metrics to its period's row: a scan of one loop
    per period made the fast config's program 12% larger (4.34 against 3.87 MB: longer to compile, and to load from
    the cache), this one 3.78 MB. An update that makes a loss or a parameter NaN/inf is dropped and ends the loop.
    """
    body_fn = _iteration_fn(inference, deterministic, learners)

    def run_periods(state: TrainState, counts: jnp.ndarray,
                    hparams: Hyperparams | None = None) -> tuple[TrainState, Metrics, jnp.ndarray]:
        chex.assert_shape(counts, (periods,))
        boundaries = jnp.cumsum(counts)
        rows = jax.tree.map(lambda x: jnp.broadcast_to(x, (periods, *x.shape)), Metrics.zeros())

        def cond(carry):
            _, _, i, finite = carry
            return (i < boundaries[-1]) & finite

        def body(carry):
            state, rows, i, _ = carry
            new_state, new_metrics = body_fn(env, env_params, spec, state, hparams, mesh)
            period = jnp.sum(boundaries <= i)
            row = jax.tree.map(lambda x: x[period], rows).add(new_metrics)
            rows = jax.tree.map(lambda x, value: x.at[period].set(value), rows, row)
            keep = jax.tree.map(lambda new, old: jnp.where(new_metrics.loss_is_finite, new, old), new_state, state)
            return parallel.constrain_state(keep, mesh), rows, i + 1, new_metrics.loss_is_finite

        first = state.iteration
        state, rows, _, _ = jax.lax.while_loop(cond, body, (state, rows, jnp.int32(0), jnp.bool_(True)))
        ends = first + jnp.minimum(boundaries, state.iteration - first).astype(first.dtype)
        return state, rows, ends

    return run_periods


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
    if m.value_updates > 0:
        scalars["Policy/Extrinsic Value Estimate"] = float(m.value_estimate / m.value_updates)
    if m.updates > 0 and not inference:
        scalars.update({tag: float(getattr(m, name) / m.updates) for tag, name in SCHEDULE_TAGS.items()})
    if m.loss_updates > 0 and not inference:
        scalars.update({tag: float(getattr(m, name) / m.loss_updates) for tag, name in LOSS_TAGS.items()})
    return scalars


SCHEDULE_TAGS = {"Policy/Learning Rate": "learning_rate", "Policy/Epsilon": "epsilon", "Policy/Beta": "beta"}
LOSS_TAGS = {"Losses/Policy Loss": "policy_loss", "Losses/Value Loss": "value_loss"}
LEARNED_TAGS = {**SCHEDULE_TAGS, **LOSS_TAGS}


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
