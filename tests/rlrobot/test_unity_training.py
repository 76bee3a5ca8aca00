"""rlrobot-learn --env and rlrobot-validate --env against the stand-in player, through the real mlagents-envs client."""
import ast
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "envs"))  # unity_ports
from test_cli import TAGS, event_tags  # noqa: E402
from unity_ports import free_base_port, no_leftover_players, standin_build  # noqa: E402,F401

from rlrobot.checkpoints import read_metadata  # noqa: E402
from rlrobot.cli import main as learn_main  # noqa: E402
from rlrobot.validate import main as validate_main  # noqa: E402

CONFIG = """
behaviors:
  MobileRobot:
    trainer_type: ppo
    hyperparameters: {{batch_size: 128, buffer_size: 512, learning_rate: 0.001, num_epoch: 2}}
    network_settings: {{normalize: true, hidden_units: 16, num_layers: 2}}
    reward_signals: {{extrinsic: {{gamma: 0.99, strength: 1.0}}}}
    checkpoint_interval: 1024
    max_steps: {max_steps}
    time_horizon: 32
    summary_freq: 1024
    threaded: {threaded}
env_settings: {{seed: 3, timeout_wait: 10, env_args: [{env_args}]}}
environment_parameters: {{max_episode_steps: 48}}
"""


def config(tmp_path: Path, max_steps: int = 3072, threaded: bool = False, env_args: str = '"--agents", "16"') -> str:
    path = tmp_path / "unity.yaml"
    path.write_text(CONFIG.format(max_steps=max_steps, threaded=str(threaded).lower(), env_args=env_args))
    return str(path)


def learn(tmp_path: Path, build: Path, *args: str, env_args: tuple[str, ...] = ()) -> int:
    return learn_main([*args, "--env", str(build), "--base-port", str(free_base_port()),
                       "--results-dir", str(tmp_path / "results"), *(("--env-args", *env_args) if env_args else ())])


