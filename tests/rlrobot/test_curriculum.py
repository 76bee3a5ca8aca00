"""ML-Agents curricula: the schema, the completion criteria, and lessons in a run (TensorBoard, checkpoints, resume)."""
import json
import logging

import numpy as np
from test_cli import event_tags

from rlrobot.checkpoints import load_checkpoint, read_metadata
from rlrobot.cli import main
from rlrobot.config import load_run_settings
from rlrobot.curriculum import (
    CompletionCriteria,
    Curriculum,
    Sampler,
    parse_environment_parameters,
)


def criteria(**kwargs) -> CompletionCriteria:
    return CompletionCriteria(behavior="MobileRobot", **kwargs)


def test_reward_measure_waits_for_min_lesson_length_and_smooths():
    rule = criteria(measure="reward", threshold=8.0, min_lesson_length=3)
    assert rule.need_increment(0.0, [10.0, 10.0], 0.0) == (False, 0.0)  # too few episodes: smoothing untouched
    done, smoothed = rule.need_increment(0.0, [10.0, 10.0, 10.0], 0.0)
    assert (done, smoothed) == (False, 7.5)  # 0.25 * 0 + 0.75 * 10
    assert rule.need_increment(0.0, [10.0] * 3, smoothed) == (True, 0.25 * 7.5 + 7.5)
    assert criteria(threshold=8.0, signal_smoothing=False).need_increment(0.0, [9.0], 0.0) == (True, 0.0)
    assert criteria(threshold=9.0, signal_smoothing=False).need_increment(0.0, [9.0], 0.0) == (False, 0.0)  # >, not >=


def test_progress_measure_is_steps_over_max_steps():
    rule = criteria(measure="progress", threshold=0.5, min_lesson_length=2)
    assert not rule.need_increment(0.9, [1.0], 0.0)[0]  # min_lesson_length counts episodes for progress too
    assert not rule.need_increment(0.5, [1.0, 1.0], 0.0)[0]
    assert rule.need_increment(0.51, [1.0, 1.0], 0.0)[0]


CURRICULUM = {
    "constant": 3.0,
    "noise": {"sampler_type": "gaussian", "sampler_parameters": {"st_dev": 0.1}},
    "a": {"curriculum": [
        {"name": "L0", "value": 0.0, "completion_criteria": {"behavior": "MobileRobot", "measure": "progress",
                                                              "threshold": 0.5}},
        {"name": "L1", "value": {"sampler_type": "uniform", "sampler_parameters": {"max_value": 2.0}},
         "completion_criteria": {"behavior": "MobileRobot", "threshold": 5.0, "min_lesson_length": 4,
                                 "require_reset": True}},
        {"name": "L2", "value": {"sampler_type": "multirangeuniform",
                                 "sampler_parameters": {"intervals": [[0, 1], [2, 3]]}}}]},
    "b": {"curriculum": [
        {"name": "B0", "value": 1.0, "completion_criteria": {"behavior": "MobileRobot", "threshold": 5.0,
                                                              "signal_smoothing": False}},
        {"name": "B1", "value": 2.0}]},
}


def test_schema_fills_ml_agents_defaults():
    parsed = parse_environment_parameters(CURRICULUM)
    assert parsed["constant"].constant and parsed["constant"].lessons[0].value == 3.0
    assert parsed["noise"].lessons[0].value == Sampler("gaussian", (1.0, 0.1))  # mean defaults to 1.0
    lessons = parsed["a"].lessons
    assert [lesson.name for lesson in lessons] == ["L0", "L1", "L2"]
    assert lessons[1].value == Sampler("uniform", (0.0, 2.0)) and lessons[2].completion_criteria is None
    assert lessons[2].value == Sampler("multirangeuniform", ((0.0, 1.0), (2.0, 3.0)))
    assert lessons[0].completion_criteria == criteria(measure="progress", threshold=0.5)
    assert str(lessons[2].value) == "MultiRangeUniform sampler: intervals=[[0.0, 1.0], [2.0, 3.0]]"


def test_lessons_move_as_ml_agents_moves_them(caplog):
    curriculum = Curriculum(parse_environment_parameters(CURRICULUM), "MobileRobot", max_steps=1000)
    assert curriculum.names == ["noise", "a", "b"] and curriculum.rewards.maxlen == 4  # the longest min_lesson_length
    curriculum.add_returns([6.0, 6.0])
    with caplog.at_level(logging.INFO, logger="rlrobot"):
        assert curriculum.update(step=400) == (["b"], False)  # b's mean 6 > 5; a's progress 0.4 is not > 0.5
    assert "Parameter 'b' is in lesson 'B1' and has value 'Float: value=2.0'." in caplog.text
    assert len(curriculum.rewards) == 0  # cleared after a lesson changed
    assert curriculum.update(step=600) == (["a"], False)  # progress needs no episodes (min_lesson_length 0)
    curriculum.add_returns([9.0] * 6)  # the buffer keeps the last 4
    assert list(curriculum.rewards) == [9.0] * 4
    assert curriculum.update(step=700) == (["a"], True)  # smoothed 0.75 * 9 = 6.75 > 5; asks for a reset
    assert curriculum.vector() == [0, 2, 1] and curriculum.lesson_numbers() == {"constant": 0, "noise": 0, "a": 2,
                                                                               "b": 1}
    assert curriculum.update(step=1000) == ([], False)  # last lessons: nothing more


