"""What a run reports, laid out as ``mlagents-learn`` lays it out, so ML-Agents users' tools keep working.

TensorBoard events and ``metrics.jsonl`` in ``results/<run-id>/<Behavior>/``, the ``[INFO]`` console lines,
``run_logs/timers.json`` and ``run_logs/training_status.json``. Host-side only: files and clocks, no JAX import
(the command line loads this module before it decides whether to load JAX). tensorboardX is loaded when a run opens
its summaries and rich only for a progress bar on a terminal: neither is on the way to an error message.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import numpy as np

from rlrobot import __version__

logger = logging.getLogger(__name__)

LOG_FORMAT = "[%(levelname)s] %(message)s"
TIMER_FORMAT_VERSION = "0.1.0"
STATS_FORMAT_VERSION = "0.3.0"

_event_file_ids = itertools.count()


def jax_version() -> str:
    """JAX's version without importing JAX (the CLI imports this module before the arguments are checked)."""
    try:
        return package_metadata.version("jax")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def _finite_or_none(value: Any) -> float | None:
    """JSON has no NaN/inf: an undefined statistic (e.g. no episode finished) becomes null."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _write_json_atomically(path: Path, data: dict) -> None:
    """A crash mid-write must not leave a half-written status file behind (resume reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- logging and console --------------------------------------------------------------------------------------


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at emit time, so lines go above rich's live bar (and into pytest's
    capture)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def setup_logging(debug: bool) -> None:
    """ML-Agents prints ``[INFO] message`` lines on stdout; ``--debug`` lowers the level to DEBUG."""
    root = logging.getLogger("rlrobot")
    for handler in [h for h in root.handlers if isinstance(h, _StdoutHandler)]:
        root.removeHandler(handler)
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False


def _format_extra(key: str, value: float) -> str:
    """Rates per second read best as whole numbers; everything else gets ML-Agents' three decimals."""
    return f"{key}: {int(round(value))}" if key.endswith("/s") else f"{key}: {value:.3f}"


def console_line(behavior: str, step: int, elapsed_s: float, mean_reward: float | None, std_reward: float | None,
                 training: bool) -> str:
    """ML-Agents' ``ConsoleWriter`` summary line, byte for byte (without the ``[INFO] `` prefix the formatter adds)."""
    pieces = [behavior, f"Step: {step}", f"Time Elapsed: {elapsed_s:0.3f} s"]
    if mean_reward is None or std_reward is None or not math.isfinite(mean_reward):
        pieces.append("No episode was completed since last summary")
    else:
        pieces += [f"Mean Reward: {mean_reward:0.3f}", f"Std of Reward: {std_reward:0.3f}"]
    pieces.append("Training" if training else "Not Training")
    return ". ".join(pieces) + "."


def extras_line(behavior: str, step: int, extra: dict[str, float]) -> str:
    """rlrobot's own figures for a summary, on a line of their own so that ML-Agents' line stays parseable."""
    pieces = [_format_extra(key, float(value)) for key, value in extra.items() if math.isfinite(float(value))]
    return ". ".join([behavior, f"Step: {step}", *pieces]) + "."


def hyperparameters_text(settings: dict[str, Any], depth: int = 0) -> str:
    """ML-Agents' ``_dict_to_str``: one ``key:<tab>value`` per line, nested levels indented by two spaces.

    Used for the console's "Hyperparameters for behavior name" block and the TensorBoard text summary, as in ML-Agents.
    """
    if not isinstance(settings, dict):
        return str(settings)
    lines = [f"\t{'  ' * depth}{key}:\t{hyperparameters_text(value, depth + 1)}" for key, value in settings.items()]
    return ("\n" if depth > 0 else "") + "\n".join(lines)


# --- TensorBoard + metrics.jsonl ------------------------------------------------------------------------------


