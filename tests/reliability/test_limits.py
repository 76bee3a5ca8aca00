"""rlrobot.limits: sizes that pass the config but cannot fit the device, or would compile or run for ever."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rlrobot import limits
from rlrobot.config import NetworkSettings, PPOSettings, TrainerSettings, load_run_settings
from rlrobot.limits import (
    MAX_ADAM_STEPS_PER_UPDATE,
    MAX_HIDDEN_UNITS,
    MAX_NUM_LAYERS,
    MAX_RUNS,
    ResourceError,
    check_training_size,
    device_memory_bytes,
    estimate_training_bytes,
    format_bytes,
    memory_parts,
)
from rlrobot.train import make_train_spec

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30
OBS, ACT = 19, 2


def spec_for(num_envs: int = 64, hidden_units: int = 128, num_layers: int = 2, time_horizon: int = 64,
             **hyperparameters):
    trainer = TrainerSettings(time_horizon=time_horizon, hyperparameters=PPOSettings(**hyperparameters),
                              network_settings=NetworkSettings(hidden_units=hidden_units, num_layers=num_layers))
    return make_train_spec(trainer, OBS, ACT, num_envs)


def refusal(spec, runs: int = 1, memory_bytes: int | None = 24 * GIB) -> str:
    with pytest.raises(ResourceError) as info:
        check_training_size(spec, runs, memory_bytes)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500
    return message


@pytest.mark.parametrize("config", ["MobileRobot.yaml", "MobileRobot-fast.yaml"])
def test_shipped_configs_fit(config):
    settings = load_run_settings(str(ROOT / "configs" / config))
    trainer = settings.behavior("MobileRobot")
    spec = make_train_spec(trainer, OBS, ACT, settings.env_settings.num_envs or 160)
    check_training_size(spec)  # this machine's own memory
    check_training_size(spec, runs=4, memory_bytes=8 * GIB)
    assert estimate_training_bytes(spec) < 2 * GIB


def test_huge_buffer_names_buffer_size_and_the_device():
    spec = spec_for(num_envs=512, buffer_size=10**9, batch_size=1024)
    message = refusal(spec)
    assert message.startswith("hyperparameters.buffer_size (1000000000 agent-steps per update) with "
                              "env_settings.num_envs 512 needs ~")
    assert message.endswith("of device memory; this device has 24.0 GiB.")
    assert "TiB" in message


def test_more_steps_than_int32_per_update():
    spec = spec_for(num_envs=512, buffer_size=2**31 - 1, batch_size=2**20)
    assert spec.num_envs * spec.rollout_steps == 2**31
    assert refusal(spec, memory_bytes=1 << 60).startswith(
        "hyperparameters.buffer_size (2147483648 agent-steps per update) with env_settings.num_envs 512 makes a "
        "2147515904-step buffer (512 robots x 4194367 steps), over 2147483647 (2**31-1)")


def test_huge_num_envs_names_num_envs():
    message = refusal(spec_for(num_envs=2**30, buffer_size=64, batch_size=64, time_horizon=1))
    assert message.startswith(f"env_settings.num_envs ({2**30} robots) needs ~")


def test_long_time_horizon_with_many_robots_names_time_horizon():
    """Unfinished trajectories (up to time_horizon - 1 steps per robot) wait in the buffer for the next update."""
    message = refusal(spec_for(num_envs=2**20, buffer_size=2**20, batch_size=1024, time_horizon=1000))
    assert message.startswith("time_horizon (1000: up to 999 carried steps per robot) with env_settings.num_envs "
                              "1048576 needs ~")


def test_wide_batch_names_batch_size():
    message = refusal(spec_for(num_envs=64, hidden_units=16384, buffer_size=2**20, batch_size=2**20), memory_bytes=GIB)
    assert message.startswith("hyperparameters.batch_size (1048576) with network_settings.hidden_units 16384 x "
                              "num_layers 2 needs ~")


def test_wide_network_names_hidden_units():
    spec = spec_for(hidden_units=MAX_HIDDEN_UNITS, num_layers=8, buffer_size=64, batch_size=64)
    assert refusal(spec).startswith(f"network_settings.hidden_units ({MAX_HIDDEN_UNITS}) with num_layers 8 needs ~")
    message = refusal(spec_for(hidden_units=MAX_HIDDEN_UNITS + 1), memory_bytes=1 << 60)
    assert message.startswith(f"network_settings.hidden_units ({MAX_HIDDEN_UNITS + 1}) is over {MAX_HIDDEN_UNITS}")


def test_deep_networks_would_compile_for_ever():
    check_training_size(spec_for(num_layers=MAX_NUM_LAYERS), memory_bytes=24 * GIB)
    message = refusal(spec_for(num_layers=MAX_NUM_LAYERS + 1))
    assert message.startswith(f"network_settings.num_layers ({MAX_NUM_LAYERS + 1}) is over {MAX_NUM_LAYERS}")


def test_too_many_adam_steps_per_update():
    spec = spec_for(buffer_size=10**6, batch_size=1, num_epoch=3)
    assert spec.num_epoch * spec.num_minibatches > MAX_ADAM_STEPS_PER_UPDATE
    message = refusal(spec)
    assert message.startswith("hyperparameters.batch_size (1) with num_epoch 3 makes 3000000 Adam steps per update")
    check_training_size(spec_for(buffer_size=10**6, batch_size=3, num_epoch=3))


def test_runs_multiply_the_memory():
    spec = spec_for(num_envs=512, buffer_size=2**20, batch_size=4096)
    one = estimate_training_bytes(spec)
    assert estimate_training_bytes(spec, runs=7) == 7 * one
    check_training_size(spec, runs=4, memory_bytes=4 * one)
    message = refusal(spec, runs=5, memory_bytes=4 * one)
    assert message.startswith("--seeds/--sweep: 5 runs need ~") and message.endswith("enough for about 4.")
    assert refusal(spec, runs=2, memory_bytes=one // 2).endswith(f"per run; this device has "
                                                                 f"{format_bytes(one // 2)}.")
    assert f"at most {MAX_RUNS}" in refusal(spec_for(), runs=MAX_RUNS + 1, memory_bytes=1 << 60)
    assert "expected a positive integer" in refusal(spec_for(), runs=0)


def test_default_memory_is_the_device_or_the_host(monkeypatch):
    memory, where = device_memory_bytes()
    assert where in ("this device", "this host") and memory is not None and memory > 2**28
    monkeypatch.setattr(limits, "device_memory_bytes", lambda: (1 << 20, "this host"))
    assert refusal(spec_for(), memory_bytes=None).endswith("this host has 1.0 MiB.")
    monkeypatch.setattr(limits, "device_memory_bytes", lambda: (None, "this host"))
    check_training_size(spec_for(buffer_size=10**8, batch_size=10**5, num_envs=512), memory_bytes=None)


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 24 * GIB, 3.2e12, 2**70)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "24.0 GiB", "2.9 TiB", "1024 EiB"]


def test_estimate_is_close_to_what_xla_allocates():
    """Compile one small iteration on this machine's backend and compare with XLA's buffer assignment."""
    from rlrobot.config import EnvironmentSettings, RunSettings
    from rlrobot.trainer import build_jax_trainer

    trainer = TrainerSettings(hyperparameters=PPOSettings(buffer_size=16384, batch_size=512),
                              network_settings=NetworkSettings(hidden_units=64, num_layers=2, normalize=True))
    settings = RunSettings(behaviors={"MobileRobot": trainer}, env_settings=EnvironmentSettings(num_envs=512))
    built = build_jax_trainer(settings, "MobileRobot", devices=1)
    analysis = built.compile(built.init_state(0)).memory_analysis()
    xla = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
    ours = estimate_training_bytes(built.spec)
    assert 0.5 * xla < ours < 2.0 * xla, (format_bytes(ours), format_bytes(xla), memory_parts(built.spec))


def test_parts_follow_the_shapes():
    spec = spec_for(num_envs=64, buffer_size=4096, batch_size=256, time_horizon=1)
    parts = memory_parts(spec)
    wider = memory_parts(dataclasses.replace(spec, network=dataclasses.replace(spec.network, hidden_units=256)))
    assert wider["value_pass"] == 2 * parts["value_pass"] and wider["minibatch"] == 2 * parts["minibatch"]
    shared = memory_parts(dataclasses.replace(spec, network=dataclasses.replace(spec.network, shared_critic=True)))
    assert shared["parameters"] < parts["parameters"]
    longer = memory_parts(dataclasses.replace(spec, rollout_steps=2 * spec.rollout_steps))
    assert longer["buffer"] == 2 * parts["buffer"]


def test_more_robots_than_int32():
    message = refusal(spec_for(num_envs=2**33, buffer_size=64, batch_size=64, time_horizon=1))
    assert message.startswith(f"env_settings.num_envs ({2**33} robots) makes a {2**33}-step buffer")


def test_epochs_beyond_reason_name_num_epoch():
    message = refusal(spec_for(buffer_size=64, batch_size=64, num_epoch=2**31 - 1))
    assert message.startswith("hyperparameters.num_epoch (2147483647) with batch_size 64 (1 minibatches per epoch) "
                              "needs ~64.0 GiB")
    message = refusal(spec_for(buffer_size=64, batch_size=64, num_epoch=2**21), memory_bytes=1 << 60)
    assert message.startswith("hyperparameters.batch_size (64) with num_epoch 2097152 makes 2097152 Adam steps")
