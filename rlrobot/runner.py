"""The host loop of ``rlrobot-learn``: the only place with files, clocks and signals.

It builds the jitted trainer for one behavior, then wakes up only at summary, checkpoint and stop points:
writes ML-Agents' results layout (``configuration.yaml``, ``run_logs/``, ``<Behavior>/`` with TensorBoard events,
``metrics.jsonl`` and checkpoints), prints ML-Agents' console lines, and saves on Ctrl+C / SIGTERM. The same loop
drives a run split across devices and hosts (``parallel``: only process 0 writes, checkpoints are gathered to it)
and several runs vmapped together (``seeds``: one such layout per run, plus a summary across them).
"""
from __future__ import annotations

import logging
import math
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import envs
from rlrobot import __version__, parallel
from rlrobot.checkpoints import CheckpointError, CheckpointManager, load_checkpoint
from rlrobot.config import ConfigError, RunSettings, TrainerSettings
from rlrobot.export import export_policy
from rlrobot.seeds import SeedsSummary, hyperparameter_table, member_settings, plan_members
from rlrobot.summaries import Progress, SummaryWriter, Timers, TrainingStatus, console_line
from rlrobot.train import (Hyperparams, TrainState, default_num_envs, init_train_state, make_train_iterations,
                           make_train_spec, reward_mean_std, summary_scalars)

logger = logging.getLogger("rlrobot")

EXISTS_MESSAGE = ("Previous data from this run ID was found. Either specify a new run ID, use --resume to resume this run, "
                  "or use the --force parameter to overwrite existing data.")
MISSING_MESSAGE = "Previous data from this run ID was not found. Train a new run by removing the --resume flag."


class RunError(Exception):
    """A user-facing problem with the run (folders, checkpoints, environment choice): one line, exit code 2."""


@dataclass(frozen=True)
class RunPaths:
    run_dir: Path
    behavior_dir: Path

    @property
    def status_path(self) -> Path:
        return self.run_dir / "run_logs" / "training_status.json"

    @property
    def timers_path(self) -> Path:
        return self.run_dir / "run_logs" / "timers.json"

    @property
    def latest_checkpoint(self) -> Path:
        return self.behavior_dir / "checkpoint.ckpt"


def choose_behavior(settings: RunSettings) -> str:
    """The behavior to train on the JAX robot: the configured behavior whose name is a built-in environment."""
    known = [name for name in settings.behaviors if name.split("?")[0] in envs.registered()]
    if not known:
        raise RunError(f"None of the behaviors {sorted(settings.behaviors)} is a built-in JAX environment "
                       f"({', '.join(envs.registered())}); to train on a Unity build use --env.")
    return known[0].split("?")[0]


def prepare_run_dir(settings: RunSettings, behavior: str) -> RunPaths:
    cp = settings.checkpoint_settings
    run_dir = Path(cp.results_dir) / cp.run_id
    paths = RunPaths(run_dir=run_dir, behavior_dir=run_dir / behavior)
    if cp.resume and not paths.latest_checkpoint.is_file():
        raise RunError(MISSING_MESSAGE if not run_dir.exists() else f"{paths.latest_checkpoint}: no checkpoint to resume from.")
    if run_dir.exists() and not (cp.resume or cp.force or cp.inference):
        raise RunError(EXISTS_MESSAGE)
    (run_dir / "run_logs").mkdir(parents=True, exist_ok=True)
    paths.behavior_dir.mkdir(parents=True, exist_ok=True)
    return paths


def resolve_seed(settings: RunSettings) -> int:
    seed = settings.env_settings.seed
    return int(np.random.randint(0, 10000)) if seed == -1 else seed


