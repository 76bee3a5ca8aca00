"""Training on a Unity build (``rlrobot-learn CONFIG --env PATH``): a host rollout, the same jitted PPO update.

The players run as separate processes behind mlagents-envs (:mod:`envs.unity`); this module steps them with the
policy jitted on the host batch, fills the same time-major :class:`rlrobot.train.Transition` buffer the JAX rollout
scans into, and hands it to the same normaliser update, GAE and epoch/minibatch update. Results folder, tags,
checkpoints and ONNX are the JAX path's. With ``threaded: true`` the update of one buffer runs in a worker thread
while the players collect the next one with the previous parameters, as ML-Agents' threaded trainer does (the data
is then one update behind the parameters it is learned into; PPO's ratio accounts for it).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlrobot import __version__, ppo
from rlrobot.checkpoints import CheckpointError, CheckpointManager, load_checkpoint
from rlrobot.config import ConfigError, RunSettings, TrainerSettings
from rlrobot.export import export_policy
from rlrobot.networks import AgentState, NetworkSpec, env_action, init_agent, policy_distribution, sample_action
from rlrobot.runner import (EXISTS_MESSAGE, RunError, RunPaths, StopRequest, checkpoint_metadata, next_multiple, prepare_run_dir,
                            resolve_seed, write_summary)
from rlrobot.summaries import Progress, SummaryWriter, Timers, TrainingStatus
from rlrobot.train import LEARNED_FIELDS, Metrics, TrainSpec, Transition, learn, make_optimizer, make_train_spec

logger = logging.getLogger("rlrobot")


@struct.dataclass
class UnityTrainState:
    """What a Unity run carries between updates; the players' own state lives in their processes."""

    agent: AgentState
    opt_state: Any
    key: jnp.ndarray
    step: jnp.ndarray


def unity_environment_parameters(parameters: dict | None) -> dict[str, float]:
    """ML-Agents' ``environment_parameters`` as the floats the EnvironmentParameters side channel sends."""
    values: dict[str, float] = {}
    for name, value in (parameters or {}).items():
        if not isinstance(value, (int, float)):
            raise RunError(f"environment_parameters.{name}: only constant numbers are sent to a Unity build, "
                           f"not samplers or curricula")
        values[name] = float(value)
    return values


def open_unity(settings: RunSettings, seed: int, log_folder: Path | None):
    """The build's players: one ``UnityBatchEnv`` or ``--num-envs`` of them side by side."""
    from envs.unity import UnityBatchEnv, UnityVectorEnv

    es, engine = settings.env_settings, settings.engine_settings
    names = [name for name in settings.behaviors]
    options = dict(behavior=names[0] if len(names) == 1 else None, base_port=es.base_port,
                   no_graphics=engine.no_graphics, time_scale=engine.time_scale, timeout_wait=es.timeout_wait,
                   seed=seed, environment_parameters=unity_environment_parameters(settings.environment_parameters),
                   additional_args=tuple(es.env_args or ()), log_folder=str(log_folder) if log_folder else None)
    num_players = es.num_envs or 1
    if num_players > 4 * (os.cpu_count() or 1):
        raise RunError(f"env_settings.num_envs {num_players}: that many Unity players would swamp this machine's "
                       f"{os.cpu_count()} cores (with --env, num_envs counts players, not robots); pass --num-envs")
    if num_players == 1:
        return UnityBatchEnv(es.env_path, **options)
    return UnityVectorEnv(es.env_path, num_envs=num_players, **options)


def make_act(network: NetworkSpec, explore: bool):
    """Jitted ``(agent, obs, key) -> (raw action, log-prob, env action, entropy)`` for the host batch."""
    def act(agent: AgentState, obs: jnp.ndarray, key: jax.Array):
        mu, log_std = policy_distribution(agent.params, agent.actor_norm, obs, network)
        raw = sample_action(key, mu, log_std) if explore else mu
        entropy = jnp.mean(ppo.gaussian_entropy(log_std))
        return raw, ppo.gaussian_log_prob(raw, mu, log_std), env_action(raw), entropy
    return jax.jit(act)