@pytest.mark.parametrize("threaded", [False, True])
def test_training_on_a_build_writes_the_usual_results(tmp_path, standin_build, capsys, threaded):
    assert learn(tmp_path, standin_build, config(tmp_path, threaded=threaded), "--run-id=u") == 0
    out = capsys.readouterr().out
    assert "16 agents x 32 decisions = 512 agent-steps per update" in out
    assert "[INFO] MobileRobot. Step: 1024. Time Elapsed: " in out and "Training." in out
    run = tmp_path / "results" / "u"
    behavior = run / "MobileRobot"
    assert set(TAGS) <= event_tags(behavior)  # the 48-step limit reached the player: episodes end
    status = json.loads((run / "run_logs" / "training_status.json").read_text())["MobileRobot"]
    assert [c["steps"] for c in status["checkpoints"]] == [1024, 2048, 3072]
    assert (run / "MobileRobot.onnx").is_file() and (run / "run_logs" / "Player-0.log").is_file()
    step, metadata = read_metadata(behavior / "checkpoint.ckpt")
    assert step == 3072 and metadata["unity_env"] == str(standin_build)
    lines = [json.loads(line) for line in (behavior / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < line["Environment/Episode Length"] <= 47 for line in lines)   # ML-Agents: decisions - 1
    # Each summary averages the updates that finished in its period, also when the update runs in its own thread
    # (no zeros from rollouts whose update lands later): the linear lr lies between its values at the updates' steps.
    for line in lines:
        lr = line["Policy/Learning Rate"]
        low, high = learning_rate(line["step"]), learning_rate(max(0, line["step"] - 1536))
        assert low * (1 - 1e-6) <= lr <= high * (1 + 1e-6), (line["step"], lr)   # float32 schedule


def learning_rate(step: int, initial: float = 0.001, max_steps: int = 3072) -> float:
    return (initial - 1e-10) * (1 - min(step, max_steps) / max_steps) + 1e-10


def test_resume_on_a_build_continues_from_the_checkpoint(tmp_path, standin_build, capsys):
    assert learn(tmp_path, standin_build, config(tmp_path, max_steps=1024), "--run-id=u") == 0
    assert learn(tmp_path, standin_build, config(tmp_path, max_steps=2048), "--run-id=u", "--resume",
                 env_args=("--agents", "8")) == 0
    out = capsys.readouterr().out
    assert "Step: 2048" in out and "8 agents x 64 decisions" in out
    assert read_metadata(tmp_path / "results" / "u" / "MobileRobot" / "checkpoint.ckpt")[0] == 2048


def test_player_crash_keeps_the_last_checkpoint_and_exits_1(tmp_path, standin_build, capsys):
    cfg = config(tmp_path, max_steps=8192, env_args='"--agents", "16", "--crash-after", "100"')
    assert learn(tmp_path, standin_build, cfg, "--run-id=u", "--max-lifetime-restarts", "0") == 1
    out = capsys.readouterr().out
    assert "[ERROR]" in out and "crashed" in out and "Training stopped at step 1536:" in out
    assert "Worker 0 exceeded the allowed number of restarts" in out
    behavior = tmp_path / "results" / "u" / "MobileRobot"
    assert read_metadata(behavior / "checkpoint.ckpt")[0] == 1536   # the last finished update was saved
    assert (behavior / "MobileRobot-1024.ckpt").is_file() and (behavior / "MobileRobot-1536.onnx").is_file()
    assert not (tmp_path / "results" / "u" / "MobileRobot.onnx").exists()   # not marked final


def test_missing_build_and_busy_port_are_one_line_errors(tmp_path, standin_build, capsys):
    assert learn(tmp_path, tmp_path / "nowhere" / "Robot.x86_64", config(tmp_path), "--run-id=u") == 2
    assert "Robot" in capsys.readouterr().out
    assert not (tmp_path / "results" / "u").exists()   # nothing was created for a run that never started
    assert learn(tmp_path, standin_build, config(tmp_path), "--run-id=u", "--seeds", "2") == 2
    assert "--seeds: scaling out applies to the JAX robot" in capsys.readouterr().out


def test_validate_puts_the_jax_sim_and_the_build_side_by_side(tmp_path, standin_build, capsys):
    """A policy trained in JAX plays the stand-in as it plays the JAX scene: the two columns agree within noise."""
    fast = yaml.safe_load((Path(__file__).parents[2] / "configs" / "MobileRobot-fast.yaml").read_text())
    fast["behaviors"]["MobileRobot"].update(max_steps=800_000, checkpoint_interval=800_000)
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump(fast))
    assert learn_main([str(tmp_path / "fast.yaml"), "--run-id=j", "--seed=0",
                       "--results-dir", str(tmp_path / "results")]) == 0
    table = tmp_path / "table.json"
    assert validate_main([str(tmp_path / "results" / "j"), "--episodes", "256", "--env", str(standin_build),
                          "--base-port", str(free_base_port()), "--timeout-wait", "10", "--json", str(table),
                          "--env-args", "--agents", "32"]) == 0
    out = capsys.readouterr().out
    assert "| success rate [95% CI] |" in out and "Unity: MobileRobot.x86_64" in out
    jax_sim, unity = json.loads(table.read_text())["columns"].values()
    assert jax_sim["episodes"] == unity["episodes"] == 256
    assert jax_sim["success_rate"] > 0.5   # it learned something, so agreement means something
    for key in ("success_rate", "mean_return", "mean_length"):
        (a_lo, a_hi), (b_lo, b_hi) = jax_sim[f"{key}_ci95"], unity[f"{key}_ci95"]
        assert a_lo <= b_hi and b_lo <= a_hi, (key, jax_sim[key], unity[key])   # 95% intervals overlap
    # The checkpoint itself is a policy too, and its mean action is its exported ONNX's.
    tables = {}
    for policy in ("MobileRobot.onnx", "MobileRobot/checkpoint.ckpt"):
        tables[policy] = tmp_path / f"{policy.replace('/', '_')}.json"
        assert validate_main([str(tmp_path / "results" / "j" / policy), "--episodes", "64", "--deterministic",
                              "--json", str(tables[policy])]) == 0
    onnx_run, ckpt_run = (json.loads(t.read_text())["columns"]["JAX sim"] for t in tables.values())
    for key in ("success_rate", "mean_return", "mean_length"):
        assert ckpt_run[key] == pytest.approx(onnx_run[key], rel=1e-4, abs=1e-4)


