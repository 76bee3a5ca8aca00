"""Builds a trainer from settings: environment, parameters, spec, device mesh, initial state and compiled program.

The one place where a behavior's settings become what runs on a device, so the rollout shapes are derived once: the
JAX loop (``runner``), the Unity loop (``unity_runner``), the benchmarks and the tests all start here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh

import envs
from envs import parameters as env_parameters
from envs.api import Environment
from rlrobot import __version__, host_devices, network_split, parallel, ppo, program_cache
from rlrobot.config import ConfigError, RunSettings, TrainerSettings, is_builtin_scene
from rlrobot.limits import ResourceError, check_training_size
from rlrobot.networks import AgentState, NetworkSpec, env_action, init_agent, policy_distribution, sample_action
from rlrobot.run import RunError
from rlrobot.train import (
    Hyperparams,
    Metrics,
    TrainSpec,
    TrainState,
    Transition,
    Window,
    default_num_envs,
    init_train_state,
    learn,
    make_optimizer,
    make_train_iterations,
    make_train_periods,
    make_train_spec,
)

# The behavior name the course's Unity builds report, whichever scene they hold.
SCENE_BEHAVIOR = "MobileRobot"


def choose_scene(settings: RunSettings) -> tuple[str, str]:
    """``(behavior, scene)`` to train on the JAX robot.

    A built-in scene named where ML-Agents names a build (``env_settings.env_path``) reports the behavior its Unity
    build does, ``MobileRobot`` (the YAML's entry of that name, or of the scene's name, or ``default_settings``);
    otherwise the configured behavior whose name is a built-in scene picks it.
    """
    scene = settings.env_settings.env_path
    if is_builtin_scene(scene):
        named = SCENE_BEHAVIOR not in settings.behaviors and scene in settings.behaviors
        behavior = scene if named else SCENE_BEHAVIOR
        try:
            settings.behavior(behavior)
        except ConfigError as error:
            raise RunError(str(error)) from None
        return behavior, scene
    known = [name for name in settings.behaviors if name.split("?")[0] in envs.registered()]
    if not known:
        raise RunError(f"None of the behaviors {sorted(settings.behaviors)} is a built-in JAX environment "
                       f"({', '.join(envs.registered())}); name a scene with --env or train on a Unity build.")
    return known[0].split("?")[0], known[0].split("?")[0]


def choose_behavior(settings: RunSettings) -> str:
    """The behavior trained on the JAX robot (see :func:`choose_scene`)."""
    return choose_scene(settings)[0]


def apply_environment_parameters(env_params, parameters: dict | None):
    """ML-Agents' ``environment_parameters`` set fields of the JAX scene's params, each checked against its valid
    range (:func:`envs.parameters.apply_environment_parameters`); a bad one is a one-line RunError."""
    try:
        return env_parameters.apply_environment_parameters(env_params, parameters)
    except env_parameters.ParameterError as error:
        raise RunError(str(error)) from None


def scene_with_parameters(env: Environment, parameters: dict | None, behavior: str) -> tuple[Environment, Any]:
    """The scene with ML-Agents' ``environment_parameters``: constants set in its params, samplers and curricula drawn
    per robot at every reset (``rlrobot.curriculum.make_scene``); a bad one is a one-line RunError."""
    from rlrobot.curriculum import make_scene

    try:
        return make_scene(env, parameters, trained_behavior=behavior)
    except env_parameters.ParameterError as error:
        raise RunError(str(error)) from None


def resolve_num_envs(settings: RunSettings, trainer: TrainerSettings, backend: str | None = None) -> int:
    """``env_settings.num_envs``, or the default for this backend (see ``train.default_num_envs``)."""
    return settings.env_settings.num_envs or default_num_envs(trainer, backend or jax.default_backend())


def checkpoint_metadata(behavior: str, spec: TrainSpec, seed: int, **extra: Any) -> dict:
    """What a checkpoint needs to be read back without the YAML (export, validation)."""
    net = spec.network
    return {"behavior": behavior, "seed": seed, "num_envs": spec.num_envs, "rlrobot_version": __version__,
            "network": {"obs_size": net.obs_size, "action_size": net.action_size, "hidden_units": net.hidden_units,
                        "num_layers": net.num_layers, "normalize": net.normalize, "shared_critic": net.shared_critic},
            **extra}


@dataclass(frozen=True)
class JaxTrainer:
    """A behavior on the JAX robot: the scene, its parameters, the static spec, the robots' device mesh and the
    learners' (``network_split``: the actor and the critic learn on a device each; the state is whole on both)."""

    behavior: str
    scene: str
    env: Environment
    env_params: Any
    spec: TrainSpec
    mesh: Mesh | None
    num_devices: int
    learners: Mesh | None = None

    def init_state(self, seed: int) -> TrainState:
        """The initial state of ``seed``, made by one compiled program (kept by ``program_cache``): eagerly, its
        hundred-odd operations would each be compiled, or loaded from the cache, one by one."""
        low, high = np.uint32(seed % 2**64 & 0xFFFFFFFF), np.uint32(seed % 2**64 >> 32)
        program = jax.jit(lambda low, high: init_train_state(_seed_key(low, high), self.env, self.env_params,
                                                             self.spec))
        compiled = program_cache.compile_cached("init_state", self.describe(), lambda: program.lower(low, high),
                                                host_devices.light_program_options())
        return compiled(low, high)

    def describe(self, *extra: Any) -> tuple:
        """What this trainer's programs are built from, for ``program_cache`` (with ``extra``: the program's flags
        and inputs)."""
        return (self.behavior, self.scene, describe_object(self.env), program_cache.constants(self.env_params),
                repr(self.spec), None if self.mesh is None else repr(self.mesh),
                None if self.learners is None else repr(self.learners), *extra)

    def steps(self, state: TrainState) -> int:
        """Agent steps done (the furthest run's, for vmapped runs), exact at any size."""
        return int(np.max(jax.device_get(state.iteration))) * self.spec.steps_per_iteration

    def place(self, states: list[TrainState], batched: bool) -> TrainState:
        """Stack the runs' states (``batched``) and lay them out on the mesh, from process 0's copy."""
        state = jax.tree.map(lambda *xs: jnp.stack(xs), *states) if batched else states[0]
        if self.learners is not None:
            return parallel.replicate(state, self.learners)  # whole on both: each learner acts for every robot
        return parallel.place(parallel.broadcast_from_first(state), self.mesh, batch_dims=int(batched))

    def compile(self, state: TrainState, hparams: Hyperparams | None = None, *, inference: bool = False,
                deterministic: bool = False, batched: bool = False, donate: bool = False, periods: int | None = None):
        """The ahead-of-time compiled ``(state, n, hparams) -> (state, Metrics)`` of ``train.make_train_iterations``
        (``donate``: the state passed in is consumed); with ``periods``, ``train.make_train_periods``'s
        ``(state, counts, hparams) -> (state, Metrics per period, iteration after each)``."""
        options = {"inference": inference, "deterministic": deterministic, "mesh": self.mesh, "batched": batched,
                   "donate": donate, "learners": self.learners}
        if periods is None:
            program, count = make_train_iterations(self.env, self.env_params, self.spec, **options), jnp.int32(1)
        else:
            program = make_train_periods(self.env, self.env_params, self.spec, periods, **options)
            count = jnp.zeros(periods, jnp.int32)
        flags = {"inference": inference, "deterministic": deterministic, "batched": batched, "donate": donate,
                 "periods": periods}
        return program_cache.compile_cached(
            "train", self.describe(flags, program_cache.abstract(state), program_cache.abstract(hparams)),
            lambda: program.lower(state, count, hparams))