def make_learn(spec: TrainSpec):
    """Jitted ``(state, transitions, step) -> (state, Metrics)``: :func:`rlrobot.train.learn` on a host buffer."""
    def learn_buffer(state: UnityTrainState, transitions: Transition, step: jnp.ndarray) -> tuple[UnityTrainState, Metrics]:
        key, key_update = jax.random.split(state.key)
        agent, opt_state, metrics = learn(state.agent, state.opt_state, transitions, step, key_update, spec)
        return state.replace(agent=agent, opt_state=opt_state, key=key, step=step + spec.steps_per_iteration), metrics
    return jax.jit(learn_buffer)


class HostRollout:
    """Steps the players one buffer at a time and books episodes and time_horizon cuts per agent slot."""

    def __init__(self, env, spec: TrainSpec, act, seed: int) -> None:
        self.env, self.spec, self.act = env, spec, act
        self.key = jax.random.PRNGKey(seed + 1)
        self.obs = env.reset()
        n = env.num_agents
        self.returns = np.zeros(n, np.float64)
        self.lengths = np.zeros(n, np.int64)
        self.trajectory_length = np.zeros(n, np.int64)

    def collect(self, agent: AgentState, stop: StopRequest) -> tuple[Transition, Metrics] | None:
        """``rollout_steps`` decisions, time-major ``[T, N, ...]``; None if a stop came mid-way (the part is dropped)."""
        columns: list[tuple] = []
        sums = np.zeros(6)   # episodes, return, return², length, successes, entropy
        for _ in range(self.spec.rollout_steps):
            if stop.requested:
                return None
            self.key, key_act = jax.random.split(self.key)
            raw, log_prob, action, entropy = jax.device_get(self.act(agent, self.obs, key_act))
            out = self.env.step(np.asarray(action))
            done = out.terminated | out.truncated
            self.returns += out.reward
            self.lengths += 1
            self.trajectory_length += 1
            cut = (self.trajectory_length >= self.spec.time_horizon) & ~done
            columns.append((self.obs, raw, log_prob, out.reward, out.terminated, out.truncated | cut, out.final_obs))
            ended = self.returns[done]
            sums += (done.sum(), ended.sum(), (ended**2).sum(), self.lengths[done].sum(), out.terminated.sum(), entropy)
            self.returns[done], self.lengths[done] = 0.0, 0
            self.trajectory_length[done | cut] = 0
            self.obs = out.obs
        obs, raw, log_prob, reward, terminated, truncated, next_obs = (np.stack(c) for c in zip(*columns))
        transitions = Transition(obs=obs.astype(np.float32), raw_action=raw, log_prob=log_prob,
                                 reward=reward.astype(np.float32), terminated=terminated, truncated=truncated,
                                 next_obs=next_obs.astype(np.float32))
        episodes, ret, ret_sq, length, successes, entropy = (np.float32(x) for x in sums)
        return transitions, Metrics.zeros().replace(
            iterations=np.float32(1.0), episodes=episodes, episode_return=ret, episode_return_sq=ret_sq,
            episode_length=length, successes=successes, entropy=entropy / self.spec.rollout_steps)


def load_unity_state(state: UnityTrainState, settings: RunSettings, behavior: str, paths: RunPaths) -> UnityTrainState:
    """``--resume`` (networks, optimiser and step of an rlrobot run, a JAX-trained one included) or
    ``--initialize-from`` (networks only)."""
    cp = settings.checkpoint_settings
    try:
        if cp.resume:
            path = paths.latest_checkpoint
            agent, step, _ = load_checkpoint(path, state.agent, field="agent")
            opt_state, _, _ = load_checkpoint(path, state.opt_state, field="opt_state")
            return state.replace(agent=agent, opt_state=opt_state, step=jnp.int32(step))
        source = settings.behavior(behavior).init_path or (
            Path(cp.results_dir) / cp.initialize_from / behavior / "checkpoint.ckpt" if cp.initialize_from else None)
        if source is not None:
            if not Path(source).is_file():
                raise RunError(f"--initialize-from: no checkpoint at {source}")
            agent, _, _ = load_checkpoint(Path(source), state.agent, field="agent")
            return state.replace(agent=agent)
    except CheckpointError as error:
        raise RunError(str(error)) from error
    return state


