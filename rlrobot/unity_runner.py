"""The Unity loop of ``rlrobot-learn CONFIG --env PATH``: a host rollout on the players, the same jitted PPO update.

The players run as separate processes behind mlagents-envs (:mod:`envs.unity`); :class:`HostRollout` steps them
with the policy jitted on the host batch and fills the same time-major :class:`rlrobot.train.Transition` buffer the
JAX rollout scans into; ``trainer.build_unity_trainer`` provides the policy and ``train.learn``, and ``run`` owns the
folder, summaries and checkpoints, as on the JAX path. With ``threaded: true`` the update of one buffer runs in a
worker thread while the players collect the next one with the previous parameters, as ML-Agents' threaded trainer
does (the data is then one update behind the parameters it is learned into; PPO's ratio accounts for it). A player
that crashes is relaunched with ML-Agents' restart limits (``max_lifetime_restarts``, ``restarts_rate_limit_n``
per ``restarts_rate_limit_period_s``); the buffer being collected is dropped, as ML-Agents drops its trajectories.
``environment_parameters`` (constants, samplers, curricula) reach the build as mlagents-learn sends them
(:mod:`rlrobot.unity_parameters`); lessons move after summaries, as on the JAX path.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np

from rlrobot import __version__
from rlrobot.config import ConfigError, RunSettings
from rlrobot.export import export_policy
from rlrobot.networks import AgentState
from rlrobot.run import (
    Cadence,
    Run,
    RunError,
    StopRequest,
    SummaryClock,
    check_run_dir,
    resolve_seed,
    run_dir,
    with_num_envs,
)
from rlrobot.summaries import Progress, Timers, hyperparameters_text
from rlrobot.train import (
    LEARNED_FIELDS,
    EpisodeEnds,
    Metrics,
    TrainSpec,
    Transition,
    Window,
    empty_carry,
    episode_metrics,
    make_window,
    next_carry,
    summarize,
)
from rlrobot.trainer import UnityTrainer, UnityTrainState, build_unity_trainer, checkpoint_metadata, seed_key
from rlrobot.unity_parameters import UnityParameters

logger = logging.getLogger("rlrobot")


def open_unity(settings: RunSettings, seed: int, log_folder: Path | None, listen_address: str = "127.0.0.1",
               parameters: dict | None = None):
    """The build's players: one ``UnityBatchEnv`` or ``--num-envs`` of them side by side, launched with the engine
    settings mlagents-learn sends and the environment parameters' values (``UnityParameters.values``)."""
    from envs.unity import UnityBatchEnv, UnityVectorEnv

    es, engine = settings.env_settings, settings.engine_settings
    names = list(settings.behaviors)
    options = dict(behavior=names[0] if len(names) == 1 else None, base_port=es.base_port,
                   timeout_wait=es.timeout_wait, seed=seed % 2**31, num_areas=es.num_areas,  # the protocol's int32
                   environment_parameters=parameters,
                   additional_args=tuple(es.env_args or ()), log_folder=str(log_folder) if log_folder else None,
                   width=engine.width, height=engine.height, quality_level=engine.quality_level,
                   time_scale=engine.time_scale, target_frame_rate=engine.target_frame_rate,
                   capture_frame_rate=engine.capture_frame_rate, no_graphics=engine.no_graphics,
                   no_graphics_monitor=engine.no_graphics_monitor, listen_address=listen_address)
    num_players = es.num_envs or 1
    if num_players > 4 * (os.cpu_count() or 1):
        raise RunError(f"env_settings.num_envs {num_players}: that many Unity players would swamp this machine's "
                       f"{os.cpu_count()} cores (with --env, num_envs counts players, not robots); pass --num-envs")
    if num_players == 1:
        return UnityBatchEnv(es.env_path, **options)
    return UnityVectorEnv(es.env_path, num_envs=num_players, **options)


