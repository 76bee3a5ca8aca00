"""rlrobot's logs and files against what the real ML-Agents 1.1.0 trainer wrote (``tests/data/mlagents``, recorded
from ``mlagents-learn`` on the stand-in player; see its README): console lines, the Hyperparameters text, the
TensorBoard tags in training and inference, ``configuration.yaml``'s layout, and StatsRecorder values."""
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from test_cli import event_tags

from rlrobot.cli import main
from rlrobot.config import load_run_settings
from rlrobot.summaries import console_line, hyperparameters_text

sys.path.insert(0, str(Path(__file__).parents[1] / "envs"))  # unity_ports
from unity_ports import free_base_port, no_leftover_players, standin_build  # noqa: E402,F401

RECORDED = Path(__file__).parents[1] / "data" / "mlagents"
OURS_ONLY = {"Environment/Success Rate", "Replay"}  # Replay: the GIF of each checkpoint (rlrobot.render.replay)


def recorded_tags(name: str) -> set[str]:
    return {record["tag"] for record in json.loads((RECORDED / name).read_text())}


def key_paths(tree, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    return {path for key, value in tree.items() for path in key_paths(value, f"{prefix}/{key}")} | {prefix}


def test_hyperparameters_text_is_ml_agents_dict_to_str():
    console = (RECORDED / "console.txt").read_text().splitlines()
    start = console.index("[INFO] Hyperparameters for behavior name MobileRobot: ") + 1
    end = next(i for i in range(start, len(console)) if not console[i].startswith("\t"))
    trainer = load_run_settings(str(RECORDED / "tiny.yaml")).behavior("MobileRobot")
    assert hyperparameters_text(trainer.as_dict()) == "\n".join(console[start:end])
    text = next(r["value"] for r in json.loads((RECORDED / "events.json").read_text()) if r["kind"] == "text")
    assert hyperparameters_text(trainer.as_dict()) == text


def test_console_summary_line_is_byte_compatible():
    pattern = re.compile(r"\[INFO\] (MobileRobot\. Step: (\d+)\. Time Elapsed: ([\d.]+) s\. Mean Reward: ([-\d.]+)\. "
                         r"Std of Reward: ([-\d.]+)\. (Not )?Training\.)")
    lines = (RECORDED / "console.txt").read_text() + (RECORDED / "console_inference.txt").read_text()
    matches = list(pattern.finditer(lines))
    assert len(matches) >= 3 and any(m.group(6) for m in matches)
    for match in matches:
        step, elapsed, mean, std = int(match[2]), float(match[3]), float(match[4]), float(match[5])
        assert console_line("MobileRobot", step, elapsed, mean, std, training=not match[6]) == match[1]
    assert console_line("MobileRobot", 2000, 1.5, None, None, True) == (
        "MobileRobot. Step: 2000. Time Elapsed: 1.500 s. No episode was completed since last summary. Training.")


def _tiny_run(tmp_path: Path, *args: str) -> Path:
    """The recorded config on the JAX robot (16 robots instead of a Unity player's 8 agents)."""
    assert main([str(RECORDED / "tiny.yaml"), "--run-id=r", "--num-envs=16", "--seed=1",
                 "--results-dir", str(tmp_path / "results"), *args]) == 0
    return tmp_path / "results" / "r"


def test_tags_configuration_and_inference_match_mlagents(tmp_path):
    run = _tiny_run(tmp_path)
    assert event_tags(run / "MobileRobot") - OURS_ONLY == recorded_tags("events.json")
    ours, theirs = (yaml.safe_load(p.read_text())
                    for p in (run / "configuration.yaml", RECORDED / "configuration.yaml"))
    # environment_parameters are written as given (ML-Agents expands constants into one-lesson curricula).
    ours.pop("environment_parameters"), theirs.pop("environment_parameters")
    assert key_paths(ours) == key_paths(theirs)
    # mlagents-learn reads back neither a null num_envs nor num_envs > 1 without a build: one env, a robot per area.
    assert (ours["env_settings"]["num_envs"], ours["env_settings"]["num_areas"]) == (1, 16)
    again = tmp_path / "again"
    assert main([str(run / "configuration.yaml"), "--run-id=again", "--results-dir", str(again)]) == 0
    assert yaml.safe_load((again / "again" / "configuration.yaml").read_text())["env_settings"] == ours["env_settings"]
    for event in (run / "MobileRobot").glob("events.out*"):
        event.unlink()
    assert main([str(RECORDED / "tiny.yaml"), "--run-id=r", "--num-envs=16", "--inference", "--resume",
                 "--results-dir", str(tmp_path / "results")]) == 0
    assert event_tags(run / "MobileRobot") - OURS_ONLY == recorded_tags("events_inference.json")


def test_stats_recorder_values_are_written_as_ml_agents_does(tmp_path, standin_build):
    """The stand-in reports Environment/GoalReached with SUM aggregation, once per goal: one scalar per summary."""
    assert main([str(RECORDED / "goal.yaml"), "--run-id=g", "--seed=1", "--env", str(standin_build),
                 "--base-port", str(free_base_port()), "--timeout-wait", "10",
                 "--results-dir", str(tmp_path / "results"),
                 "--env-args", "--agents", "8"]) == 0
    behavior = tmp_path / "results" / "g" / "MobileRobot"
    assert event_tags(behavior) - OURS_ONLY == recorded_tags("events_goal.json")
    lines = [json.loads(line) for line in (behavior / "metrics.jsonl").read_text().splitlines()]
    goals = [line["Environment/GoalReached"] for line in lines]
    assert all(g == int(g) and g >= 1 for g in goals)


@pytest.mark.parametrize("name", ["tiny.yaml", "goal.yaml"])
def test_recorded_configs_load(name):
    assert load_run_settings(str(RECORDED / name)).behavior("MobileRobot").reward_signals["extrinsic"].strength == 0.5
