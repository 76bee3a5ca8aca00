"""--seeds and --sweep: several runs in one compiled program, each with the usual results layout."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scale_helpers import assert_checkpoints_close, checkpoint_leaves, tiny_config

from rlrobot.cli import main
from rlrobot.config import ConfigError, load_run_settings
from rlrobot.seeds import SWEEPABLE, load_sweep, member_settings, plan_members
from rlrobot.train import Hyperparams


def test_sweep_file_is_the_product_of_its_lists(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("learning_rate: [3e-4, 1.0e-3]\nbeta: 1.0e-3\ngamma: [0.9, 0.99]\n")
    assert load_sweep(str(sweep)) == [{"learning_rate": 3e-4, "beta": 1e-3, "gamma": 0.9},
                                      {"learning_rate": 3e-4, "beta": 1e-3, "gamma": 0.99},
                                      {"learning_rate": 1e-3, "beta": 1e-3, "gamma": 0.9},
                                      {"learning_rate": 1e-3, "beta": 1e-3, "gamma": 0.99}]
    assert SWEEPABLE == tuple(Hyperparams.__dataclass_fields__)
    for text, words in [("batch_size: [64]", "batch_size cannot be swept"), ("beta: [low]", "beta ('low')"),
                        ("[1, 2]", "expected a mapping"), ("beta: []", "beta has no values")]:
        sweep.write_text(text)
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
            load_sweep(str(sweep))


def test_members_are_named_seeded_and_configured_alone(tmp_path):
    assert [m.name for m in plan_members(7, 1, None)] == [""]
    members = plan_members(7, 2, [{"learning_rate": 0.003}, {"learning_rate": 0.01, "gamma": 0.9}])
    assert [(m.name, m.seed, m.group) for m in members] == [
        ("sweep-0/seed-0", 7, "sweep-0"), ("sweep-0/seed-1", 8, "sweep-0"),
        ("sweep-1/seed-0", 7, "sweep-1"), ("sweep-1/seed-1", 8, "sweep-1")]
    settings = load_run_settings(tiny_config(tmp_path, 1024), {"run_id": "grid"})
    alone = member_settings(settings, "MobileRobot", members[3])
    trainer = alone.behavior("MobileRobot")
    assert (trainer.hyperparameters.learning_rate, trainer.gamma, alone.env_settings.seed) == (0.01, 0.9, 8)
    assert alone.checkpoint_settings.run_id == "grid/sweep-1/seed-1"
    bad = plan_members(7, 1, [{"lambd": 2.0}])[0]
    with pytest.raises(ConfigError, match=r"--sweep sweep-0: lambd \(2.0\) must be in \[0, 1\]"):
        member_settings(settings, "MobileRobot", bad)


def test_seeds_train_in_one_program_and_seed_0_is_the_plain_run(tmp_path, capsys):
    config, results = tiny_config(tmp_path, 2048), tmp_path / "results"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("learning_rate: [0.001, 0.003]\n")
    assert main([config, "--run-id=plain", "--results-dir", str(results)]) == 0
    assert main([config, "--run-id=seeds", "--seeds", "3", "--results-dir", str(results)]) == 0
    assert main([config, "--run-id=sweep", "--sweep", str(sweep), "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "3 runs in one program" in out and "[INFO] MobileRobot (3 runs). Step: 2048." in out

    plain = results / "plain" / "MobileRobot" / "checkpoint.ckpt"
    members = [results / "seeds" / f"seed-{k}" for k in range(3)]
    for k, run in enumerate(members):
        assert (run / "MobileRobot.onnx").is_file() and (run / "run_logs" / "training_status.json").is_file()
        assert yaml.safe_load((run / "configuration.yaml").read_text())["env_settings"]["seed"] == 3 + k
        steps = [json.loads(line)["step"] for line in (run / "MobileRobot" / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1024, 2048]
    assert_checkpoints_close(plain, members[0] / "MobileRobot" / "checkpoint.ckpt")
    kernels = [checkpoint_leaves(run / "MobileRobot" / "checkpoint.ckpt")["agent/params/actor/params/mu/kernel"]
               for run in members]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])

    summary = json.loads((results / "seeds" / "seeds_summary.json").read_text())["groups"]["seeds"]
    assert summary["seeds"] == [3, 4, 5] and summary["steps"] == [1024, 2048]
    rewards = [[json.loads(line)["Environment/Cumulative Reward"] for line in
                (run / "MobileRobot" / "metrics.jsonl").read_text().splitlines()] for run in members]
    np.testing.assert_allclose(summary["mean"]["Environment/Cumulative Reward"], np.mean(rewards, axis=0), rtol=1e-6)
    np.testing.assert_allclose(summary["std"]["Environment/Cumulative Reward"], np.std(rewards, axis=0), rtol=1e-6)
    assert list((results / "seeds" / "summary" / "seeds").glob("events.out*"))

    assert_checkpoints_close(plain, results / "sweep" / "sweep-0" / "MobileRobot" / "checkpoint.ckpt")
    swept = yaml.safe_load((results / "sweep" / "sweep-1" / "configuration.yaml").read_text())
    assert swept["behaviors"]["MobileRobot"]["hyperparameters"]["learning_rate"] == 0.003
    groups = json.loads((results / "sweep" / "seeds_summary.json").read_text())["groups"]
    assert groups["sweep-1"]["hyperparameters"] == {"learning_rate": 0.003}


def test_bad_seeds_and_sweep_values_exit_2(tmp_path, capsys):
    config = tiny_config(tmp_path, 1024)
    assert main([config, "--seeds", "0"]) == 2
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("time_horizon: [16, 32]\n")
    assert main([config, "--sweep", str(sweep)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["[ERROR] --seeds 0: must be a positive integer.",
                     f"[ERROR] --sweep {sweep}: time_horizon cannot be swept (only learning_rate, beta, epsilon, "
                     f"lambd, gamma)."]


def sweep_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_sweep(str(path))
    message = str(info.value)
    assert message.startswith(f"--sweep {path}: ") and "\n" not in message and len(message) < 500
    return message


def test_hostile_sweep_files_are_one_line_errors(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00")
    assert sweep_error(sweep).endswith("the file is binary, not YAML text (it contains NUL bytes).")
    if Path("/bin/ls").exists():
        assert "binary" in sweep_error("/bin/ls")
    sweep.write_bytes(b"learning_rate: [\xff]\n")
    assert "not UTF-8 text" in sweep_error(sweep)
    assert "could not be read" in sweep_error(tmp_path)
    assert sweep_error(tmp_path / "missing.yaml").endswith("no such file.")
    for text, fragment in [
        ("learning_rate: &a [*a]\n", "recursive structure"),
        ("learning_rate: " + "[" * 1000 + "]" * 1000, "nested deeper than 32 levels"),
        ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
                                                           for p, n in zip("abcde", "bcdef")),
         "more than 20000 values once aliases are expanded"),
        ("learning_rate: [" + "1.0e-3, " * 30_000 + "]", "more than 20000 values"),
        ("# " + "x" * (1 << 20), "larger than 1024 KiB"),
        ("learning_rate: [" + "9" * 400 + "]", "learning_rate (<an integer of ~400 digits>) must be a finite number"),
        ("learning_rate: [.nan]", "learning_rate (nan) must be a finite number"),
        ("beta: " + "x" * 10_000, "beta ('xxx"),
        ("learning_rate: [1, 2, 3, 4]\nbeta: [1, 2, 3, 4]\ngamma: [0.1, 0.2, 0.3, 0.4]\n"
         "lambd: [0.1, 0.2, 0.3, 0.4, 0.5]",
         "4 learning_rate x 4 beta x 4 gamma x 5 lambd values make 320 runs; at most 256"),
        ("[" * 10, "Error parsing yaml file"),
    ]:
        sweep.write_text(text)
        assert fragment in sweep_error(sweep)


def test_cli_reports_a_binary_sweep_in_one_line(tmp_path, capsys):
    config = tiny_config(tmp_path, 1024)
    assert main([config, "--sweep", "/bin/ls" if Path("/bin/ls").exists() else config + "x"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[ERROR] --sweep ")