class HostRollout:
    """Steps the players one buffer at a time and books episodes and time_horizon cuts per agent slot; relaunches
    crashed players within the restart budget.

    Each buffer comes as a :class:`rlrobot.train.Window`, as the JAX iteration builds it: the steps of the agents'
    unfinished trajectories, carried here on the host, followed by the new rollout, so GAE and the update see whole
    trajectories up to ``time_horizon`` (ML-Agents' semantics). A restart drops the carried steps, as ML-Agents drops
    the players' unfinished trajectories."""

    def __init__(self, env, spec: TrainSpec, act, seed: int, budget, parameters: dict | None = None) -> None:
        self.env, self.spec, self.act, self.budget = env, spec, act, budget
        self.key = jax.random.fold_in(seed_key(seed), 2)
        self._start(env.reset(parameters))

    def reset(self, parameters: dict) -> None:
        """Reset every player with these environment parameters (a lesson's ``require_reset``) and drop the carried
        steps, as ML-Agents drops the unfinished trajectories on a reset."""
        from envs.unity import PlayerFailure

        try:
            self._start(self.env.reset(parameters))
        except PlayerFailure as failure:
            self._restart(failure)

    def _start(self, obs: np.ndarray) -> None:
        n = self.env.num_agents
        self.obs = obs
        self.returns = np.zeros(n, np.float64)
        self.lengths = np.zeros(n, np.int64)
        self.trajectory_length = np.zeros(n, np.int64)
        self.carry = empty_carry(self.spec, n, xp=np)

    def collect(self, agent: AgentState, stop: StopRequest) -> tuple[Window, Metrics] | None:
        """``rollout_steps`` decisions after the carried steps, time-major ``[W, N, ...]``; None if a stop came
        mid-way (the part is dropped).

        A crashed player is relaunched (``envs.unity.PlayerFailure``) if the budget allows, every player is reset
        and the buffer starts again; otherwise the failure goes up as a ``UnityError``."""
        from envs.unity import PlayerFailure

        while True:
            try:
                return self._collect(agent, stop)
            except PlayerFailure as failure:
                self._restart(failure)

    def _restart(self, failure) -> None:
        from envs.unity import UnityError

        for worker in failure.workers:
            if not self.budget.allow(worker):
                raise UnityError(f"Worker {worker} exceeded the allowed number of restarts ({failure})") from failure
        logger.warning(f"Restarting worker{list(failure.workers)} after '{failure}'")
        self._start(self.env.restart(failure.workers))

    def _collect(self, agent: AgentState, stop: StopRequest) -> tuple[Window, Metrics] | None:
        columns: list[tuple] = []
        pending = self.trajectory_length.copy()
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
            columns.append((self.obs, raw, log_prob, out.reward, out.terminated, out.truncated | cut, out.final_obs,
                            done, self.returns.copy(), self.lengths.copy(), entropy))
            self.returns[done], self.lengths[done] = 0.0, 0
            self.trajectory_length[done | cut] = 0
            self.obs = out.obs
        obs, raw, log_prob, reward, terminated, truncated, next_obs, done, returns, lengths, entropy = (
            np.stack(c) for c in zip(*columns))
        transitions = Transition(obs=obs.astype(np.float32), raw_action=raw, log_prob=log_prob,
                                 reward=reward.astype(np.float32), terminated=terminated, truncated=truncated,
                                 next_obs=next_obs.astype(np.float32))
        ends = EpisodeEnds(done=done, returns=returns.astype(np.float32), lengths=lengths.astype(np.float32))
        window = make_window(self.spec, self.carry, transitions, pending, self.trajectory_length,
                             self.obs.astype(np.float32), xp=np)
        self.carry = next_carry(self.spec, window.transitions)
        return window, jax.device_get(episode_metrics(ends, terminated, entropy))


def run_unity_training(settings: RunSettings, argv: list[str], listen_address: str = "127.0.0.1") -> int:
    """Train (or with ``--inference`` run) the build's behavior; returns the exit code.

    A problem before training starts (no build, busy port, unknown behavior) raises RunError. A player failure beyond
    the restart budget stops the run with one error line and exit code 1, after saving the state of the last
    finished update as a checkpoint (earlier ones are kept). Ctrl+C while the players start raises KeyboardInterrupt
    (nothing is saved yet); from the first rollout on it is a stop request.
    """
    with StopRequest(armed=False) as stop:
        return _train_on_build(settings, Timers(argv), stop, listen_address)