def run_unity_training(settings: RunSettings, argv: list[str]) -> int:
    """Train (or with ``--inference`` run) the build's behavior; returns the exit code.

    A problem before training starts (no build, busy port, unknown behavior, size mismatch) raises RunError.
    A player crash or time-out during training stops the run with one error line and exit code 1, after saving the
    state of the last finished update as a checkpoint (earlier ones are kept).
    """
    try:
        from envs.unity import UnityError, check_policy_sizes
    except ImportError as error:
        raise RunError(f"--env needs mlagents-envs ({error}); install it with: pip install 'rlrobot[unity]'") from None
    cp = settings.checkpoint_settings
    seed = resolve_seed(settings)
    run_dir = Path(cp.results_dir) / cp.run_id
    if run_dir.exists() and not (cp.resume or cp.force or cp.inference):
        raise RunError(EXISTS_MESSAGE)   # before the player writes its log into the run folder
    try:
        env = open_unity(settings, seed, None if cp.inference else run_dir / "run_logs")
    except UnityError as error:
        raise RunError(str(error)) from error
    try:
        behavior = env.brain_name
        try:
            trainer: TrainerSettings = settings.behavior(behavior)
        except ConfigError as error:
            raise RunError(str(error)) from error
        spec = make_train_spec(trainer, env.observation_size, env.action_size, env.num_agents)
        try:
            check_policy_sizes(env, spec.network.obs_size, spec.network.action_size, "the trainer's networks")
        except UnityError as error:
            raise RunError(str(error)) from error
        # The folder check is done; the player's log may already have created run_logs.
        paths = prepare_run_dir(settings if cp.resume else replace(settings, checkpoint_settings=replace(cp, force=True)),
                                behavior)
        key = jax.random.PRNGKey(seed)
        agent = init_agent(key, spec.network)
        state = UnityTrainState(agent=agent, opt_state=make_optimizer().init(agent.params),
                                key=jax.random.fold_in(key, 1), step=jnp.int32(0))
        state = load_unity_state(state, settings, behavior, paths)
        logger.info(f"Hyperparameters for behavior name {behavior}: \n{trainer}")
        logger.info(f"rlrobot {__version__} on {settings.env_settings.env_path} ({env.behavior_name}): "
                    f"{env.num_agents} agents x {spec.rollout_steps} decisions = {spec.steps_per_iteration} "
                    f"agent-steps per update; seed {seed}")
        return UnityTraining(env, settings, trainer, spec, paths, seed, Timers(argv)).run(state, UnityError)
    finally:
        env.close()