def test_validate_refuses_a_policy_whose_sizes_differ_from_the_build(tmp_path, standin_build, shared_data, capsys):
    code = validate_main([str(shared_data / "MobileRobot-22obs-497100.onnx"), "--episodes", "8", "--env",
                          str(standin_build), "--base-port", str(free_base_port()), "--timeout-wait", "10",
                          "--json", str(tmp_path / "t.json")])
    assert code == 1
    out = capsys.readouterr().out
    assert "22" in out and "19" in out and out.count("[ERROR]") == 1


def test_a_crashing_player_is_restarted_within_ml_agents_rate_limit(tmp_path, standin_build, capsys):
    """ML-Agents' defaults: one restart per 60 s. The player dies every 100 steps: the first crash is survived (the
    buffer being collected is dropped), the second, seconds later, exceeds the rate limit."""
    cfg = config(tmp_path, max_steps=20480, env_args='"--agents", "16", "--crash-after", "100"')
    assert learn(tmp_path, standin_build, cfg, "--run-id=u") == 1
    out = capsys.readouterr().out
    assert out.count("Restarting worker[0] after") == 1
    assert "Training stopped at step 3072: Worker 0 exceeded the allowed number of restarts" in out
    assert read_metadata(tmp_path / "results" / "u" / "MobileRobot" / "checkpoint.ckpt")[0] == 3072


def test_a_player_that_crashes_once_is_relaunched_and_the_run_finishes(tmp_path, standin_build, capsys):
    cfg = config(tmp_path, max_steps=2048, env_args=f'"--agents", "16", "--crash-after", "40", '
                                                     f'"--crash-once", "{tmp_path / "crashed"}"')
    assert learn(tmp_path, standin_build, cfg, "--run-id=u") == 0
    out = capsys.readouterr().out
    assert out.count("Restarting worker[0] after") == 1 and (tmp_path / "crashed").exists()
    assert read_metadata(tmp_path / "results" / "u" / "MobileRobot" / "checkpoint.ckpt")[0] == 2048
    assert (tmp_path / "results" / "u" / "MobileRobot.onnx").is_file()


def test_a_build_with_several_vector_sensors_exports_one_input_per_sensor(tmp_path, standin_build):
    """Unity loads a model only if it has ``obs_0 … obs_k`` for the behavior's k+1 sensors."""
    import onnx

    cfg = config(tmp_path, max_steps=1024, env_args='"--agents", "16", "--sensors", "1,18"')
    assert learn(tmp_path, standin_build, cfg, "--run-id=u") == 0
    model = onnx.load(str(tmp_path / "results" / "u" / "MobileRobot.onnx"))
    inputs = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert inputs == {"obs_0": ["batch", 1], "obs_1": ["batch", 18]}
    metadata = read_metadata(tmp_path / "results" / "u" / "MobileRobot" / "checkpoint.ckpt")[1]
    assert metadata["observation_sizes"] == [1, 18]


def test_engine_settings_reach_the_player(tmp_path, standin_build):
    assert learn(tmp_path, standin_build, config(tmp_path, max_steps=512), "--run-id=u", "--width", "320",
                 "--height", "240", "--quality-level", "2", "--time-scale", "5", "--target-frame-rate", "30",
                 "--capture-frame-rate", "25") == 0
    log = (tmp_path / "results" / "u" / "run_logs" / "Player-0.log").read_text()
    settings = [line.split("engine settings: ", 1)[1] for line in log.splitlines() if "engine settings: " in line]
    assert ast.literal_eval(settings[-1]) == {"resolution": (320, 240), "quality_level": 2, "time_scale": 5.0,
                                              "target_frame_rate": 30, "capture_frame_rate": 25}
