import json
import logging
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from rlrobot import __version__
from rlrobot.summaries import (
    EnvironmentStats,
    Progress,
    SummaryWriter,
    Timers,
    TrainingStatus,
    console_line,
    extras_line,
    hyperparameters_text,
    setup_logging,
)

SCALARS = {"Environment/Cumulative Reward": 1.5, "Environment/Episode Length": 42.0, "Environment/Success Rate": 0.75,
           "Policy/Entropy": 1.25, "Policy/Extrinsic Value Estimate": 0.5, "Policy/Learning Rate": 3e-4,
           "Policy/Epsilon": 0.2, "Policy/Beta": 5e-3, "Losses/Policy Loss": 0.125, "Losses/Value Loss": 0.0625}


def read_events(directory: Path) -> list[event_pb2.Event]:
    """TFRecord framing: u64 length, u32 length crc, payload, u32 payload crc (crcs not checked here)."""
    events = []
    for path in sorted(directory.glob("events.out*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            payload = data[offset + 12: offset + 12 + length]
            events.append(event_pb2.Event.FromString(payload))
            offset += 12 + length + 4
    return events


def values_by_tag(directory: Path) -> dict[str, list]:
    found: dict[str, list] = {}
    for event in read_events(directory):
        for value in event.summary.value:
            found.setdefault(value.tag, []).append((event.step, value))
    return found


def test_scalars_histogram_and_text_reach_tensorboard_and_metrics_jsonl(tmp_path):
    writer = SummaryWriter(tmp_path, "MobileRobot", clear_past_data=True)
    writer.write_hyperparameters("batch_size: 1024")
    writer.write(30000, SCALARS, wall_time=12.5, steps_per_second=2400.0,
                 histograms={"Environment/Cumulative Reward": np.array([1.0, 2.0, np.nan, 3.0])})
    writer.write(60000, {**SCALARS, "Environment/Cumulative Reward": float("nan")}, wall_time=25.0,
                 steps_per_second=float("inf"))
    writer.close()

    tags = values_by_tag(tmp_path / "MobileRobot")
    for tag, value in SCALARS.items():
        assert tags[tag][0][0] == 30000
        assert tags[tag][0][1].simple_value == pytest.approx(value)
    # NaN (no episode finished) writes no point, like ML-Agents with no recorded stat.
    assert [step for step, _ in tags["Environment/Cumulative Reward"]] == [30000]
    assert [step for step, _ in tags["Losses/Value Loss"]] == [30000, 60000]
    histo = tags["Environment/Cumulative Reward_hist"][0][1].histo
    assert (histo.num, histo.sum, histo.min, histo.max) == (3, 6.0, 1.0, 3.0)
    text = tags["Hyperparameters/text_summary"][0][1]
    assert text.tensor.string_val[0].decode() == "batch_size: 1024"

    lines = [json.loads(line) for line in (tmp_path / "MobileRobot" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0] == {"step": 30000, "wall_time": 12.5, "steps_per_second": 2400.0, **SCALARS}
    assert lines[1]["step"] == 60000 and lines[1]["steps_per_second"] is None
    assert lines[1]["Environment/Cumulative Reward"] is None


@pytest.fixture
def rlrobot_logger():
    """The ``rlrobot`` logger, restored afterwards (setup_logging changes handlers, level and propagation)."""
    logger = logging.getLogger("rlrobot")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_clear_past_data_deletes_old_events_but_resume_keeps_them(tmp_path, rlrobot_logger):
    directory = tmp_path / "MobileRobot"
    first = SummaryWriter(tmp_path, "MobileRobot", clear_past_data=True)
    first.write(100, {"Policy/Beta": 1.0}, wall_time=1.0, steps_per_second=1.0)
    first.close()
    old_files = sorted(p.name for p in directory.glob("events.out*"))
    assert len(old_files) == 1

    resumed = SummaryWriter(tmp_path, "MobileRobot", clear_past_data=False)
    resumed.write(200, {"Policy/Beta": 2.0}, wall_time=2.0, steps_per_second=1.0)
    resumed.close()
    assert len(list(directory.glob("events.out*"))) == 2
    assert [s for s, _ in values_by_tag(directory)["Policy/Beta"]] == [100, 200]
    assert [json.loads(x)["step"] for x in (directory / "metrics.jsonl").read_text().splitlines()] == [100, 200]

    recorder = Recorder()
    rlrobot_logger.addHandler(recorder)
    fresh = SummaryWriter(tmp_path, "MobileRobot", clear_past_data=True)
    fresh.close()
    remaining = sorted(p.name for p in directory.glob("events.out*"))
    assert len(remaining) == 1 and remaining[0] not in old_files
    assert f"Deleting TensorBoard data {old_files[0]} that was left over from a previous run." in recorder.messages
    assert (directory / "metrics.jsonl").read_text() == ""


def test_console_lines_match_ml_agents():
    assert (console_line("MobileRobot", 30000, 12.3454, 1.2341, 0.5668, True)
            == "MobileRobot. Step: 30000. Time Elapsed: 12.345 s. Mean Reward: 1.234. Std of Reward: 0.567. Training.")
    assert (console_line("MobileRobot", 30000, 12.345, None, None, False)
            == "MobileRobot. Step: 30000. Time Elapsed: 12.345 s. No episode was completed since last summary. "
               "Not Training.")
    assert console_line("B", 1, 0.0, float("nan"), float("nan"), True) == (
        "B. Step: 1. Time Elapsed: 0.000 s. No episode was completed since last summary. Training.")
    # rlrobot's own figures go on a line of their own, so ML-Agents' line stays byte-compatible.
    assert (extras_line("MobileRobot", 60000, {"Success Rate": 0.97, "Steps/s": 123456.4, "Other": float("nan")})
            == "MobileRobot. Step: 60000. Success Rate: 0.970. Steps/s: 123456.")


def test_hyperparameters_text_nests_with_tabs_and_two_spaces():
    assert hyperparameters_text({"a": 1, "b": {"c": None, "d": {"e": True}}}) == (
        "\ta:\t1\n\tb:\t\n\t  c:\tNone\n\t  d:\t\n\t    e:\tTrue")


def test_environment_stats_aggregate_as_ml_agents():
    stats = EnvironmentStats()
    stats.add({"avg": [(1.0, "average"), (3.0, "average")], "sum": [(1.0, "sum"), (1.0, "sum")],
               "last": [(5.0, "most_recent"), (7.0, "most_recent")], "hist": [(1.0, "histogram"), (2.0, "histogram")]})
    stats.add({"sum": [(2.0, "sum")]})
    scalars, histograms = stats.take()
    assert scalars == {"avg": 2.0, "sum": 4.0, "last": 7.0, "hist": 1.5}
    assert list(histograms) == ["hist"] and list(histograms["hist"]) == [1.0, 2.0]
    assert stats.take() == ({}, {})


def test_setup_logging_prints_ml_agents_prefix_on_current_stdout(capsys, rlrobot_logger):
    setup_logging(debug=False)
    setup_logging(debug=False)  # idempotent: one handler, one line
    logger = logging.getLogger("rlrobot.anything")
    logger.info("MobileRobot. Step: 1.")
    logger.debug("hidden")
    assert capsys.readouterr().out == "[INFO] MobileRobot. Step: 1.\n"
    setup_logging(debug=True)
    logger.debug("shown")
    assert capsys.readouterr().out == "[DEBUG] shown\n"


def test_progress_is_a_no_op_off_a_terminal_and_runs_on_one():
    for enabled in (False, True):
        progress = Progress(1000, enabled=enabled)
        progress.start()
        progress.update(500)
        progress.stop()
    assert Progress(10)._bar is None  # pytest's stdout is not a terminal


def test_timers_json_has_ml_agents_shape(tmp_path):
    timers = Timers(["rlrobot-learn", "configs/MobileRobot.yaml", "--run-id", "x"])
    with timers.time("compile"):
        time.sleep(0.01)
    for _ in range(2):
        with timers.time("train"):
            with timers.time("save"):
                time.sleep(0.005)
    timers.gauge("steps_per_second", 10.0)
    timers.gauge("steps_per_second", 30.0)
    path = tmp_path / "run_logs" / "timers.json"
    timers.save(path)
    data = json.loads(path.read_text())

    assert set(data) == {"name", "gauges", "metadata", "total", "count", "self", "children"}
    assert data["name"] == "root" and data["count"] == 1
    assert data["gauges"] == {"steps_per_second": {"value": 30.0, "min": 10.0, "max": 30.0, "count": 2}}
    meta = data["metadata"]
    assert meta["timer_format_version"] == "0.1.0" and meta["rlrobot_version"] == __version__
    assert meta["command_line_arguments"] == "rlrobot-learn configs/MobileRobot.yaml --run-id x"
    assert meta["python_version"] == sys.version and meta["jax_version"]
    assert int(meta["start_time_seconds"]) <= int(meta["end_time_seconds"])
    compile_, train = data["children"]["compile"], data["children"]["train"]
    assert compile_["count"] == 1 and compile_["total"] >= 0.01 and "children" not in compile_
    assert train["count"] == 2 and train["children"]["save"]["count"] == 2
    assert train["self"] == pytest.approx(train["total"] - train["children"]["save"]["total"])
    assert data["total"] >= compile_["total"] + train["total"]
    assert math.isclose(data["self"], data["total"] - compile_["total"] - train["total"], abs_tol=1e-9)


def test_training_status_layout_and_round_trip(tmp_path):
    path = tmp_path / "run_logs" / "training_status.json"
    assert TrainingStatus.load(path).checkpoints("MobileRobot") == []
    status = TrainingStatus()
    status.add_checkpoint("MobileRobot", 100, "r/MobileRobot/MobileRobot-100.onnx", 1.5,
                          ["r/MobileRobot/MobileRobot-100.ckpt"])
    status.add_checkpoint("MobileRobot", 200, "r/MobileRobot/MobileRobot-200.ckpt", float("nan"), [])
    status.set_final("MobileRobot", 200, "r/MobileRobot.onnx", None, [])
    status.save(path)
    assert not list(path.parent.glob("*.tmp"))

    data = json.loads(path.read_text())
    assert list(data) == ["MobileRobot", "metadata"]
    assert data["metadata"]["stats_format_version"] == "0.3.0" and data["metadata"]["rlrobot_version"] == __version__
    assert "jax_version" in data["metadata"] and "mlagents_version" not in data["metadata"]
    first, second = data["MobileRobot"]["checkpoints"]
    assert set(first) == {"steps", "file_path", "reward", "creation_time", "auxillary_file_paths"}
    assert (first["steps"], first["reward"]) == (100, 1.5)
    assert first["auxillary_file_paths"] == ["r/MobileRobot/MobileRobot-100.ckpt"]
    assert second["reward"] is None and second["steps"] == 200
    assert data["MobileRobot"]["final_checkpoint"]["file_path"] == "r/MobileRobot.onnx"

    loaded = TrainingStatus.load(path)
    assert loaded.checkpoints("MobileRobot") == data["MobileRobot"]["checkpoints"]
    loaded.add_checkpoint("MobileRobot", 200, "again.ckpt", 2.0, [])  # same step replaces, never duplicates
    assert [(e["steps"], e["file_path"]) for e in loaded.checkpoints("MobileRobot")] == [
        (100, "r/MobileRobot/MobileRobot-100.onnx"), (200, "again.ckpt")]


def test_unreadable_training_status_starts_empty(tmp_path):
    path = tmp_path / "training_status.json"
    path.write_text("{not json")
    assert TrainingStatus.load(path).checkpoints("MobileRobot") == []