class StopRequest:
    """Turns Ctrl+C and SIGTERM into a flag the loop checks between device calls (so a save is never torn)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        if not self.requested:
            logger.info("Learning was interrupted. Please wait while the graph is generated.")
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def load_initial_state(state: TrainState, settings: RunSettings, behavior: str, paths: RunPaths) -> TrainState:
    """Resume the whole state (step included) or initialise the networks from another run (step 0)."""
    cp = settings.checkpoint_settings
    try:
        if cp.resume:
            state, _, _ = load_checkpoint(paths.latest_checkpoint, state)
            return state
        source = settings.behavior(behavior).init_path or (
            Path(cp.results_dir) / cp.initialize_from / behavior / "checkpoint.ckpt" if cp.initialize_from else None)
        if source is not None:
            if not Path(source).is_file():
                raise RunError(f"--initialize-from: no checkpoint at {source}")
            loaded, _, _ = load_checkpoint(Path(source), state)
            return state.replace(agent=loaded.agent)
    except CheckpointError as error:
        raise RunError(str(error)) from error
    return state


def checkpoint_metadata(behavior: str, spec, seed: int) -> dict:
    """What a checkpoint needs to be read back without the YAML (export, validation)."""
    net = spec.network
    return {"behavior": behavior, "seed": seed, "num_envs": spec.num_envs, "rlrobot_version": __version__,
            "network": {"obs_size": net.obs_size, "action_size": net.action_size, "hidden_units": net.hidden_units,
                        "num_layers": net.num_layers, "normalize": net.normalize}}


def apply_environment_parameters(env_params, parameters: dict | None):
    """ML-Agents' ``environment_parameters`` (sent to Unity scenes) set fields of the JAX scene's params.

    Constant values only (``max_episode_steps: 500``, ``random_spawn: true``); samplers and curricula are Unity-side
    features this trainer does not run yet, so they are refused with the parameter's name.
    """
    fields = {name for name in env_params.__dataclass_fields__}
    for name, value in (parameters or {}).items():
        if name not in fields:
            raise RunError(f"environment_parameters.{name}: not a parameter of this scene ({', '.join(sorted(fields))})")
        if isinstance(value, dict):
            raise RunError(f"environment_parameters.{name}: only constant values are supported, not samplers or curricula")
        current = getattr(env_params, name)
        try:
            converted = type(current)(value) if isinstance(current, (bool, int, float, str)) else value
        except (TypeError, ValueError):
            raise RunError(f"environment_parameters.{name}: {value!r} is not a {type(current).__name__}") from None
        env_params = env_params.replace(**{name: converted})
    return env_params


def next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


class RunRecord:
    """What one run writes (process 0 only): events and metrics, checkpoints with their ONNX, training status,
    timers and ``configuration.yaml``, in ML-Agents' layout under ``paths.run_dir``."""

    def __init__(self, settings: RunSettings, behavior: str, spec, seed: int) -> None:
        self.settings, self.behavior, self.spec, self.seed = settings, behavior, spec, seed
        self.paths = prepare_run_dir(settings, behavior)
        self.last_reward: float | None = None

    def open(self) -> None:
        """Start the status, checkpoint and summary files (after the initial state loaded: a bad source writes nothing)."""
        cp, trainer = self.settings.checkpoint_settings, self.settings.behavior(self.behavior)
        self.status = TrainingStatus.load(self.paths.status_path) if cp.resume else TrainingStatus()
        self.checkpoints = CheckpointManager(self.paths.behavior_dir, self.behavior, trainer.keep_checkpoints,
                                             self.status, self.paths.status_path)
        # --inference may look at a finished run: never delete what that run wrote.
        self.writer = SummaryWriter(self.paths.run_dir, self.behavior, clear_past_data=not (cp.resume or cp.inference))
        self.writer.write_hyperparameters(str(trainer))

    def save(self, state: TrainState, step: int) -> Path:
        """A checkpoint and its ``<Behavior>-<step>.onnx``, as ML-Agents writes at every checkpoint."""
        def onnx_file(stem: Path) -> list[Path]:
            path = export_policy(state.agent, self.spec.network, stem.with_suffix(".onnx"))
            logger.info(f"Exported {path}")
            return [path]
        return self.checkpoints.save(state, step, self.last_reward, checkpoint_metadata(self.behavior, self.spec, self.seed),
                                     extra_files=onnx_file)

    def finish(self, state: TrainState | None, step: int) -> None:
        """The final checkpoint (``state`` None: the one at ``step`` is already saved) and ``<Behavior>.onnx``."""
        final_ckpt = self.save(state, step) if state is not None else self.checkpoints.latest_path()
        source, final_onnx = self.paths.behavior_dir / f"{self.behavior}-{step}.onnx", self.paths.run_dir / f"{self.behavior}.onnx"
        shutil.copyfile(source, final_onnx)
        logger.info(f"Copied {source} to {final_onnx}.")
        self.status.set_final(self.behavior, step, str(final_onnx), self.last_reward, [str(final_ckpt)])
        self.status.save(self.paths.status_path)

    def close(self, training: bool, timers: Timers) -> None:
        self.writer.close()
        if training or not (self.paths.run_dir / "configuration.yaml").exists():
            self.settings.dump_yaml(self.paths.run_dir / "configuration.yaml")
        timers.save(self.paths.timers_path)


