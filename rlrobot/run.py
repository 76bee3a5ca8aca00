"""One run's folder and lifecycle, the same for the JAX robot and a Unity build.

A :class:`Run` owns ``results/<run-id>/`` as ``mlagents-learn`` lays it out: the exists/resume/force checks, the
initial state (``--resume`` / ``--initialize-from``), checkpoints with their ONNX, summaries (TensorBoard,
``metrics.jsonl`` and the console), the final model, ``configuration.yaml`` and ``run_logs/``. :class:`Cadence` says
when a summary, a checkpoint or the end is due, and :class:`StopRequest` turns Ctrl+C / SIGTERM into a flag. The
loops on top (``runner`` and ``unity_runner``) only collect, update and hand their metrics here.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlrobot.checkpoints import (
    SUFFIX as CHECKPOINT_SUFFIX,
)
from rlrobot.checkpoints import (
    CheckpointError,
    CheckpointManager,
    atomic_copy,
    atomic_write_bytes,
    load_checkpoint,
    remove_stale_temporaries,
    truncate_metrics,
)
from rlrobot.config import RunSettings, TrainerSettings
from rlrobot.curriculum import Curriculum, EnvironmentParameter
from rlrobot.summaries import (
    EnvironmentStats,
    SummaryWriter,
    Timers,
    TrainingStatus,
    console_line,
    extras_line,
    hyperparameters_text,
)

logger = logging.getLogger("rlrobot")

EXISTS_MESSAGE = ("Previous data from this run ID was found. "
                  "Either specify a new run ID, use --resume to resume this run, "
                  "or use the --force parameter to overwrite existing data.")
MISSING_MESSAGE = "Previous data from this run ID was not found. Train a new run by removing the --resume flag."
LATEST_CHECKPOINT = "checkpoint.ckpt"


class RunError(Exception):
    """A user-facing problem with the run (folders, checkpoints, environment choice): one line, exit code 2."""


def run_dir(settings: RunSettings) -> Path:
    cp = settings.checkpoint_settings
    return Path(cp.results_dir) / cp.run_id


def check_run_dir(settings: RunSettings, behavior: str | None = None) -> None:
    """ML-Agents' rules before anything is written: an existing run needs --resume, --force or --inference, and
    --resume needs one (with ``behavior``, its checkpoint)."""
    cp, folder = settings.checkpoint_settings, run_dir(settings)
    if cp.resume:
        if not folder.exists():
            raise RunError(MISSING_MESSAGE)
        latest = folder / behavior / LATEST_CHECKPOINT if behavior else None
        if latest is not None and not latest.is_file():
            raise RunError(f"{latest}: no checkpoint to resume from.")
    elif folder.exists() and not (cp.force or cp.inference):
        raise RunError(EXISTS_MESSAGE)


def resolve_seed(settings: RunSettings) -> int:
    """The configured seed, or ML-Agents' draw for -1."""
    seed = settings.env_settings.seed
    return int(np.random.randint(0, 10000)) if seed == -1 else seed


def next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


