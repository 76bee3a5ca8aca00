"""What a user waits for at launch: modules loaded only when needed, programs kept whole between runs
(``rlrobot.program_cache``), one compiled program for the initial state, and summaries that report only what an
update measured."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlrobot import program_cache
from rlrobot.cli import _scale_options, launch_description
from rlrobot.config import load_run_settings
from rlrobot.train import Metrics, init_train_state, summarize
from rlrobot.trainer import _seed_key, build_jax_trainer, seed_key

REPO = Path(__file__).resolve().parents[2]

# An update every 16 decisions per robot, trajectories cut at 64: the first updates find no finished trajectory.
SHORT_ROLLOUTS = """
behaviors:
  MobileRobot:
    trainer_type: ppo
    hyperparameters: {batch_size: 64, buffer_size: 256, learning_rate: 0.001, num_epoch: 1}
    network_settings: {normalize: true, hidden_units: 8, num_layers: 1}
    max_steps: 1024
    time_horizon: 64
    summary_freq: 256
    checkpoint_interval: 1024
env_settings: {num_envs: 16, seed: 3}
"""


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout.strip().splitlines()[-1])}


def test_the_command_line_loads_no_heavy_module_before_the_arguments_are_checked():
    loaded = _modules_after("import rlrobot.cli; rlrobot.cli.build_parser()")
    for heavy in ("jax", "flax", "optax", "tensorboardX", "rich", "PIL", "onnx", "mlagents_envs", "torch", "google"):
        assert heavy not in loaded, heavy


def test_a_training_run_loads_no_optional_module_before_it_trains():
    loaded = _modules_after("import rlrobot.cli, rlrobot.runner, rlrobot.compile_cache")
    for optional in ("tensorboardX", "PIL", "onnx", "onnxruntime", "mlagents_envs", "torch"):
        assert optional not in loaded, optional


def test_the_compiled_seed_key_is_seed_key():
    compiled = jax.jit(_seed_key)
    for seed in (0, 5, 2**31 + 7, 2**32 - 1, 2**40 + 3, -1):
        low, high = np.uint32(seed % 2**64 & 0xFFFFFFFF), np.uint32(seed % 2**64 >> 32)
        np.testing.assert_array_equal(compiled(low, high), seed_key(seed))


def test_the_initial_state_is_one_program_with_the_eager_values(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(SHORT_ROLLOUTS)
    trainer = build_jax_trainer(load_run_settings(str(config), {}))
    compiled = trainer.init_state(7)
    eager = init_train_state(seed_key(7), trainer.env, trainer.env_params, trainer.spec)
    for got, expected in zip(jax.tree.leaves(compiled), jax.tree.leaves(eager)):
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(expected, np.float64), atol=1e-5)


def test_an_update_without_a_minibatch_writes_no_losses():
    measured = Metrics.zeros().replace(iterations=1.0, updates=1.0, loss_updates=1.0, value_updates=1.0, entropy=1.4,
                                       value_estimate=0.5, policy_loss=0.02, value_loss=3.0, approx_kl=0.01,
                                       clip_fraction=0.1, learning_rate=1e-3, beta=1e-3, epsilon=0.2)
    scalars = summarize(jax.device_get(measured), True).scalars
    assert {"Losses/Policy Loss", "Losses/Value Loss", "Policy/Extrinsic Value Estimate"} <= set(scalars)
    # No finished trajectory: no minibatch ran and no value was estimated; the schedules are still real.
    empty = jax.device_get(measured.replace(loss_updates=0.0, value_updates=0.0, value_estimate=0.0, policy_loss=0.0,
                                            value_loss=0.0, approx_kl=0.0, clip_fraction=0.0))
    scalars = summarize(empty, True).scalars
    assert not {"Losses/Policy Loss", "Losses/Value Loss", "Policy/Extrinsic Value Estimate"} & set(scalars)
    assert scalars["Policy/Learning Rate"] == pytest.approx(1e-3) and "Policy/Entropy" in scalars
    # Two updates in the period, one of them without a minibatch: the losses are the measured update's.
    mixed = jax.device_get(measured.replace(updates=2.0, learning_rate=2e-3))
    scalars = summarize(mixed, True).scalars
    assert scalars["Losses/Value Loss"] == pytest.approx(3.0) and scalars["Policy/Learning Rate"] == pytest.approx(1e-3)


def _learn(tmp_path: Path, run_id: str, cache: Path, *flags: str) -> list[dict]:
    config = tmp_path / "run.yaml"
    config.write_text(SHORT_ROLLOUTS)
    proc = subprocess.run([sys.executable, "-m", "rlrobot.cli", str(config), f"--run-id={run_id}", "--results-dir",
                           str(tmp_path / "results"), "--no-replays", *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "RLROBOT_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (tmp_path / "results" / run_id / "MobileRobot" / "metrics.jsonl").read_text().splitlines()
    (tmp_path / f"{run_id}.log").write_text(proc.stdout)
    return [json.loads(line) for line in lines]


def test_a_second_run_loads_its_programs_whole_and_trains_the_same(tmp_path):
    cache = tmp_path / "cache"
    first = _learn(tmp_path, "first", cache)
    programs = sorted(p.name.split("-")[0] for p in (cache / "programs").glob("*.jaxprogram"))
    assert programs == ["init_state", "train"]
    jax_entries = sorted(p.name for p in (cache / "jax").iterdir())
    second = _learn(tmp_path, "second", cache, "--debug", "--seed", "3")  # another run of the config: same programs
    assert sorted(p.name for p in (cache / "jax").iterdir()) == jax_entries  # nothing new compiled
    log = (tmp_path / "second.log").read_text()
    assert "Program cache: loaded train-" in log and "(prefetched)" in log  # loaded while the trainer's modules did
    strip = [{k: v for k, v in line.items() if k not in ("wall_time", "steps_per_second")} for line in first]
    assert [{k: v for k, v in line.items() if k not in ("wall_time", "steps_per_second")} for line in second] == strip
    # The first updates found no finished trajectory: their summaries carry no made-up 0.0 losses.
    assert "Losses/Value Loss" not in first[0] and "Policy/Extrinsic Value Estimate" not in first[0]
    assert any("Losses/Value Loss" in line for line in first)
    assert all(line.get("Losses/Value Loss") != 0.0 for line in first)


def test_a_damaged_program_file_costs_only_a_compile(tmp_path):
    cache = tmp_path / "cache"
    first = _learn(tmp_path, "first", cache)
    for path in (cache / "programs").glob("*.jaxprogram"):
        path.write_bytes(path.read_bytes()[:100])
    second = _learn(tmp_path, "second", cache)
    assert [line["step"] for line in second] == [line["step"] for line in first]


def test_a_program_only_jaxs_cache_has_is_compiled_once_more_and_kept(tmp_path):
    """As after an edit that leaves the programs as they were: the program files are gone, JAX's cache has them."""
    cache = tmp_path / "cache"
    first = _learn(tmp_path, "first", cache)
    for path in (cache / "programs").glob("*.jaxprogram"):
        path.unlink()
    second = _learn(tmp_path, "second", cache)
    programs = sorted(p.name.split("-")[0] for p in (cache / "programs").glob("*.jaxprogram"))
    assert programs == ["init_state", "train"]  # JAX's copies could not be saved; the ones compiled again were
    jax_entries = sorted(p.name for p in (cache / "jax").iterdir())
    third = _learn(tmp_path, "third", cache)
    assert sorted(p.name for p in (cache / "jax").iterdir()) == jax_entries  # loaded whole: nothing compiled
    strip = [{k: v for k, v in line.items() if k not in ("wall_time", "steps_per_second")} for line in first]
    for run in (second, third):
        assert [{k: v for k, v in line.items() if k not in ("wall_time", "steps_per_second")} for line in run] == strip