def test_state_round_trips_and_a_shorter_curriculum_keeps_its_last_lesson(caplog):
    parameters = parse_environment_parameters(CURRICULUM)
    first = Curriculum(parameters, "MobileRobot", 1000)
    first.lessons["a"], first.smoothing["a"] = 2, 6.75
    first.add_returns([1.0, 2.0])
    second = Curriculum(parameters, "MobileRobot", 1000)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())), "ckpt")
    assert second.state_dict() == first.state_dict()
    third = Curriculum(parameters, "MobileRobot", 1000)
    with caplog.at_level(logging.WARNING, logger="rlrobot"):
        third.load_state_dict({"lessons": {"a": 7, "b": "x"}}, "ckpt")
    assert third.lessons == {"constant": 0, "noise": 0, "a": 2, "b": 0} and "continuing in the last" in caplog.text


TINY = """
behaviors:
  MobileRobot:
    trainer_type: ppo
    hyperparameters: {{batch_size: 128, buffer_size: 256, num_epoch: 1}}
    network_settings: {{hidden_units: 8, num_layers: 1}}
    checkpoint_interval: 512
    max_steps: {max_steps}
    time_horizon: 16
    summary_freq: 256
env_settings: {{num_envs: 16, seed: 3}}
environment_parameters:
  max_episode_steps: 12
  goal_radius: {{sampler_type: uniform, sampler_parameters: {{min_value: 0.4, max_value: 0.6}}}}
  spawn_randomness:
    curriculum:
      - {{name: fixed, value: 0.0, completion_criteria: {{measure: progress, behavior: MobileRobot, threshold: 0.3}}}}
      - name: some
        value: {{sampler_type: uniform, sampler_parameters: {{min_value: 0.2, max_value: 0.8}}}}
        completion_criteria: {{behavior: MobileRobot, threshold: -1.0e9, min_lesson_length: 2, require_reset: true}}
      - {{name: all, value: 1.0}}
"""


def metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lessons_in_a_run_are_logged_saved_and_resumed(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(TINY.format(max_steps=1024))
    args = [str(config), "--run-id=cur", "--results-dir", str(tmp_path / "results")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Parameter 'spawn_randomness' is in lesson 'fixed' and has value 'Float: value=0.0'." in out
    assert "is in lesson 'some' and has value 'Uniform sampler: min=0.2, max=0.8'." in out
    assert "Resetting the environment: a completed lesson asks for require_reset." in out
    run = tmp_path / "results" / "cur"
    tag = "Environment/Lesson Number/spawn_randomness"
    lines = metrics(run / "MobileRobot" / "metrics.jsonl")
    # checked after each summary (written with the lesson it was in): progress 0.5 > 0.3 at step 512, then one
    # period with at least two finished episodes
    assert [(line["step"], line[tag]) for line in lines] == [(256, 0), (512, 0), (768, 1), (1024, 2)]
    assert all(line["Environment/Lesson Number/goal_radius"] == 0 for line in lines)
    assert {tag, "Environment/Lesson Number/max_episode_steps"} <= event_tags(run / "MobileRobot")
    status = json.loads((run / "run_logs" / "training_status.json").read_text())
    assert status["spawn_randomness"] == {"lesson_num": 2} and status["goal_radius"] == {"lesson_num": 0}
    _, metadata = read_metadata(run / "MobileRobot" / "checkpoint.ckpt")
    assert metadata["curriculum"]["lessons"]["spawn_randomness"] == 2
    from rlrobot.trainer import build_jax_trainer

    target = build_jax_trainer(load_run_settings(str(config))).init_state(3).env_state
    stored, _, _ = load_checkpoint(run / "MobileRobot" / "checkpoint.ckpt", target, field="env_state")
    assert np.all(np.asarray(stored.lesson) == [0, 2])  # goal_radius, spawn_randomness, on every robot

    config.write_text(TINY.format(max_steps=1536))
    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "Parameter 'spawn_randomness' is in lesson 'all' and has value 'Float: value=1.0'." in out
    assert [(line["step"], line[tag]) for line in metrics(run / "MobileRobot" / "metrics.jsonl")][-2:] == [
        (1280, 2), (1536, 2)]


def test_validate_plays_under_a_files_environment_parameters(tmp_path, capsys):
    from pathlib import Path

    from rlrobot.validate import main as validate

    policy = Path(__file__).parents[1] / "data" / "unity" / "MobileRobot-19obs.onnx"
    out = ["--json", str(tmp_path / "v.json"), "--episodes", "16", "--max-steps", "60"]
    assert validate([str(policy), *out, "--env-parameters", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().out.strip().endswith(f"--env-parameters {tmp_path / 'none.yaml'}: no such file.")
    bad = tmp_path / "bad.yaml"
    bad.write_text("environment_parameters: {random_spawn: {sampler_type: uniform, sampler_parameters: {}}}\n")
    assert validate([str(policy), *out, "--env-parameters", str(bad)]) == 2
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
        "[ERROR] environment_parameters.random_spawn: a switch fixed when the program is compiled")
    config = tmp_path / "c.yaml"
    config.write_text(TINY.format(max_steps=1024))
    assert validate([str(policy), *out, "--env-parameters", str(config)]) == 0
    assert "spawn_randomness (curricula at their last lesson)" in capsys.readouterr().out
    result = json.loads((tmp_path / "v.json").read_text())["columns"]["JAX sim"]
    assert result["episodes"] + result["unfinished"] == 16
