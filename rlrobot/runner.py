"""The JAX loop of ``rlrobot-learn``: run the compiled iterations, hand their metrics and states to the run lifecycle.

``trainer`` builds the program and ``run`` owns the folders; this module only wakes the host at checkpoint and
stop points, and about every ``CALL_SECONDS`` in between: one device call runs as many summary periods as fit, each
summed apart and written in order when the call returns. The same loop drives a run split across devices and hosts
(``parallel``: only process 0 writes, checkpoints are gathered to it) and several runs vmapped together (``seeds``:
one run folder per member, plus a summary across them).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import numpy as np

from rlrobot import __version__, parallel
from rlrobot.config import ConfigError, RunSettings
from rlrobot.export import export_policy
from rlrobot.lessons import Lessons
from rlrobot.render.replay import CheckpointReplays
from rlrobot.run import (
    Cadence,
    Run,
    RunError,
    StopRequest,
    SummaryClock,
    check_run_dir,
    resolve_seed,
    summary_extras,
    with_robots,
)
from rlrobot.seeds import Member, SeedsSummary, hyperparameter_table, member_settings, plan_members
from rlrobot.summaries import Progress, Timers, console_line, extras_line, hyperparameters_text
from rlrobot.train import Hyperparams, Metrics, TrainState, summarize
from rlrobot.trainer import JaxTrainer, build_jax_trainer, checkpoint_metadata

logger = logging.getLogger("rlrobot")

# Summary periods one device call may hold (``train.make_train_periods``), and the wall time a call aims at. Each
# call costs the host a wake-up and the kernel the zeroing of the call's temporaries (measured on a 2-core CPU with
# the fast config: 181 k agent-steps/s at one iteration per call, 241 k at eight); a longer call makes the console
# and Ctrl+C wait longer.
MAX_PERIODS = 16
CALL_SECONDS = 0.5


def _member(tree, index: int, batched: bool):
    """One run's part of a (host) tree: its index on the leading runs' axis if batched."""
    return jax.tree.map(lambda x: x[index], tree) if batched else tree


def _period(tree, index: int, batched: bool):
    """One summary period of ``make_train_periods``' outputs: the period axis follows the runs' axis if batched."""
    return jax.tree.map(lambda x: np.take(x, index, axis=int(batched)), tree)


def _open_runs(trainer: JaxTrainer, settings: RunSettings, members: list[Member],
               states: list[TrainState]) -> tuple[list[Run], list[TrainState]]:
    """Process 0 checks the folders, loads each member's initial state and opens its run; the others learn whether
    it could (a failure is raised on every process)."""
    runs, failure = [], None
    if jax.process_index() == 0:
        try:
            if members[0].name:  # --seeds/--sweep: <run-id>/ holds the members and needs --resume or --force too
                check_run_dir(settings)
            spec = trainer.spec
            for index, member in enumerate(members):
                member_run = member_settings(settings, trainer.behavior, member)
                check_run_dir(member_run, trainer.behavior)
                metadata = checkpoint_metadata(trainer.behavior, spec, member.seed, scene=trainer.scene)
                runs.append(Run(member_run, trainer.behavior, metadata,
                                export=lambda s, path: export_policy(s.agent, spec.network, path)))
                states[index] = runs[-1].initial_state(states[index])
        except (RunError, ConfigError) as error:
            failure = RunError(str(error))
    if not bool(parallel.broadcast_from_first(np.bool_(failure is None))):
        raise failure or RunError("Process 0 could not start the run; see its log.")
    for run in runs:
        run.open()
    return runs, states


def run_training(settings: RunSettings, argv: list[str], *, devices: int | None = None, seeds: int = 1,
                 sweep: list[dict[str, float]] | None = None) -> int:
    """Train (or with ``--inference`` just run) the policy of the configured JAX behavior; returns the exit code.

    ``devices`` splits the robots across that many devices (None: all); ``seeds`` and ``sweep`` (points of
    ``seeds.load_sweep``) train several runs vmapped in one program. Only process 0 of a multi-process job writes.
    Ctrl+C and SIGTERM are a stop request from the start: one during the compile ends the run once it is done.
    """
    with StopRequest() as stop:
        return _train(settings, Timers(argv), stop, devices, seeds, sweep)


def _train(settings: RunSettings, timers: Timers, stop: StopRequest, devices: int | None, seeds: int,
           sweep: list[dict[str, float]] | None) -> int:
    if jax.process_index() != 0:
        logger.setLevel(logging.WARNING)
    trainer = build_jax_trainer(settings, devices=devices, runs=seeds * max(1, len(sweep or ())))
    settings = with_robots(settings, trainer.spec.num_envs)
    seed = int(parallel.broadcast_from_first(np.int64(resolve_seed(settings))))
    members = plan_members(seed, seeds, sweep)
    batched = bool(members[0].name)
    runs, states = _open_runs(trainer, settings, members, [trainer.init_state(m.seed) for m in members])
    _log_start(settings, trainer, seed, members)
    state = trainer.place(states, batched)
    lessons = Lessons(trainer, settings, runs, batched, len(members))
    state = lessons.start(state)
    table = hyperparameter_table(members, vars(Hyperparams.from_spec(trainer.spec)))
    hparams = None if table is None else parallel.replicate(Hyperparams(**table), trainer.mesh)
    cp = settings.checkpoint_settings
    # The summary across runs follows training (a resumed run appends); --inference only logs to the console.
    group = (SeedsSummary(Path(cp.results_dir) / cp.run_id, members, clear_past_data=not cp.resume)
             if batched and runs and not cp.inference else None)
    # Replays compile their small program on a worker thread while the training program compiles.
    replays = (CheckpointReplays.start(trainer, settings.replay_settings, settings.behavior(
        trainer.behavior).network_settings.deterministic, seed, states[0].agent) if runs and not cp.inference else None)
    with timers.time("compile"):
        t0 = time.perf_counter()
        program = trainer.compile(state, hparams, inference=cp.inference, batched=batched, periods=MAX_PERIODS,
                                  deterministic=settings.behavior(trainer.behavior).network_settings.deterministic)
        compile_s = time.perf_counter() - t0
    timers.gauge("compile_seconds", compile_s)
    logger.info(f"Compiled the training step in {compile_s:.2f} s.")
    if replays is not None:
        replays.wait_until_compiled()  # so that the training loop never shares the CPU with that compile
    loop = JaxTraining(settings, trainer, runs, members, group, timers, replays)
    loop.lessons = lessons
    if stop.requested:
        return loop.abandon()
    return loop.run(program, state, hparams, stop)


def _log_start(settings: RunSettings, trainer: JaxTrainer, seed: int, members: list[Member]) -> None:
    spec = trainer.spec
    logger.info(f"Hyperparameters for behavior name {trainer.behavior}: \n"
                f"{hyperparameters_text(settings.behavior(trainer.behavior).as_dict())}")
    logger.info(f"rlrobot {__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}) x "
                f"{trainer.num_devices} in {jax.process_count()} process(es); seed {seed}; {spec.num_envs} robots x "
                f"{spec.rollout_steps} steps = {spec.steps_per_iteration} agent-steps per update"
                + (f"; {len(members)} runs in one program" if members[0].name else "")
                + ("; the actor and the critic learn on a CPU device each" if trainer.learners is not None else ""))
    if settings.torch_settings.device is not None:
        logger.info(f"torch_settings.device {settings.torch_settings.device}: JAX picks the devices here "
                    f"(see --devices); the setting is kept in configuration.yaml only.")


class JaxTraining:
    """Device calls between host wake-ups; summaries, checkpoints, NaN stops and the end go to the runs."""

    lessons: Lessons | None = None  # the curricula: lessons move after summaries
    seconds_per_iteration: float | None = None  # measured over the last device call

    def __init__(self, settings: RunSettings, trainer: JaxTrainer, runs: list[Run], members: list[Member],
                 group: SeedsSummary | None, timers: Timers, replays: CheckpointReplays | None = None) -> None:
        self.settings, self.trainer, self.runs, self.members, self.group, self.timers = (
            settings, trainer, runs, members, group, timers)
        self.replays = replays
        self.behavior = trainer.behavior
        self.config = settings.behavior(self.behavior)
        self.training = not settings.checkpoint_settings.inference
        self.batched = bool(members[0].name)

    def run(self, program, state: TrainState, hparams: Hyperparams | None, stop: StopRequest) -> int:
        """Device calls of ``train.make_train_periods`` until ``max_steps`` or a stop; returns the exit code."""
        step = self.saved_step = self.trainer.steps(state)
        self.cadence = cadence = Cadence.of(self.config, inference=not self.training, first_step=step)
        self.clock, self.pending, exit_code = SummaryClock(step, self.timers.started), None, 0
        self.progress = Progress(cadence.max_steps, enabled=None if jax.process_index() == 0 else False)
        self.progress.start()
        try:
            with self.timers.time("train"):
                while step < cadence.max_steps and not stop.requested:
                    state, step, finite = self._call(program, state, hparams, step)
                    if self.replays is not None:
                        self.replays.collect()
                    failed = not finite or bool(parallel.broadcast_from_first(
                        np.bool_(any(run.failed for run in self.runs))))
                    if failed:
                        exit_code = 1
                        break
        finally:
            self.progress.stop()
            if self.training and step > 0 and exit_code == 0:
                self._finish(state if step != self.saved_step else None, step)
            self.timers.gauge("steps_per_second", len(self.members) * self.clock.overall_rate(step))
            self._close()
        return exit_code

    def _plan(self, step: int) -> list[int]:
        """Iterations per summary period for the next call: one period at first and while curricula may move after
        a summary, else as many as fit ``CALL_SECONDS`` at the rate measured so far (process 0's choice)."""
        curricula = self.lessons is not None and bool(self.lessons.names)
        budget = 1 if curricula or self.seconds_per_iteration is None else CALL_SECONDS / self.seconds_per_iteration
        budget = int(parallel.broadcast_from_first(np.int32(max(1, int(budget)))))
        return self.cadence.periods(step, self.trainer.spec.steps_per_iteration, 1 if curricula else MAX_PERIODS,
                                    budget)

    def _call(self, program, state: TrainState, hparams: Hyperparams | None,
              step: int) -> tuple[TrainState, int, bool]:
        """One device call; then each period's NaN check, summary and lessons, and a checkpoint if one is due at
        its end. Returns the state, its step and whether every loss stayed finite."""
        counts = self._plan(step)
        started = time.perf_counter()
        state, metrics, ends = program(state, np.pad(np.asarray(counts, np.int32), (0, MAX_PERIODS - len(counts))),
                                       hparams)
        metrics, ends = jax.device_get((metrics, ends))
        finished = time.perf_counter()
        spi = self.trainer.spec.steps_per_iteration
        first, last = step, int(np.max(ends[..., len(counts) - 1])) * spi
        self.seconds_per_iteration = (finished - started) / max(1, (last - first) // spi)
        for period in range(len(counts)):
            metrics_p = _period(metrics, period, self.batched)
            new_step = int(np.max(ends[..., period])) * spi
            self.pending = metrics_p if self.pending is None else self.pending.add(metrics_p)
            if not self._finite(metrics_p, new_step):
                return state, step, False
            self.progress.update(new_step)
            if self.cadence.summary_due(step, new_step):
                at = None if period == len(counts) - 1 else started + (finished - started) * (
                    (new_step - first) / max(last - first, 1))
                self._summarize(self.cadence.label(new_step), self.pending, self.clock, new_step, at)
                if self.lessons is not None:
                    state = self.lessons.update(state, new_step, self.pending)
                self.pending = None
            if self.training and self.cadence.checkpoint_due(step, new_step):
                self._save(state, new_step)
                self.saved_step = new_step
            step = new_step
        return state, step, True

    def _finite(self, metrics: Metrics, step: int) -> bool:
        finite = np.asarray(jax.device_get(metrics.loss_is_finite)).reshape(-1)
        if finite.all():
            return True
        where = f" in {', '.join(self.members[i].name for i in np.flatnonzero(~finite))}" if self.batched else ""
        if self.runs:
            self.runs[0].stopped_by_nan(step, where)
        return False

    def _summarize(self, label: int, metrics: Metrics, clock: SummaryClock, step: int,
                   at: float | None = None) -> None:
        elapsed, rate = clock.lap(step, at)
        host = jax.device_get(metrics)
        strength = self.trainer.spec.reward_strength
        summaries = [summarize(member, self.training, strength)
                     for member in (_member(host, i, self.batched) for i in range(len(self.members)))]
        for run, summary in zip(self.runs, summaries):
            run.write_summary(label, summary, elapsed, rate, console=not self.batched)
        if self.batched:
            write_group_summary(self.group, self.behavior, label, summaries, elapsed, rate, self.training)

    def _save(self, state: TrainState, step: int) -> None:
        host = parallel.gather(state)  # every process takes part; process 0 writes
        for index, run in enumerate(self.runs):
            if run.save(_member(host, index, self.batched), step) is not None:
                self._replay(run, host, index, step)

    def _replay(self, run: Run, host: TrainState, index: int, step: int) -> None:
        """Draw the checkpoint's replay (``CheckpointReplays``), if replays are on."""
        if self.replays is not None:
            self.replays.submit(run, _member(host, index, self.batched).agent, step)

    def _finish(self, state: TrainState | None, step: int) -> None:
        host = None if state is None else parallel.gather(state)
        for index, run in enumerate(self.runs):
            run.finish(None if host is None else _member(host, index, self.batched), step)
            if host is not None and not run.failed:
                self._replay(run, host, index, step)

    def abandon(self) -> int:
        """Stopped during start-up (Ctrl+C or SIGTERM while compiling): close the runs; nothing was trained."""
        logger.info("Interrupted before training started; nothing was saved.")
        if self.replays is not None:
            self.replays.close(wait=False)
        for run in self.runs:
            run.writer.close()
        return 130

    def _close(self) -> None:
        if self.replays is not None:
            self.replays.close()
        for run in self.runs:
            run.close(self.timers)
        if self.group is not None:
            logger.info(f"Wrote the summary across runs to {self.group.close()}.")


def write_group_summary(group: SeedsSummary | None, behavior: str, step: int, summaries: list, elapsed: float,
                        rate: float, training: bool) -> None:
    """Mean ± std across runs to ``summary/`` (if kept); on the console, the runs' mean reward, its spread across
    runs, and the agent-steps/s of all runs together."""
    runs = len(summaries)
    scalars = [s.scalars for s in summaries]
    if group is not None:
        group.add(step, scalars, elapsed, runs * rate)
    rewards = [s["Environment/Cumulative Reward"] for s in scalars if "Environment/Cumulative Reward" in s]
    successes = [s["Environment/Success Rate"] for s in scalars if "Environment/Success Rate" in s]
    mean, std = (float(np.mean(rewards)), float(np.std(rewards))) if rewards else (None, None)
    name = f"{behavior} ({runs} runs)"
    logger.info(console_line(name, step, elapsed, mean, std, training))
    extra = summary_extras({"Environment/Success Rate": float(np.mean(successes))} if successes else {}, runs * rate)
    logger.info(extras_line(name, step, extra))