def _probe(state: dict, count: jnp.ndarray, extra: None) -> tuple[dict, jnp.ndarray]:
    return {"sum": state["x"] * count, "pair": (state["y"] + 1.0, None)}, count + 1


PROBE_ARGS = ({"x": jnp.arange(3.0), "y": jnp.zeros(2)}, jnp.int32(2), None)


@pytest.fixture
def programs(tmp_path, monkeypatch) -> Path:
    """program_cache on in ``tmp_path`` for one test, with no launch of its own yet."""
    monkeypatch.setattr(program_cache, "_directory", tmp_path)
    monkeypatch.setattr(program_cache, "_launch", None)
    monkeypatch.setattr(program_cache, "_prefetched", {})
    return tmp_path


def _never_lowered():
    raise AssertionError("a saved program was traced again")


def test_a_loaded_program_takes_and_gives_the_callers_pytrees(programs):
    fresh = program_cache.compile_cached("probe", "v1", lambda: jax.jit(_probe).lower(*PROBE_ARGS))
    loaded = program_cache.compile_cached("probe", "v1", _never_lowered)
    assert isinstance(loaded, program_cache.LoadedProgram)
    got, expected = loaded(*PROBE_ARGS), fresh(*PROBE_ARGS)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="the program takes"):
        loaded(*PROBE_ARGS[:2])