class SummaryWriter:
    """TensorBoard events (ML-Agents' tags) plus one JSON line per summary for scripts, for one behavior of one run.

    Summaries are hand-built protos (tensorboardX's ``SummaryWriter.add_scalar`` would rename ``Environment/Cumulative
    Reward`` to ``Environment/Cumulative_Reward``, while torch, as ML-Agents uses it, keeps spaces), written by
    tensorboardX's synchronous ``EventsWriter`` in the caller's thread: a write error (a full disk) reaches the run as
    an ``OSError``, where a background writer thread would print a traceback and then block.
    """

    def __init__(self, run_dir: Path, behavior: str, clear_past_data: bool) -> None:
        self.directory = Path(run_dir) / behavior
        self.directory.mkdir(parents=True, exist_ok=True)
        if clear_past_data:
            self._delete_event_files()
        # pid + counter in the name, like torch's writer: a second writer in the same second must not truncate the
        # first.
        suffix = f".{os.getpid()}.{next(_event_file_ids)}"
        from tensorboardX.event_file_writer import EventsWriter

        self._tb = EventsWriter(str(self.directory / "events"), filename_suffix=suffix)
        self._metrics = open(self.directory / "metrics.jsonl", "w" if clear_past_data else "a", encoding="utf-8")

    def _delete_event_files(self) -> None:
        """A fresh (``--force``) run must not show the old run's curves in TensorBoard; ML-Agents does the same."""
        for path in sorted(self.directory.glob("events.out*")):
            logger.warning(f"Deleting TensorBoard data {path.name} that was left over from a previous run.")
            try:
                path.unlink()
            except OSError:
                logger.error(f"{path} was left over from a previous run and not deleted.")

    def write(self, step: int, scalars: dict[str, float], wall_time: float, steps_per_second: float,
              histograms: dict[str, np.ndarray] | None = None) -> None:
        """One summary point. Undefined (NaN) values are left out of TensorBoard, as ML-Agents writes no point then.

        ``histograms`` maps a tag to the values it summarises; ML-Agents writes them as ``<tag>_hist``.
        """
        from tensorboardX import summary as tb_summary
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=number) for tag, number in
                  ((tag, _finite_or_none(value)) for tag, value in scalars.items()) if number is not None]
        for tag, samples in (histograms or {}).items():
            samples = np.asarray(samples, dtype=np.float64).ravel()
            samples = samples[np.isfinite(samples)]
            if samples.size:
                values.append(Summary.Value(tag=f"{tag}_hist", histo=tb_summary.make_histogram(samples, bins="auto")))
        self._add(Summary(value=values), step)
        line = {"step": int(step), "wall_time": _finite_or_none(wall_time),
                "steps_per_second": _finite_or_none(steps_per_second)}
        line.update({tag: _finite_or_none(value) for tag, value in scalars.items()})
        self._metrics.write(json.dumps(line, allow_nan=False) + "\n")
        self.flush()

    def write_hyperparameters(self, text: str) -> None:
        """The ``Hyperparameters`` text summary (tensorboardX stores it as ``Hyperparameters/text_summary``, like
        torch)."""
        from tensorboardX import summary as tb_summary

        self._add(tb_summary.text("Hyperparameters", text), 0)
        self.flush()

    def write_image(self, tag: str, step: int, encoded: bytes, width: int, height: int) -> None:
        """An image summary of already encoded bytes (a GIF plays in TensorBoard's Images tab)."""
        from tensorboardX.proto.summary_pb2 import Summary

        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded)
        self._add(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self.flush()

    def _add(self, summary: Any, step: int) -> None:
        from tensorboardX.proto import event_pb2

        self._tb.write_event(event_pb2.Event(summary=summary, step=int(step), wall_time=time.time()))

    def flush(self) -> None:
        self._tb.flush()
        self._metrics.flush()

    def close(self) -> None:
        self._tb.close()
        self._metrics.close()


class EnvironmentStats:
    """What a Unity build reports through ``StatsRecorder``, aggregated for each summary as ML-Agents does.

    ``average`` and ``histogram`` stats are written as their mean (a histogram also as ``<key>_hist``), ``sum`` as
    their sum, ``most_recent`` as the last value received.
    """

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = {}
        self._methods: dict[str, str] = {}

    def add(self, reported: dict[str, list[tuple[float, str]]]) -> None:
        """``{key: [(value, aggregation)]}`` as ``UnityBatchEnv.pop_stats`` returns it."""
        for key, entries in reported.items():
            for value, method in entries:
                values = self._values.setdefault(key, [])
                if method == "most_recent":
                    values.clear()
                values.append(float(value))
                self._methods[key] = method

    def take(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """The period's scalars and histograms; starts a new period."""
        scalars = {key: float(np.sum(v) if self._methods[key] == "sum" else np.mean(v))
                   for key, v in self._values.items() if v}
        histograms = {key: np.asarray(v) for key, v in self._values.items() if v and self._methods[key] == "histogram"}
        self._values.clear()
        return scalars, histograms


# --- progress bar ---------------------------------------------------------------------------------------------


def _rich_progress(max_steps: int) -> tuple[Any, Any]:
    """Rich's live bar and its task (rich loads only here: a bar is shown on a terminal only)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class StepsPerSecond(ProgressColumn):
        """Rich's speed column is for bytes; ours counts agent steps."""

        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} steps/s" if task.speed else "-- steps/s", style="progress.data.speed")

    bar = RichProgress(TextColumn("Training"), BarColumn(), MofNCompleteColumn(), StepsPerSecond(),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True)
    return bar, bar.add_task("train", total=max_steps)


class Progress:
    """A live steps bar on a terminal; a silent stand-in when stdout is a file or pipe (logs, CI)."""

    def __init__(self, max_steps: int, enabled: bool | None = None) -> None:
        enabled = sys.stdout.isatty() if enabled is None else enabled
        self._bar, self._task = _rich_progress(max_steps) if enabled else (None, None)

    def start(self) -> None:
        if self._bar is not None:
            self._bar.start()

    def update(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --- timers.json ----------------------------------------------------------------------------------------------


@dataclass
class _TimerNode:
    total: float = 0.0
    count: int = 0
    children: dict[str, _TimerNode] = field(default_factory=dict)

    def tree(self) -> dict[str, Any]:
        """ML-Agents' node layout: ``self`` is the time not spent in children; ``children`` only when there are any."""
        children = {name: child.tree() for name, child in self.children.items()}
        node: dict[str, Any] = {"total": self.total, "count": self.count,
                                "self": max(0.0, self.total - sum(c["total"] for c in children.values()))}
        if children:
            node["children"] = children
        return node


@dataclass
class _Gauge:
    value: float
    min: float
    max: float
    count: int = 1

    def update(self, value: float) -> None:
        self.value, self.min, self.max, self.count = value, min(self.min, value), max(self.max, value), self.count + 1


class Timers:
    """Where the wall time went (compile vs train), in ML-Agents' ``timers.json`` shape so its readers still work."""

    def __init__(self, argv: list[str] | None = None) -> None:
        self.started = time.perf_counter()
        self._root = _TimerNode()
        self._stack = [self._root]
        self._gauges: dict[str, _Gauge] = {}
        self._metadata = {
            "timer_format_version": TIMER_FORMAT_VERSION,
            "start_time_seconds": str(int(time.time())),
            "python_version": sys.version,
            "command_line_arguments": " ".join(sys.argv if argv is None else argv),
            "rlrobot_version": __version__,
            "jax_version": jax_version(),
        }

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        """Time a block; blocks opened inside it become its children."""
        node = self._stack[-1].children.setdefault(name, _TimerNode())
        self._stack.append(node)
        start = time.perf_counter()
        try:
            yield
        finally:
            node.total += time.perf_counter() - start
            node.count += 1
            self._stack.pop()

    def gauge(self, name: str, value: float) -> None:
        """Record a measured quantity; repeated values keep last/min/max/count."""
        value = float(value)
        if name in self._gauges:
            self._gauges[name].update(value)
        else:
            self._gauges[name] = _Gauge(value, value, value)

    def as_dict(self) -> dict[str, Any]:
        """The root counts once and lasts from construction until now."""
        self._root.total, self._root.count = time.perf_counter() - self.started, 1
        gauges = {name: vars(g).copy() for name, g in self._gauges.items()}
        meta = {**self._metadata, "end_time_seconds": str(int(time.time()))}
        return {"name": "root", "gauges": gauges, "metadata": meta, **self._root.tree()}

    def save(self, path: Path) -> None:
        _write_json_atomically(Path(path), self.as_dict())


# --- training_status.json -------------------------------------------------------------------------------------


def _checkpoint_entry(steps: int, file_path: str, reward: float | None, aux_paths: list[str]) -> dict[str, Any]:
    """ML-Agents' ``ModelCheckpoint`` fields, misspelt ``auxillary_file_paths`` included."""
    return {"steps": int(steps), "file_path": str(file_path), "reward": _finite_or_none(reward),
            "creation_time": time.time(), "auxillary_file_paths": [str(p) for p in aux_paths]}


class TrainingStatus:
    """``run_logs/training_status.json``: the checkpoints each behavior has on disk, read back on ``--resume``."""

    def __init__(self, behaviors: dict[str, dict[str, Any]] | None = None) -> None:
        self._behaviors = behaviors or {}

    @classmethod
    def load(cls, path: Path) -> TrainingStatus:
        """A missing or unreadable file means no checkpoints are known (the ``.ckpt`` files are the resume source)."""
        path = Path(path)
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            logger.warning(f"{path} could not be read ({error}); starting with an empty checkpoint list.")
            return cls()
        data.pop("metadata", None)
        return cls({name: entry for name, entry in data.items() if isinstance(entry, dict)})

    def _behavior(self, behavior: str) -> dict[str, Any]:
        return self._behaviors.setdefault(behavior, {"checkpoints": []})

    def add_checkpoint(self, behavior: str, steps: int, file_path: str, reward: float | None,
                       aux_paths: list[str]) -> None:
        """Append; a second save at the same step (a stop right after a checkpoint) replaces the first."""
        entries = self._behavior(behavior).setdefault("checkpoints", [])
        entries[:] = [e for e in entries if e["steps"] != steps]
        entries.append(_checkpoint_entry(steps, file_path, reward, aux_paths))

    def set_final(self, behavior: str, steps: int, file_path: str, reward: float | None, aux_paths: list[str]) -> None:
        self._behavior(behavior)["final_checkpoint"] = _checkpoint_entry(steps, file_path, reward, aux_paths)

    def set_lesson(self, parameter: str, lesson: int) -> None:
        """An environment parameter's lesson, kept as ML-Agents does: ``{<parameter>: {"lesson_num": n}}``."""
        entry = self._behaviors.setdefault(parameter, {})
        entry["lesson_num"] = int(lesson)

    def checkpoints(self, behavior: str) -> list[dict[str, Any]]:
        return list(self._behavior(behavior).get("checkpoints", []))

    def trim(self, behavior: str, keep: int) -> list[dict[str, Any]]:
        """Forget all but the newest ``keep`` checkpoints (``keep <= 0`` keeps all, as ML-Agents); returns the
        dropped."""
        entries = self._behavior(behavior).setdefault("checkpoints", [])
        excess = max(0, len(entries) - keep) if keep > 0 else 0
        dropped = entries[:excess]
        del entries[:excess]
        return dropped

    def as_dict(self) -> dict[str, Any]:
        meta = {"stats_format_version": STATS_FORMAT_VERSION, "rlrobot_version": __version__,
                "jax_version": jax_version()}
        return {**self._behaviors, "metadata": meta}

    def save(self, path: Path) -> None:
        _write_json_atomically(Path(path), self.as_dict())
