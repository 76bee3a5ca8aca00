"""Helpers for the scale-out tests: forced CPU devices need a fresh process, and checkpoints compare leaf by leaf."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from flax import serialization, traverse_util
from test_cli import TINY  # the same tiny run, with a constant learning rate

REPO = Path(__file__).resolve().parents[2]


def tiny_config(directory: Path, max_steps: int) -> str:
    path = Path(directory) / f"tiny-{max_steps}.yaml"
    path.write_text(TINY.format(max_steps=max_steps, schedule="constant"))
    return str(path)


def forced_device_env(devices: int) -> dict[str, str]:
    """This environment with ``devices`` CPU devices (XLA reads the flag once, when JAX starts)."""
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests" / "rlrobot"),
                                           os.environ.get("PYTHONPATH", "")])}


def run_python(code: str, devices: int, *args: str, timeout: float = 600) -> str:
    """Run ``code`` (with ``args`` in ``sys.argv[1:]``) in a new interpreter with ``devices`` CPU devices."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          env=forced_device_env(devices), timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def checkpoint_leaves(path: Path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint's saved state (networks, optimiser, robots, keys, step), by path."""
    state = serialization.msgpack_restore(Path(path).read_bytes())["state"]
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(state, sep="/").items()}


def assert_checkpoints_close(a: Path, b: Path, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    left, right = checkpoint_leaves(a), checkpoint_leaves(b)
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_allclose(right[name], left[name], rtol=rtol, atol=atol, err_msg=name)