def _train_on_build(settings: RunSettings, timers: Timers, stop: StopRequest, listen_address: str) -> int:
    try:
        from envs.unity import RestartBudget, UnityError
    except ImportError as error:
        raise RunError(f"--env needs mlagents-envs ({error}); install it with: pip install 'rlrobot[unity]'") from None
    cp, es = settings.checkpoint_settings, settings.env_settings
    seed = resolve_seed(settings)
    parameters = UnityParameters(settings.environment_parameters, seed)
    check_run_dir(settings)   # before the player writes its log into the run folder
    try:
        env = open_unity(settings, seed, None if cp.inference else run_dir(settings) / "run_logs", listen_address,
                         parameters.values())
    except UnityError as error:
        raise RunError(str(error)) from error
    try:
        try:
            config = settings.behavior(env.brain_name)
        except ConfigError as error:
            raise RunError(str(error)) from error
        parameters.check_behavior(env.brain_name)
        if cp.resume:
            check_run_dir(settings, env.brain_name)
        unity = build_unity_trainer(config, env.observation_size, env.action_size, env.num_agents)
        settings = with_num_envs(settings, es.num_envs or 1)
        run = _unity_run(settings, env, unity.spec, seed)
        state = run.initial_state(unity.init_state(seed), resume_fields=("agent", "opt_state"))
        run.open()
        _log_start(settings, env, unity.spec, seed)
        parameters.attach(run, config.max_steps)
        budget = RestartBudget(es.max_lifetime_restarts, es.restarts_rate_limit_n, es.restarts_rate_limit_period_s)
        stop.arm()
        return UnityTraining(env, run, unity, seed, timers, budget, parameters).run(state, UnityError, stop)
    finally:
        env.close()


def _unity_run(settings: RunSettings, env, spec: TrainSpec, seed: int) -> Run:
    sizes = tuple(getattr(env, "observation_sizes", (env.observation_size,)))
    metadata = checkpoint_metadata(env.brain_name, spec, seed, unity_env=settings.env_settings.env_path,
                                   observation_sizes=list(sizes))
    return Run(settings, env.brain_name, metadata,
               export=lambda state, path: export_policy(state.agent, spec.network, path, observation_sizes=sizes))


def _log_start(settings: RunSettings, env, spec: TrainSpec, seed: int) -> None:
    logger.info(f"Hyperparameters for behavior name {env.brain_name}: \n"
                f"{hyperparameters_text(settings.behavior(env.brain_name).as_dict())}")
    logger.info(f"rlrobot {__version__} on {settings.env_settings.env_path} ({env.behavior_name}): "
                f"{env.num_agents} agents x {spec.rollout_steps} decisions = {spec.steps_per_iteration} "
                f"agent-steps per update; seed {seed}")


class Updates:
    """Learns from each buffer, inline or (``threaded``) in a worker thread while the next buffer is collected."""

    def __init__(self, learn, pool: ThreadPoolExecutor) -> None:
        self._learn, self._pool = learn, pool
        self._in_flight: Future | None = None

    def submit(self, state: UnityTrainState, transitions: Transition) -> None:
        self._in_flight = self._pool.submit(lambda: jax.block_until_ready(self._learn(state, transitions)))

    def wait(self) -> tuple[UnityTrainState, Metrics] | None:
        """The update in flight, once finished (None if there is none)."""
        future, self._in_flight = self._in_flight, None
        return None if future is None else jax.device_get(future.result())