@dataclass(frozen=True)
class Cadence:
    """When summaries and checkpoints fall due, in agent steps, as in ML-Agents (summaries labelled with the exact
    multiple of ``summary_freq`` they cross)."""

    summary_freq: int
    checkpoint_interval: int
    max_steps: int

    @classmethod
    def of(cls, trainer: TrainerSettings, inference: bool = False, first_step: int = 0) -> Cadence:
        """Training ends at ``max_steps``; ``--inference`` (which ML-Agents runs until stopped) runs ``max_steps``
        more steps from where the loaded run is."""
        end = trainer.max_steps + (first_step if inference else 0)
        return cls(trainer.summary_freq, trainer.effective_checkpoint_interval, end)

    def next_stop(self, step: int) -> int:
        """The next step at which the host has something to do."""
        return min(next_multiple(step, self.summary_freq), next_multiple(step, self.checkpoint_interval),
                   self.max_steps)

    def periods(self, step: int, steps_per_iteration: int, max_periods: int, max_iterations: int) -> list[int]:
        """The iterations of each summary period one device call can run from ``step``: at most ``max_periods``
        periods and (past the first) ``max_iterations`` iterations, ending where a checkpoint or the end falls due
        (the host saves the state there) or where a period would end without a summary."""
        counts: list[int] = []
        while len(counts) < max_periods and step < self.max_steps:
            count = max(1, math.ceil((self.next_stop(step) - step) / steps_per_iteration))
            if counts and sum(counts) + count > max_iterations:
                break
            after = step + count * steps_per_iteration
            counts.append(count)
            if after >= self.max_steps or self.checkpoint_due(step, after) or not self.summary_due(step, after):
                break
            step = after
        return counts

    def summary_due(self, before: int, after: int) -> bool:
        return after >= next_multiple(before, self.summary_freq)

    def checkpoint_due(self, before: int, after: int) -> bool:
        return after >= next_multiple(before, self.checkpoint_interval) and after < self.max_steps

    def label(self, step: int) -> int:
        return (step // self.summary_freq) * self.summary_freq


class StopRequest:
    """Turns Ctrl+C and SIGTERM into a flag the loop checks between device calls, so that neither a save nor an XLA
    compile is ever torn (an exception raised into a compile can crash the process).

    Until ``arm()`` (``armed=False``: a start-up that is safe to abort, such as launching Unity players) a signal
    raises KeyboardInterrupt instead; nothing has been saved by then.
    """

    def __init__(self, armed: bool = True) -> None:
        self.requested = False
        self.armed = armed
        self._previous: dict[int, Any] = {}

    def arm(self) -> None:
        self.armed = True

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        if not self.armed:
            raise KeyboardInterrupt
        if not self.requested:
            logger.info("Learning was interrupted. Please wait while the graph is generated.")
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Summary:
    """One summary period of one run, ready to write: ML-Agents' scalars and histograms plus rlrobot's extras."""

    scalars: dict[str, float]
    histograms: dict[str, np.ndarray]
    mean_reward: float | None
    std_reward: float | None


class SummaryClock:
    """Wall time since launch (ML-Agents' "Time Elapsed") and agent steps since the last summary (for the steps/s of
    each period); ``launched`` is a ``time.perf_counter()`` reading taken at launch."""

    def __init__(self, step: int, launched: float) -> None:
        self.start, self.loop_start = launched, time.perf_counter()
        self.last_time = self.loop_start
        self.first_step = self.last_step = step

    def lap(self, step: int, at: float | None = None) -> tuple[float, float]:
        """``(seconds since start, agent-steps/s since the last lap)`` at ``at`` (a ``perf_counter`` reading; default
        now); starts a new lap."""
        now = time.perf_counter() if at is None else at
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, step
        return now - self.start, rate

    def overall_rate(self, step: int) -> float:
        """Agent-steps/s from the first step of the loop to ``step``."""
        return (step - self.first_step) / max(time.perf_counter() - self.loop_start, 1e-9)


class Run:
    """``results/<run-id>/`` of one behavior, written by process 0 only (see the module docstring).

    ``metadata`` goes into every checkpoint so export and validation can read it back without the YAML;
    ``export`` writes a state's ONNX (``export(state, path) -> path``).
    """

    def __init__(self, settings: RunSettings, behavior: str, metadata: dict,
                 export: Callable[[Any, Path], Path]) -> None:
        self.settings, self.behavior, self.metadata, self._export = settings, behavior, metadata, export
        self.trainer = settings.behavior(behavior)
        self.training = not settings.checkpoint_settings.inference
        self.dir = run_dir(settings)
        self.behavior_dir = self.dir / behavior
        self.status_path = self.dir / "run_logs" / "training_status.json"
        self.last_reward: float | None = None
        self.resumed_step = 0
        self.write_error: OSError | None = None
        self.environment_stats = EnvironmentStats()
        self.resumed_metadata: dict = {}
        self.curriculum: Curriculum | None = None  # the lessons of a run with environment_parameters

    @property
    def latest_checkpoint(self) -> Path:
        return self.behavior_dir / LATEST_CHECKPOINT

    def initial_state(self, state: Any, resume_fields: tuple[str, ...] | None = None) -> Any:
        """``--resume`` (the whole state, or only ``resume_fields`` and the step) or ``--initialize-from`` (the
        networks, step 0); ``state`` as it is otherwise. A bad checkpoint is a RunError naming the file."""
        cp = self.settings.checkpoint_settings
        try:
            if cp.resume:
                return self._resume(state, resume_fields)
            source = self.trainer.init_path or (
                Path(cp.results_dir) / cp.initialize_from / self.behavior / LATEST_CHECKPOINT
                if cp.initialize_from else None)
            if source is None:
                return state
            if not Path(source).is_file():
                raise RunError(f"--initialize-from: no checkpoint at {source}")
            agent, _, _ = load_checkpoint(Path(source), state.agent, field="agent")
            return state.replace(agent=agent)
        except CheckpointError as error:
            raise RunError(str(error)) from error

    def _resume(self, state: Any, fields: tuple[str, ...] | None) -> Any:
        if fields is None:
            state, self.resumed_step, self.resumed_metadata = load_checkpoint(self.latest_checkpoint, state)
            return state
        loaded = {name: load_checkpoint(self.latest_checkpoint, getattr(state, name), field=name) for name in fields}
        _, self.resumed_step, self.resumed_metadata = next(iter(loaded.values()))
        return state.replace(step=np.int64(self.resumed_step), **{name: tree for name, (tree, _, _) in loaded.items()})

    def open(self) -> None:
        """Create the folders and start the status, checkpoint and summary files (after the initial state loaded,
        so a bad source writes nothing). ``--force`` removes the old run's checkpoints, as it removes its logs, so
        that a ``--resume`` can never continue the old weights under the new settings."""
        cp = self.settings.checkpoint_settings
        (self.dir / "run_logs").mkdir(parents=True, exist_ok=True)
        self.behavior_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.dir, self.dir / "run_logs", self.behavior_dir)
        if cp.force and not (cp.resume or cp.inference):
            self._forget_previous_run()
        self.status = TrainingStatus.load(self.status_path) if cp.resume else TrainingStatus()
        self.checkpoints = CheckpointManager(self.behavior_dir, self.behavior, self.trainer.keep_checkpoints,
                                             self.status, self.status_path)
        if cp.resume and self.training:  # what a killed run left beyond its last checkpoint
            self.checkpoints.adopt_orphans()
            truncate_metrics(self.behavior_dir / "metrics.jsonl", self.resumed_step)
        # --inference may look at a finished run: never delete what that run wrote.
        self.writer = SummaryWriter(self.dir, self.behavior, clear_past_data=not (cp.resume or cp.inference))
        self.writer.write_hyperparameters(hyperparameters_text(self.trainer.as_dict()))
        if self.training:
            self._write_configuration()

    def _forget_previous_run(self) -> None:
        old = [*self.behavior_dir.glob(f"*{CHECKPOINT_SUFFIX}"), *self.behavior_dir.glob(f"{self.behavior}-*.onnx"),
               *self.behavior_dir.glob(f"replays/{self.behavior}-*.gif"), self.dir / f"{self.behavior}.onnx",
               self.status_path]
        for path in old:
            if path.is_file():
                logger.warning(f"Deleting {path.relative_to(self.dir)} that was left over from a previous run.")
                path.unlink()

    def save(self, state: Any, step: int) -> Path | None:
        """A checkpoint and its ``<Behavior>-<step>.onnx``, as ML-Agents writes at every checkpoint (None if the
        results folder could not be written)."""
        def onnx_file(stem: Path) -> list[Path]:
            path = self._export(state, stem.with_suffix(".onnx"))
            logger.info(f"Exported {path}")
            return [path]
        return self._attempt(lambda: self.checkpoints.save(state, step, self.last_reward, self.metadata,
                                                           extra_files=onnx_file))

    def save_replay(self, step: int, gif: bytes, size: tuple[int, int]) -> Path | None:
        """``<Behavior>/replays/<Behavior>-<step>.gif`` and the same GIF as TensorBoard's ``Replay`` image."""
        if self.write_error is not None:
            return None
        path = self.behavior_dir / "replays" / f"{self.behavior}-{step}.gif"

        def write() -> Path:
            path.parent.mkdir(exist_ok=True)
            atomic_write_bytes(path, gif)
            self.writer.write_image("Replay", step, gif, *size)
            return path
        return self._attempt(write)

    def write_summary(self, step: int, summary: Summary, elapsed: float, rate: float, console: bool = True) -> None:
        """TensorBoard, ``metrics.jsonl`` and (``console``) ML-Agents' line, with rlrobot's extras on a line of their
        own."""
        stats, stat_histograms = self.environment_stats.take()
        scalars = {**summary.scalars, **self.lesson_numbers(), **stats}
        self._attempt(lambda: self.writer.write(step, scalars, wall_time=elapsed, steps_per_second=rate,
                                                histograms={**summary.histograms, **stat_histograms}))
        if summary.mean_reward is not None:
            self.last_reward = summary.mean_reward
        if console:
            logger.info(console_line(self.behavior, step, elapsed, summary.mean_reward, summary.std_reward,
                                     self.training))
            logger.info(extras_line(self.behavior, step, summary_extras(scalars, rate)))

    def attach_curriculum(self, parameters: dict[str, EnvironmentParameter], max_steps: int) -> Curriculum:
        """This run's lessons (``rlrobot.curriculum.Curriculum``, both back ends), in the state ``--resume`` restores
        from the checkpoint; recorded for checkpoints and ``training_status.json``, logged as lesson numbers."""
        curriculum = Curriculum(parameters, self.behavior, max_steps)
        saved = self.resumed_metadata.get("curriculum")
        if isinstance(saved, dict):
            curriculum.load_state_dict(saved, str(self.latest_checkpoint))
        self.curriculum = curriculum
        self.record_curriculum()
        return curriculum

    def record_curriculum(self) -> None:
        """Where a checkpoint (its metadata) and ``training_status.json`` (each parameter's ``lesson_num``) keep
        the lessons."""
        if self.curriculum is None:
            return
        self.metadata["curriculum"] = self.curriculum.state_dict()
        status = getattr(self, "status", None)  # set by open()
        for name, lesson in self.curriculum.lesson_numbers().items() if status is not None else ():
            status.set_lesson(name, lesson)

    def lesson_numbers(self) -> dict[str, float]:
        """ML-Agents logs ``Environment/Lesson Number/<param>`` for every environment parameter (0: no curriculum)."""
        lessons = self.curriculum.lesson_numbers() if self.curriculum is not None else {}
        return {f"Environment/Lesson Number/{name}": float(lessons.get(name, 0))
                for name in self.settings.environment_parameters or {}}

    def stopped_by_nan(self, step: int, where: str = "") -> None:
        logger.error(f"Training stopped at step {step}{where}: the loss or the network parameters became NaN/inf. "
                     f"The last good checkpoint is kept ({self._latest()}).")

    def finish(self, state: Any | None, step: int) -> None:
        """The final checkpoint (``state`` None: the one at ``step`` is saved already) and ``<Behavior>.onnx``."""
        final_ckpt = self.save(state, step) if state is not None else self.checkpoints.latest_path()
        if self.write_error is None:
            self._attempt(lambda: self._finalise(step, final_ckpt))

    def _finalise(self, step: int, final_ckpt: Path | None) -> None:
        source, final_onnx = self.behavior_dir / f"{self.behavior}-{step}.onnx", self.dir / f"{self.behavior}.onnx"
        atomic_copy(source, final_onnx)
        logger.info(f"Copied {source} to {final_onnx}.")
        self.status.set_final(self.behavior, step, str(final_onnx), self.last_reward,
                              [str(final_ckpt)] if final_ckpt else [])
        self.status.save(self.status_path)

    def close(self, timers: Timers) -> None:
        """Close the summaries; write ``configuration.yaml`` (unless ``--inference`` looked at a finished run) and
        ``run_logs/timers.json``. After a write error these are still tried, quietly: a full disk may take them."""
        quiet = self.write_error is not None
        for write in (self.writer.close, self._write_configuration if self.training else None,
                      lambda: timers.save(self.dir / "run_logs" / "timers.json")):
            if write is not None:
                self._attempt(write, quiet=quiet)

    def _write_configuration(self) -> None:
        atomic_write_bytes(self.dir / "configuration.yaml", self.settings.to_yaml().encode("utf-8"))

    @property
    def failed(self) -> bool:
        """Whether a write to the results folder failed (the run must stop)."""
        return self.write_error is not None

    def _attempt(self, write: Callable[[], Any], quiet: bool = False) -> Any:
        """Run one write to the results folder. The first failure (a full disk, a folder gone or read-only) is one
        error line; the run stops after it, and the checkpoint files written before stay as they were."""
        try:
            return write()
        except OSError as error:
            if quiet or self.write_error is not None:
                logger.debug(f"Also not written: {error}")
                return None
            self.write_error = error
            what = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
            logger.error(f"Training stopped: could not write to the results folder ({what}). "
                         f"The last good checkpoint is kept ({self._latest()}).")
            return None

    def _latest(self) -> str:
        latest = self.checkpoints.latest_path() if hasattr(self, "checkpoints") else None
        return str(latest) if latest else "none was written"


def summary_extras(scalars: dict[str, float], rate: float) -> dict[str, float]:
    extra = {"Success Rate": scalars["Environment/Success Rate"]} if "Environment/Success Rate" in scalars else {}
    extra["Steps/s"] = rate
    return extra


def with_num_envs(settings: RunSettings, num_envs: int) -> RunSettings:
    """The settings as run on a Unity build, with the resolved number of players (mlagents-learn cannot read back a
    null ``num_envs``)."""
    return dataclasses.replace(settings, env_settings=dataclasses.replace(settings.env_settings, num_envs=num_envs))


def with_robots(settings: RunSettings, robots: int) -> RunSettings:
    """The settings as run on the JAX robot, written so that both rlrobot and mlagents-learn read them back: one
    environment (ML-Agents refuses ``num_envs`` > 1 without a build) with one training area per robot."""
    env_settings = dataclasses.replace(settings.env_settings, num_envs=1, num_areas=robots)
    return dataclasses.replace(settings, env_settings=env_settings)