def _member(tree, index: int, batched: bool):
    return jax.tree.map(lambda x: x[index], tree) if batched else tree


def _current_step(state: TrainState) -> int:
    return int(np.max(jax.device_get(state.step)))


def _check_group_dir(settings: RunSettings) -> None:
    """``--seeds``/``--sweep`` put runs under ``<run-id>/``: an existing one needs --resume or --force too."""
    cp = settings.checkpoint_settings
    if (Path(cp.results_dir) / cp.run_id).exists() and not (cp.resume or cp.force or cp.inference):
        raise RunError(EXISTS_MESSAGE)


def run_training(settings: RunSettings, argv: list[str], *, devices: int | None = None, seeds: int = 1,
                 sweep: list[dict[str, float]] | None = None) -> int:
    """Train (or with ``--inference`` just run) the policy of the configured JAX behavior; returns the exit code.

    ``devices`` splits the robots across that many devices (None: all); ``seeds`` and ``sweep`` (points of
    ``seeds.load_sweep``) train several runs vmapped in one program. Only process 0 of a multi-process job writes.
    """
    behavior = choose_behavior(settings)
    trainer: TrainerSettings = settings.behavior(behavior)
    cp = settings.checkpoint_settings
    training = not cp.inference
    lead = jax.process_index() == 0
    if not lead:
        logger.setLevel(logging.WARNING)
    timers = Timers(argv)
    env = envs.make(behavior)
    env_params = apply_environment_parameters(env.default_params, settings.environment_parameters)
    num_envs = settings.env_settings.num_envs or default_num_envs(trainer, jax.default_backend())
    try:
        device_list = parallel.choose_devices(devices, num_envs)
    except ValueError as error:
        raise RunError(str(error)) from None
    mesh = parallel.make_mesh(device_list)
    spec = make_train_spec(trainer, env.observation_size, env.action_size, num_envs)
    seed = int(parallel.broadcast_from_first(np.int32(resolve_seed(settings))))
    members = plan_members(seed, seeds, sweep)
    try:
        runs = [member_settings(settings, behavior, member) for member in members]
    except ConfigError as error:
        raise RunError(str(error)) from None
    batched = bool(members[0].name)
    states = [init_train_state(jax.random.PRNGKey(member.seed), env, env_params, spec) for member in members]
    records: list[RunRecord] = []
    failure = None
    if lead:  # folders and checkpoints live with process 0; the others learn whether it could start
        try:
            if batched:
                _check_group_dir(settings)
            records = [RunRecord(run, behavior, spec, member.seed) for run, member in zip(runs, members)]
            states = [load_initial_state(s, run, behavior, r.paths) for s, run, r in zip(states, runs, records)]
        except RunError as error:
            failure = error
    if not bool(parallel.broadcast_from_first(np.bool_(failure is None))):
        raise failure or RunError("Process 0 could not start the run; see its log.")
    logger.info(f"Hyperparameters for behavior name {behavior}: \n{trainer}")
    logger.info(f"rlrobot {__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}) x {len(device_list)} "
                f"in {jax.process_count()} process(es); seed {seed}; {num_envs} robots x {spec.rollout_steps} steps = "
                f"{spec.steps_per_iteration} agent-steps per update" + (f"; {len(members)} runs in one program" if batched else ""))

    state = jax.tree.map(lambda *xs: jnp.stack(xs), *states) if batched else states[0]
    state = parallel.place(parallel.broadcast_from_first(state), mesh, batch_dims=int(batched))
    table = hyperparameter_table(members, vars(Hyperparams.from_spec(spec)))
    hparams = None if table is None else parallel.replicate(Hyperparams(**table), mesh)
    for record in records:
        record.open()
    # The summary across runs follows training (a resumed run appends); --inference only logs to the console.
    group_summary = (SeedsSummary(Path(cp.results_dir) / cp.run_id, members, clear_past_data=not cp.resume)
                     if batched and lead and training else None)

    with timers.time("compile"):
        t0 = time.perf_counter()
        run = make_train_iterations(env, env_params, spec, inference=not training,
                                    deterministic=trainer.network_settings.deterministic, mesh=mesh,
                                    batched=batched).lower(state, jnp.int32(1), hparams).compile()
        compile_s = time.perf_counter() - t0
    timers.gauge("compile_seconds", compile_s)
    logger.info(f"Compiled the training step in {compile_s:.2f} s.")

    def save_all(state: TrainState, step: int) -> None:
        host = parallel.gather(state)  # every process takes part; process 0 writes
        for index, record in enumerate(records):
            record.save(_member(host, index, batched), step)

    step = saved_step = first_step = _current_step(state)
    start, last_summary_time, last_summary_step = time.perf_counter(), time.perf_counter(), step
    pending = None
    exit_code = 0
    progress = Progress(trainer.max_steps, enabled=None if lead else False)
    progress.start()
    try:
        with StopRequest() as stop, timers.time("train"):
            while step < trainer.max_steps and not stop.requested:
                next_summary = next_multiple(step, trainer.summary_freq)
                next_checkpoint = next_multiple(step, trainer.effective_checkpoint_interval)
                target = min(next_summary, next_checkpoint, trainer.max_steps)
                iterations = max(1, math.ceil((target - step) / spec.steps_per_iteration))
                state, metrics = run(state, jnp.int32(iterations), hparams)
                new_step = _current_step(state)
                pending = metrics if pending is None else pending.add(metrics)
                finite = np.asarray(jax.device_get(metrics.loss_is_finite)).reshape(-1)
                if not finite.all():
                    where = f" in {', '.join(members[i].name for i in np.flatnonzero(~finite))}" if batched else ""
                    latest = records[0].checkpoints.latest_path() if records else None
                    logger.error(f"Training stopped at step {new_step}{where}: the loss or the network parameters became "
                                 f"NaN/inf. The last good checkpoint is kept ({latest or 'none was written'}).")
                    exit_code = 1
                    break
                progress.update(new_step)
                if new_step >= next_summary:
                    now = time.perf_counter()
                    label = (new_step // trainer.summary_freq) * trainer.summary_freq
                    rate = (new_step - last_summary_step) / (now - last_summary_time)
                    host = jax.device_get(pending)
                    for index, record in enumerate(records):
                        record.last_reward = write_summary(record.writer, behavior, label, _member(host, index, batched),
                                                           now - start, rate, training, console=not batched) or record.last_reward
                    if batched:
                        write_group_summary(group_summary, behavior, label, host, len(members), now - start, rate, training)
                    pending, last_summary_time, last_summary_step = None, now, new_step
                if training and new_step >= next_checkpoint and new_step < trainer.max_steps:
                    save_all(state, new_step)
                    saved_step = new_step
                step = new_step
    finally:
        progress.stop()
        if training and step > 0 and exit_code == 0:
            host = parallel.gather(state) if step != saved_step else None
            for index, record in enumerate(records):
                record.finish(None if host is None else _member(host, index, batched), step)
        timers.gauge("steps_per_second", len(members) * (step - first_step) / max(time.perf_counter() - start, 1e-9))
        for record in records:
            record.close(training, timers)
        if group_summary is not None:
            logger.info(f"Wrote the summary across runs to {group_summary.close()}.")
    return exit_code


def write_summary(writer: SummaryWriter, behavior: str, step: int, metrics, elapsed: float, sps: float,
                  training: bool, console: bool = True) -> float | None:
    scalars = summary_scalars(metrics, inference=not training)
    mean, std = reward_mean_std(metrics)
    writer.write(step, scalars, wall_time=elapsed, steps_per_second=sps)
    extra = {"Success Rate": scalars["Environment/Success Rate"]} if "Environment/Success Rate" in scalars else {}
    extra["Steps/s"] = sps
    if console:
        logger.info(console_line(behavior, step, elapsed, mean, std, training, extra))
    return mean


def write_group_summary(summary: SeedsSummary | None, behavior: str, step: int, metrics, runs: int, elapsed: float,
                        sps: float, training: bool) -> None:
    """Mean ± std across runs to ``summary/`` (if kept); one console line: the runs' mean reward, its spread across
    runs, and the agent-steps/s of all runs together."""
    scalars = [summary_scalars(jax.tree.map(lambda x: x[i], metrics), inference=not training) for i in range(runs)]
    if summary is not None:
        summary.add(step, scalars, elapsed, runs * sps)
    rewards = [s["Environment/Cumulative Reward"] for s in scalars if "Environment/Cumulative Reward" in s]
    successes = [s["Environment/Success Rate"] for s in scalars if "Environment/Success Rate" in s]
    extra = {"Success Rate": float(np.mean(successes))} if successes else {}
    extra["Steps/s"] = runs * sps
    mean, std = (float(np.mean(rewards)), float(np.std(rewards))) if rewards else (None, None)
    logger.info(console_line(f"{behavior} ({runs} runs)", step, elapsed, mean, std, training, extra))
