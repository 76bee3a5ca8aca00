"""The host loop of ``rlrobot-learn``: the only place with files, clocks and signals.

It builds the jitted trainer for one behavior, then wakes up only at summary, checkpoint and stop points:
writes ML-Agents' results layout (``configuration.yaml``, ``run_logs/``, ``<Behavior>/`` with TensorBoard events,
``metrics.jsonl`` and checkpoints), prints ML-Agents' console lines, and saves on Ctrl+C / SIGTERM.
"""
from __future__ import annotations

import logging
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import envs
from rlrobot import __version__
from rlrobot.checkpoints import CheckpointError, CheckpointManager, load_checkpoint
from rlrobot.config import RunSettings, TrainerSettings
from rlrobot.export import export_policy
from rlrobot.summaries import Progress, SummaryWriter, Timers, TrainingStatus, console_line
from rlrobot.train import (TrainState, default_num_envs, init_train_state, make_train_iterations, make_train_spec,
                           reward_mean_std, summary_scalars)

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


def run_training(settings: RunSettings, argv: list[str]) -> int:
    """Train (or with ``--inference`` just run) the policy of the configured JAX behavior; returns the exit code."""
    behavior = choose_behavior(settings)
    trainer: TrainerSettings = settings.behavior(behavior)
    cp = settings.checkpoint_settings
    paths = prepare_run_dir(settings, behavior)
    training = not cp.inference
    timers = Timers(argv)
    env = envs.make(behavior)
    env_params = apply_environment_parameters(env.default_params, settings.environment_parameters)
    num_envs = settings.env_settings.num_envs or default_num_envs(trainer, jax.default_backend())
    spec = make_train_spec(trainer, env.observation_size, env.action_size, num_envs)
    seed = resolve_seed(settings)
    logger.info(f"Hyperparameters for behavior name {behavior}: \n{trainer}")
    logger.info(f"rlrobot {__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}); seed {seed}; "
                f"{num_envs} robots x {spec.rollout_steps} steps = {spec.steps_per_iteration} agent-steps per update")

    state = load_initial_state(init_train_state(jax.random.PRNGKey(seed), env, env_params, spec), settings, behavior, paths)
    status = TrainingStatus.load(paths.status_path) if cp.resume else TrainingStatus()
    checkpoints = CheckpointManager(paths.behavior_dir, behavior, trainer.keep_checkpoints, status, paths.status_path)
    # --inference may look at a finished run: never delete what that run wrote.
    writer = SummaryWriter(paths.run_dir, behavior, clear_past_data=not (cp.resume or cp.inference))
    writer.write_hyperparameters(str(trainer))

    with timers.time("compile"):
        t0 = time.perf_counter()
        run = make_train_iterations(env, env_params, spec, inference=not training,
                                    deterministic=trainer.network_settings.deterministic).lower(state, jnp.int32(1)).compile()
        compile_s = time.perf_counter() - t0
    timers.gauge("compile_seconds", compile_s)
    logger.info(f"Compiled the training step in {compile_s:.2f} s.")

    def save(state: TrainState, at_step: int, reward: float | None) -> Path:
        """A checkpoint and its ``<Behavior>-<step>.onnx``, as ML-Agents writes at every checkpoint."""
        def onnx_file(stem: Path) -> list[Path]:
            path = export_policy(state.agent, spec.network, stem.with_suffix(".onnx"))
            logger.info(f"Exported {path}")
            return [path]
        return checkpoints.save(state, at_step, reward, checkpoint_metadata(behavior, spec, seed), extra_files=onnx_file)

    step = saved_step = first_step = int(state.step)
    start, last_summary_time, last_summary_step = time.perf_counter(), time.perf_counter(), step
    last_reward: float | None = None
    pending = None
    exit_code = 0
    progress = Progress(trainer.max_steps)
    progress.start()
    try:
        with StopRequest() as stop, timers.time("train"):
            while step < trainer.max_steps and not stop.requested:
                next_summary = next_multiple(step, trainer.summary_freq)
                next_checkpoint = next_multiple(step, trainer.effective_checkpoint_interval)
                target = min(next_summary, next_checkpoint, trainer.max_steps)
                iterations = max(1, math.ceil((target - step) / spec.steps_per_iteration))
                state, metrics = run(state, jnp.int32(iterations))
                new_step = int(state.step)
                pending = metrics if pending is None else pending.add(metrics)
                if not bool(metrics.loss_is_finite):
                    logger.error(f"Training stopped at step {new_step}: the loss or the network parameters became NaN/inf. "
                                 f"The last good checkpoint is kept ({checkpoints.latest_path() or 'none was written'}).")
                    exit_code = 1
                    break
                progress.update(new_step)
                if new_step >= next_summary:
                    now = time.perf_counter()
                    label = (new_step // trainer.summary_freq) * trainer.summary_freq
                    last_reward = write_summary(writer, behavior, label, pending, now - start,
                                                (new_step - last_summary_step) / (now - last_summary_time), training) or last_reward
                    pending, last_summary_time, last_summary_step = None, now, new_step
                if training and new_step >= next_checkpoint and new_step < trainer.max_steps:
                    save(state, new_step, last_reward)
                    saved_step = new_step
                step = new_step
    finally:
        progress.stop()
        if training and step > 0 and exit_code == 0:
            final_ckpt = save(state, step, last_reward) if step != saved_step else checkpoints.latest_path()
            final_onnx = paths.run_dir / f"{behavior}.onnx"
            shutil.copyfile(paths.behavior_dir / f"{behavior}-{step}.onnx", final_onnx)
            logger.info(f"Copied {paths.behavior_dir / f'{behavior}-{step}.onnx'} to {final_onnx}.")
            status.set_final(behavior, step, str(final_onnx), last_reward, [str(final_ckpt)])
            status.save(paths.status_path)
        writer.close()
        if training or not (paths.run_dir / "configuration.yaml").exists():
            settings.dump_yaml(paths.run_dir / "configuration.yaml")
        timers.gauge("steps_per_second", (step - first_step) / max(time.perf_counter() - start, 1e-9))
        timers.save(paths.timers_path)
    return exit_code


def write_summary(writer: SummaryWriter, behavior: str, step: int, metrics, elapsed: float, sps: float,
                  training: bool) -> float | None:
    scalars = summary_scalars(metrics, inference=not training)
    mean, std = reward_mean_std(metrics)
    writer.write(step, scalars, wall_time=elapsed, steps_per_second=sps)
    extra = {"Success Rate": scalars["Environment/Success Rate"]} if "Environment/Success Rate" in scalars else {}
    extra["Steps/s"] = sps
    logger.info(console_line(behavior, step, elapsed, mean, std, training, extra))
    return mean