def build_jax_trainer(settings: RunSettings, behavior: str | None = None, *, num_envs: int | None = None,
                      devices: int | None = None, runs: int = 1) -> JaxTrainer:
    """The JAX trainer ``rlrobot-learn`` runs for these settings: ``num_envs`` robots per area (default: the YAML's,
    else ``resolve_num_envs``) times ``num_areas``, split over ``devices`` devices (default: all, or on a CPU with
    two devices one, the actor and the critic then learning on a device each: ``network_split.choose_learners``). A
    size the device cannot hold or compile (``runs``: vmapped seeds × sweep points) is refused up front, naming the
    key."""
    behavior, scene = (behavior, behavior) if behavior else choose_scene(settings)
    trainer = settings.behavior(behavior)
    env = envs.make(scene)
    env, env_params = scene_with_parameters(env, settings.environment_parameters, behavior)
    robots = (num_envs or resolve_num_envs(settings, trainer)) * settings.env_settings.num_areas
    learners = network_split.choose_learners(devices, runs, trainer.hyperparameters.shared_critic,
                                             trainer.network_settings.hidden_units)
    if learners is None and devices is None and host_devices.provided_host_devices():
        devices = 1
    try:
        device_list = jax.devices()[:1] if learners is not None else parallel.choose_devices(devices, robots)
    except ValueError as error:
        raise RunError(str(error)) from None
    spec = make_train_spec(trainer, env.observation_size, env.action_size, robots)
    check_size(spec, runs)
    return JaxTrainer(behavior=behavior, scene=scene, env=env, env_params=env_params, spec=spec,
                      mesh=parallel.make_mesh(device_list), num_devices=len(device_list), learners=learners)