def test_compiler_options_reach_the_compile_and_key_the_program_apart(programs):
    level_0 = {"xla_backend_optimization_level": 0}
    plain = program_cache.compile_cached("probe", "v1", lambda: jax.jit(_probe).lower(*PROBE_ARGS))
    light = program_cache.compile_cached("probe", "v1", lambda: jax.jit(_probe).lower(*PROBE_ARGS), level_0)
    assert len(list(programs.glob("probe-*.jaxprogram"))) == 2
    np.testing.assert_array_equal(light(*PROBE_ARGS)[0]["sum"], plain(*PROBE_ARGS)[0]["sum"])
    assert isinstance(program_cache.compile_cached("probe", "v1", _never_lowered, level_0), program_cache.LoadedProgram)
    with pytest.raises(Exception, match="no_such_option"):
        program_cache.compile_cached("probe", "v1", lambda: jax.jit(_probe).lower(*PROBE_ARGS), {"no_such_option": 1})


def test_a_launch_loads_what_the_last_launch_of_its_config_asked_for_on_a_worker_thread(programs, monkeypatch):
    loads = []

    def load(path):
        loads.append((path.name, threading.current_thread().name))
        return original(path)

    original = program_cache._load
    monkeypatch.setattr(program_cache, "_load", load)
    program_cache.prefetch_launch(("config", 1))  # the first launch: nothing noted, nothing to load
    program_cache.compile_cached("probe", "v1", lambda: jax.jit(_probe).lower(*PROBE_ARGS))
    (note,) = (programs / "launches").iterdir()
    (name,) = note.read_text().split()
    assert name.startswith("probe-") and (programs / name).is_file()

    loads.clear()
    program_cache.prefetch_launch(("config", 1))  # the same config again
    program = program_cache.compile_cached("probe", "v1", _never_lowered)
    assert loads == [(name, "rlrobot-prefetch_0")]
    np.testing.assert_array_equal(program(*PROBE_ARGS)[1], 3)

    loads.clear()  # the same config asks for another program: it is looked up by its own key, and noted instead
    program_cache.prefetch_launch(("config", 1))
    other = program_cache.compile_cached("probe", "v2", lambda: jax.jit(_probe).lower(*PROBE_ARGS))
    (other_name,) = note.read_text().split()
    assert other_name != name and other_name.startswith("probe-") and other is not None
    assert [load for load in loads if load[0] == name] in ([(name, "rlrobot-prefetch_0")], [])  # wasted, if started

    loads.clear()
    program_cache.prefetch_launch(("config", 2))  # another config: nothing noted for it
    assert not program_cache._prefetched and not loads


def test_a_launch_is_described_without_its_run_folder_or_seed(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(SHORT_ROLLOUTS)
    options = _scale_options({})

    def described(**args):
        return launch_description(load_run_settings(str(config), args), options)

    assert described(run_id="a", seed=1) == described(run_id="b", seed=2, force=True, results_dir=str(tmp_path),
                                                      debug=True)
    assert described() != described(inference=True)
    assert described() != described(num_envs=32)
    assert described() != launch_description(load_run_settings(str(config), {}), _scale_options({"seeds": 2}))


def test_a_damaged_launch_note_only_loses_the_prefetch(programs):
    program_cache.prefetch_launch(("config", 1))
    program_cache.compile_cached("probe", "v1", lambda: jax.jit(_probe).lower(*PROBE_ARGS))
    (note,) = (programs / "launches").iterdir()
    for damage in (b"\xff\xfe\x00", b"../outside.jaxprogram\ngone.jaxprogram\n"):
        note.write_bytes(damage)
        program_cache.prefetch_launch(("config", 1))
        assert not program_cache._prefetched
        np.testing.assert_array_equal(program_cache.compile_cached("probe", "v1", _never_lowered)(*PROBE_ARGS)[1], 3)
