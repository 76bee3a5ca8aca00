"""``benchmarks.flop_bound``: its chains do the work they stand for, and a run reports both floors consistently."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import flop_bound

ROOT = Path(__file__).resolve().parents[1]
SIZES = [5, 4, 4, 2]
TINY = """
behaviors:
  MobileRobot:
    trainer_type: ppo
    hyperparameters: {batch_size: 128, buffer_size: 512, num_epoch: 2}
    network_settings: {normalize: true, hidden_units: 16, num_layers: 2}
    max_steps: 4096
    time_horizon: 32
env_settings: {num_envs: 16}
"""


def kernels() -> list[jax.Array]:
    return flop_bound.init_kernels(SIZES, jax.devices()[0])


def plain_forward(ks: list[jax.Array], x: jax.Array, activation) -> jax.Array:
    for k in ks[:-1]:
        x = activation(x @ k)
    return x @ ks[-1]


@pytest.mark.parametrize("activation", [lambda x: x, nn.swish], ids=["matmuls", "with Swish"])
def test_the_update_chain_takes_an_sgd_step_per_minibatch_from_the_last_ones_kernels(activation):
    minibatches = jax.random.normal(jax.random.PRNGKey(0), (3, 8, SIZES[0]))
    expected = kernels()
    for x in minibatches:
        grads = jax.grad(lambda ks, x=x: jnp.sum(plain_forward(ks, x, activation) ** 2))(expected)
        expected = [k - flop_bound.SGD_STEP * g for k, g in zip(expected, grads)]
    chained = jax.jit(flop_bound.update_chain, static_argnums=2)(kernels(), minibatches, activation)
    for got, want, start in zip(chained, expected, kernels()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
        assert not np.array_equal(got, start)   # every kernel moved: every kernel gradient was taken


def test_each_decision_of_the_acting_chain_waits_for_the_last_ones_output():
    observations = jax.random.normal(jax.random.PRNGKey(1), (4, 6, SIZES[0]))
    total = 0.0
    for x in observations:
        total = total + jnp.sum(plain_forward(kernels(), x + total, nn.swish))
    np.testing.assert_allclose(flop_bound.acting_chain(kernels(), observations, nn.swish), total, rtol=1e-5)


def test_a_run_reports_both_floors_with_the_fraction_each_allows(tmp_path):
    config, out = tmp_path / "tiny.yaml", tmp_path / "bound.json"
    config.write_text(TINY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.flop_bound", str(config), "--iterations", "2", "--repeats",
                           "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["layers"] for row in rows] == list(flop_bound.ACTIVATIONS)
    for row in rows:
        parts = row["env_ms"] + row["forwards_ms"] + row["update_chains_ms"]
        assert min(row["env_ms"], row["forwards_ms"], row["update_chains_ms"]) > 0
        np.testing.assert_allclose(row["floor_ms"], parts, rtol=1e-9)
        steps_per_second = 16 * 32 / (row["floor_ms"] / 1e3)   # the tiny config: 16 robots × 32 steps
        np.testing.assert_allclose(row["max_fraction"], steps_per_second / row["ceiling_agent_steps_per_second"])
        assert row["achieved_fraction"] == rows[0]["achieved_fraction"] > 0   # one training measurement
    assert "| with Swish |" in proc.stdout


def test_a_config_whose_networks_are_not_split_is_refused_naming_the_file(tmp_path, capsys):
    config = tmp_path / "wide.yaml"
    config.write_text(TINY.replace("hidden_units: 16", "hidden_units: 256"))
    with pytest.raises(SystemExit) as exit_info:
        flop_bound.main([str(config)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(config) in message and "network_split" in message