class UnityTraining:
    """The host loop: collect a buffer, learn from it (in a worker thread), summarise, checkpoint, stop cleanly."""

    def __init__(self, env, settings: RunSettings, trainer: TrainerSettings, spec: TrainSpec, paths: RunPaths,
                 seed: int, timers: Timers) -> None:
        cp = settings.checkpoint_settings
        self.env, self.settings, self.trainer, self.spec, self.paths, self.timers = env, settings, trainer, spec, paths, timers
        self.behavior = env.brain_name
        self.training = not cp.inference
        self.status = TrainingStatus.load(paths.status_path) if cp.resume else TrainingStatus()
        self.checkpoints = CheckpointManager(paths.behavior_dir, self.behavior, trainer.keep_checkpoints, self.status,
                                             paths.status_path)
        self.writer = SummaryWriter(paths.run_dir, self.behavior, clear_past_data=not (cp.resume or cp.inference))
        self.writer.write_hyperparameters(str(trainer))
        self.metadata = {**checkpoint_metadata(self.behavior, spec, seed), "unity_env": settings.env_settings.env_path}
        self.act = make_act(spec.network, explore=not trainer.network_settings.deterministic)
        self.learn = make_learn(spec)
        self.seed = seed

    def save(self, state: UnityTrainState, reward: float | None) -> Path:
        """A checkpoint and its ``<Behavior>-<step>.onnx``, as on the JAX path."""
        def onnx_file(stem: Path) -> list[Path]:
            path = export_policy(state.agent, self.spec.network, stem.with_suffix(".onnx"))
            logger.info(f"Exported {path}")
            return [path]
        return self.checkpoints.save(state, int(state.step), reward, self.metadata, extra_files=onnx_file)

    def run(self, state: UnityTrainState, unity_error: type[Exception]) -> int:
        trainer, spec = self.trainer, self.spec
        first_step = saved_step = int(state.step)
        collected_step = first_step
        start = last_summary_time = time.perf_counter()
        last_summary_step, last_reward, pending, exit_code = first_step, None, None, 0
        acting = state.agent
        in_flight: Future | None = None
        progress = Progress(trainer.max_steps)
        progress.start()

        def finish_update() -> Metrics:
            nonlocal state, in_flight
            state, learned = in_flight.result()
            in_flight = None
            if not bool(learned.loss_is_finite):
                raise FloatingPointError
            return learned

        try:
            with StopRequest() as stop, self.timers.time("train"), ThreadPoolExecutor(1) as pool:
                rollout = HostRollout(self.env, spec, self.act, self.seed)
                while collected_step < trainer.max_steps and not stop.requested:
                    collected = rollout.collect(acting, stop)
                    learned = finish_update() if in_flight is not None else None   # threaded: overlapped the rollout
                    if collected is None:
                        break
                    transitions, metrics = collected
                    if self.training:
                        in_flight = pool.submit(lambda s=state, t=transitions, k=collected_step:
                                                jax.block_until_ready(self.learn(s, t, jnp.int32(k))))
                        if not trainer.threaded:
                            learned = finish_update()
                        acting = state.agent
                    if learned is not None:
                        metrics = metrics.replace(**{k: getattr(learned, k) for k in LEARNED_FIELDS})
                    pending = metrics if pending is None else pending.add(metrics)
                    previous, collected_step = collected_step, collected_step + spec.steps_per_iteration
                    progress.update(collected_step)
                    if collected_step >= next_multiple(previous, trainer.summary_freq):
                        now = time.perf_counter()
                        label = (collected_step // trainer.summary_freq) * trainer.summary_freq
                        sps = (collected_step - last_summary_step) / (now - last_summary_time)
                        last_reward = write_summary(self.writer, self.behavior, label, pending, now - start, sps,
                                                    self.training) or last_reward
                        pending, last_summary_time, last_summary_step = None, now, collected_step
                    if (self.training and collected_step >= next_multiple(previous, trainer.effective_checkpoint_interval)
                            and collected_step < trainer.max_steps):
                        if in_flight is not None:
                            finish_update()
                            acting = state.agent
                        self.save(state, last_reward)
                        saved_step = int(state.step)
                if in_flight is not None:
                    finish_update()
        except FloatingPointError:
            logger.error(f"Training stopped at step {collected_step}: the loss or the network parameters became "
                         f"NaN/inf. The last good checkpoint is kept "
                         f"({self.checkpoints.latest_path() or 'none was written'}).")
            return self._close(exit_code=1, start=start, first_step=first_step, steps=collected_step)
        except unity_error as error:
            logger.error(f"Training stopped at step {collected_step}: {error}")
            exit_code = 1
        finally:
            progress.stop()
        if self.training and int(state.step) > saved_step:
            saved = self.save(state, last_reward)
            if exit_code == 0:
                self._finalise(state, saved, last_reward)
        elif self.training and exit_code == 0 and int(state.step) > first_step:
            self._finalise(state, self.checkpoints.latest_path(), last_reward)
        return self._close(exit_code, start, first_step, collected_step)

    def _finalise(self, state: UnityTrainState, checkpoint: Path | None, reward: float | None) -> None:
        """Copy the last ONNX to ``<run>/<Behavior>.onnx`` and mark it final in training_status.json."""
        step = int(state.step)
        source = self.paths.behavior_dir / f"{self.behavior}-{step}.onnx"
        final_onnx = self.paths.run_dir / f"{self.behavior}.onnx"
        shutil.copyfile(source, final_onnx)
        logger.info(f"Copied {source} to {final_onnx}.")
        self.status.set_final(self.behavior, step, str(final_onnx), reward, [str(checkpoint)] if checkpoint else [])
        self.status.save(self.paths.status_path)

    def _close(self, exit_code: int, start: float, first_step: int, steps: int) -> int:
        self.writer.close()
        if self.training or not (self.paths.run_dir / "configuration.yaml").exists():
            self.settings.dump_yaml(self.paths.run_dir / "configuration.yaml")
        self.timers.gauge("steps_per_second", (steps - first_step) / max(time.perf_counter() - start, 1e-9))
        self.timers.save(self.paths.timers_path)
        return exit_code