class UnityTraining:
    """Collect a buffer, learn from it, and hand metrics and states to the run."""

    def __init__(self, env, run: Run, unity: UnityTrainer, seed: int, timers: Timers, budget,
                 parameters: UnityParameters | None = None) -> None:
        self.env, self.record, self.unity, self.seed, self.timers, self.budget = env, run, unity, seed, timers, budget
        self.parameters = parameters
        self.config = run.trainer
        self.pending: Metrics | None = None
        self.diverged = False

    def run(self, state: UnityTrainState, unity_error: type[Exception], stop: StopRequest) -> int:
        first = saved = collected = int(state.step)
        self.cadence = Cadence.of(self.config, inference=not self.record.training, first_step=first)
        clock, exit_code = SummaryClock(first, self.timers.started), 0
        progress = Progress(self.cadence.max_steps)
        progress.start()
        try:
            with self.timers.time("train"), ThreadPoolExecutor(1) as pool:
                updates = Updates(self.unity.learn, pool)
                rollout = HostRollout(self.env, self.unity.spec, self.unity.act, self.seed, self.budget,
                                      self.parameters.values() if self.parameters else None)
                while (collected < self.cadence.max_steps and not stop.requested and not self.diverged
                       and not self.record.failed):
                    state, buffer_done = self._step(state, rollout, updates, stop)
                    if not buffer_done:
                        break
                    previous, collected = collected, collected + self.unity.spec.steps_per_iteration
                    progress.update(collected)
                    self._record(previous, collected, clock, rollout)
                    if self.record.training and self.cadence.checkpoint_due(previous, collected):
                        state = self._wait(state, updates)
                        saved = self._save(state, saved)
                state = self._wait(state, updates)
        except unity_error as error:
            logger.error(f"Training stopped at step {collected}: {error}")
            exit_code = 1
        finally:
            progress.stop()
        if self.diverged:
            self.record.stopped_by_nan(collected)
        elif self.record.training and int(state.step) != first and not self.record.failed:
            self._end(state, saved, exit_code)
        self.timers.gauge("steps_per_second", clock.overall_rate(collected))
        self.record.close(self.timers)
        return 1 if self.diverged or self.record.failed else exit_code

    def _step(self, state: UnityTrainState, rollout: HostRollout, updates: Updates,
              stop: StopRequest) -> tuple[UnityTrainState, bool]:
        """One buffer: collect it (threaded: while the previous update runs), then learn from it. Returns the state
        and whether a whole buffer was collected and learned from (not on a stop, nor after a NaN/inf update)."""
        collected = rollout.collect(state.agent, stop)
        state = self._wait(state, updates)
        if collected is None or self.diverged:
            return state, False
        transitions, metrics = collected
        self.record.environment_stats.add(self.env.pop_stats())
        self._add(metrics)
        if self.record.training:
            updates.submit(state, transitions)
            if not self.config.threaded:
                state = self._wait(state, updates)
        return state, not self.diverged

    def _wait(self, state: UnityTrainState, updates: Updates) -> UnityTrainState:
        """The state after the update in flight, if any, with its metrics booked; a NaN/inf update sets
        ``diverged`` and leaves the state before it."""
        result = updates.wait()
        if result is None:
            return state
        new_state, learned = result
        if not bool(learned.loss_is_finite):
            self.diverged = True
            return state
        self._add(Metrics.zeros().replace(**{k: getattr(learned, k) for k in LEARNED_FIELDS}))
        return new_state

    def _add(self, metrics: Metrics) -> None:
        self.pending = metrics if self.pending is None else self.pending.add(metrics)

    def _record(self, previous: int, collected: int, clock: SummaryClock, rollout: HostRollout) -> None:
        if not self.cadence.summary_due(previous, collected):
            return
        elapsed, rate = clock.lap(collected)
        summary = summarize(self.pending, self.record.training, self.unity.spec.reward_strength)
        self.record.write_summary(self.cadence.label(collected), summary, elapsed, rate)
        if self.parameters is not None:
            self._next_lessons(collected, rollout)
        self.pending = None

    def _next_lessons(self, step: int, rollout: HostRollout) -> None:
        """The curriculum sees the summary period; a lesson that moved sends every parameter's current value, with
        the next step or, when the finished lesson asks for ``require_reset``, with a reset of every player."""
        changed, must_reset = self.parameters.update(step, self.pending)
        if must_reset:
            logger.info("Resetting the environment: a completed lesson asks for require_reset.")
            rollout.reset(self.parameters.values())
        elif changed:
            self.env.set_environment_parameters(self.parameters.values())

    def _save(self, state: UnityTrainState, saved: int) -> int:
        step = int(state.step)
        if step != saved:
            self.record.save(state, step)
        return step

    def _end(self, state: UnityTrainState, saved: int, exit_code: int) -> None:
        """Save what the last finished update learned; mark the run final if it ended normally."""
        step = int(state.step)
        if exit_code == 0:
            self.record.finish(state if step != saved else None, step)
        else:
            self._save(state, saved)