def check_size(spec: TrainSpec, runs: int = 1) -> None:
    """``limits.check_training_size`` as a RunError (one line naming the key and the limit)."""
    try:
        check_training_size(spec, runs)
    except ResourceError as error:
        raise RunError(str(error)) from None


@struct.dataclass
class UnityTrainState:
    """What a Unity run carries between updates; the players' own state lives in their processes. ``step`` (agent
    steps) is a host int64: the agents per update can change on ``--resume``, so it is not derived from a count."""

    agent: AgentState
    opt_state: Any
    key: jnp.ndarray
    step: np.ndarray


@dataclass(frozen=True)
class UnityTrainer:
    """A behavior on a Unity build: the spec for its agents, the jitted policy for the host batch and the jitted
    ``train.learn`` for the buffers the players fill."""

    spec: TrainSpec
    act: Callable
    learn: Callable

    def init_state(self, seed: int) -> UnityTrainState:
        key = seed_key(seed)
        agent = init_agent(key, self.spec.network)
        return UnityTrainState(agent=agent, opt_state=make_optimizer().init(agent.params),
                               key=jax.random.fold_in(key, 1), step=np.int64(0))


def build_unity_trainer(trainer: TrainerSettings, observation_size: int, action_size: int,
                        num_agents: int) -> UnityTrainer:
    spec = make_train_spec(trainer, observation_size, action_size, num_agents)
    check_size(spec)
    return UnityTrainer(spec=spec, act=make_act(spec.network, explore=not trainer.network_settings.deterministic),
                        learn=make_learn(spec))


def make_act(network: NetworkSpec, explore: bool):
    """Jitted ``(agent, obs, key) -> (raw action, log-prob, env action, entropy)`` for the host batch."""
    def act(agent: AgentState, obs: jnp.ndarray, key: jax.Array):
        mu, log_std = policy_distribution(agent.params, agent.actor_norm, obs, network)
        raw = sample_action(key, mu, log_std) if explore else mu
        entropy = jnp.mean(ppo.gaussian_entropy(log_std))
        return raw, ppo.gaussian_log_prob(raw, mu, log_std), env_action(raw), entropy
    return jax.jit(act)


def make_learn(spec: TrainSpec):
    """Jitted ``(state, window) -> (state, Metrics)``: :func:`rlrobot.train.learn` on a host buffer collected
    from ``state.step`` on (the step itself is advanced on the host): a ``train.Window`` of carried and new steps, as
    ``unity_runner.HostRollout`` builds it (a bare ``Transition`` buffer also works, cut at its end)."""
    def learn_buffer(state: UnityTrainState, transitions: Transition | Window,
                     step: jnp.ndarray) -> tuple[Any, Metrics]:
        key, key_update = jax.random.split(state.key)
        agent, opt_state, metrics = learn(state.agent, state.opt_state, transitions, step, key_update, spec)
        return (agent, opt_state, key), metrics

    learn_jit = jax.jit(learn_buffer)

    def learn_host(state: UnityTrainState, transitions: Transition) -> tuple[UnityTrainState, Metrics]:
        (agent, opt_state, key), metrics = learn_jit(state, transitions, jnp.float32(state.step))
        return state.replace(agent=agent, opt_state=opt_state, key=key,
                             step=np.int64(state.step + spec.steps_per_iteration)), metrics
    return learn_host


def seed_key(seed: int) -> jax.Array:
    """A PRNG key for any 64-bit seed (ML-Agents takes any int): the low 32 bits make the key, as
    ``jax.random.PRNGKey(seed)`` for seeds below 2**32, and higher bits are folded in."""
    seed %= 2**64
    key = jax.random.PRNGKey(seed & 0xFFFFFFFF)
    return jax.random.fold_in(key, seed >> 32) if seed >> 32 else key


def _seed_key(low: jax.Array, high: jax.Array) -> jax.Array:
    """``seed_key`` of ``high * 2**32 + low`` inside a compiled program (the halves traced as uint32)."""
    key = jax.random.PRNGKey(low)
    return jnp.where(high != 0, jax.random.fold_in(key, high), key)


def describe_object(obj: Any) -> Any:
    """A scene (or any object) as its class and attributes, recursively, for a ``program_cache`` key."""
    if isinstance(obj, (str, int, float, bool, type(None))):
        return obj
    if isinstance(obj, (tuple, list)):
        return type(obj).__name__, [describe_object(item) for item in obj]
    if isinstance(obj, dict):
        return sorted((str(k), describe_object(v)) for k, v in obj.items())
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if hasattr(obj, "__dict__") and not hasattr(obj, "shape"):
        return kind, describe_object(vars(obj))
    return kind, repr(obj)
