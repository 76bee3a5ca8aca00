"""``benchmarks.env_throughput --devices``: the robots split over host devices step exactly as on one device, and a
request that cannot be met is one error line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SAME_RUN = """
import jax, numpy as np
jax.config.update("jax_num_cpu_devices", 2)
import envs
from benchmarks.env_throughput import make_runner, split_over_devices
env = envs.make("MobileRobot")
runner = make_runner(env, env.default_params, 32, 40)
split, keys = split_over_devices(runner, jax.random.PRNGKey(3), 2)
together = np.asarray(split(keys))
assert len(split(keys).sharding.device_set) == 2
alone = np.asarray([runner(k) for k in jax.random.split(jax.random.PRNGKey(3), 2)])
np.testing.assert_allclose(together, alone, rtol=1e-6)
print("ok", together.tolist())
"""


def run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_devices_step_their_halves_as_one_device_would():
    proc = run(["-c", SAME_RUN])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok")


def test_devices_row_is_written(tmp_path):
    out = tmp_path / "env.json"
    proc = run(["-m", "benchmarks.env_throughput", "--num-envs", "64", "--devices", "2", "--agent-steps", "2048",
                "--repeats", "1", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["devices"] == 2 and row["num_envs"] == 64 and row["agent_steps_per_second"] > 0


def test_robots_that_do_not_split_evenly_are_one_error_line():
    proc = run(["-m", "benchmarks.env_throughput", "--num-envs", "63", "--devices", "2", "--repeats", "1"])
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["[ERROR] --num-envs 63 does not split evenly over --devices 2"]
