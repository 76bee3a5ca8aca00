"""One run of every throughput benchmark, Isaac Lab style, written to ``results.json``, ``results.md`` and plots.

For each number of parallel robots it measures three columns, as Isaac Lab reports them:

* **env only** — the jitted JAX MobileRobot with random actions (``benchmarks.env_throughput``);
* **env + inference** — the same, acting with the policy network of ``configs/MobileRobot-fast.yaml``
  (``benchmarks.inference_throughput``);
* **training** — whole PPO iterations of the fast config with ``--num-envs`` = that robot count
  (``benchmarks.train_throughput``; counts with ``buffer_size // robots < 1`` are skipped);

plus the NumPy port of the env (``benchmarks.numpy_throughput``) as the baseline column and, in full mode, two training
baselines on the fast config: the course's PyTorch PPO-AC loop (``benchmarks.torch_ppo``, when torch imports) and
Stable-Baselines3 PPO (``benchmarks.sb3_ppo``; skipped with a note when stable-baselines3 is not installed), and the
Unity protocol path (``benchmarks.unity_throughput``: mlagents-envs to the stand-in player at 1, 16 and 64 agents,
against the JAX env at the same counts; skipped when mlagents-envs is not installed). It also times the device's
float32 matmul rate and
reports the training throughput against the ceiling that rate sets on the networks' FLOPs (fast config; the course
config ``configs/MobileRobot.yaml`` too in full mode). Compile times are separate columns; every file is stamped with
``machine_info()``.

    python -m benchmarks [--quick] [--out DIR]        # DIR defaults to benchmarks/out/<backend>
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp

import envs
from benchmarks import env_throughput, inference_throughput, numpy_throughput, train_throughput
from benchmarks.machine import machine_info, median_seconds
from benchmarks.report import write_report
from envs.api import Environment
from rlrobot.config import load_run_settings
from rlrobot.trainer import build_jax_trainer

FAST_CONFIG = "configs/MobileRobot-fast.yaml"
COURSE_CONFIG = "configs/MobileRobot.yaml"

# Per mode: robot counts and how much work each timed run does.
MODES = {
    "quick": {
        "counts": [1, 64, 512], "env_steps": 20_000, "env_steps_per_robot": 2_000, "inference_steps": 20_000,
        "repeats": 1, "train_counts": [64, 512], "train_iterations": 1, "train_repeats": 1,
        "numpy_max_robots": 512, "numpy_steps": 20_000, "numpy_max_steps": 200, "numpy_repeats": 1,
        "matmul_iterations": 20, "course": False, "torch": False, "sb3": False, "unity": True,
    },
    "full": {
        "counts": [1, 16, 256, 1024, 4096, 16384, 65536], "env_steps": 2_000_000, "env_steps_per_robot": 50_000,
        "inference_steps": 1_000_000, "repeats": 3, "train_counts": None, "train_iterations": 2, "train_repeats": 1,
        "numpy_max_robots": None, "numpy_steps": 500_000, "numpy_max_steps": 1000, "numpy_repeats": 1,
        "matmul_iterations": 200, "course": True, "torch": True, "sb3": True, "unity": True,
    },
}
ACCELERATOR_COUNTS = [262144, 1048576]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def matmul_rate(iterations: int, rows: int = 2048, width: int = 512, dtype: Any = jnp.float32) -> dict:
    """FLOP/s of a jitted chain of ``x = tanh(x @ w)`` with ``x[rows, width]``, ``w[width, width]`` in ``dtype``
    (float32 by default, at JAX's default matmul precision)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (rows, width), jnp.float32).astype(dtype)
    w = (jax.random.normal(jax.random.PRNGKey(1), (width, width), jnp.float32) / jnp.sqrt(width)).astype(dtype)

    def chain(x, w):
        return jax.lax.fori_loop(0, iterations, lambda _, x: jnp.tanh(x @ w), x)

    t0 = time.perf_counter()
    run = jax.jit(chain).lower(x, w).compile()
    compile_s = time.perf_counter() - t0
    seconds = median_seconds(lambda: run(x, w).block_until_ready(), 3)
    flops = 2.0 * rows * width * width * iterations
    return {"shape": f"[{rows},{width}]@[{width},{width}] + tanh", "dtype": jnp.dtype(dtype).name,
            "iterations": iterations, "seconds": seconds, "flops": flops, "flops_per_second": flops / seconds,
            "compile_s": compile_s}


def mlp_forward_flops(sizes: list[int]) -> int:
    """2·Σ fan_in·fan_out over the layers of an MLP with these layer widths."""
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def flops_per_agent_step(config: str) -> dict:
    """NN FLOPs one agent-step of PPO costs: acting, two critic passes, and num_epoch × (forward + backward ≈ 3×)."""
    settings = load_run_settings(config)
    trainer = build_jax_trainer(settings, devices=1)
    spec, net = trainer.spec, trainer.spec.network
    hidden = [net.hidden_units] * max(net.num_layers, 1)
    actor = mlp_forward_flops([net.obs_size, *hidden, net.action_size])
    critic = mlp_forward_flops([net.obs_size, *hidden, 1])
    total = actor + 2 * critic + spec.num_epoch * 3 * (actor + critic)
    return {"network": f"{net.num_layers}x{net.hidden_units}", "actor_forward": actor, "critic_forward": critic,
            "epochs": spec.num_epoch, "flops_per_agent_step": total,
            "buffer_size": settings.behavior(trainer.behavior).hyperparameters.buffer_size}


def ceiling_row(config: str, train_row: dict, flops: dict, rate: float) -> dict:
    ceiling = rate / flops["flops_per_agent_step"]
    achieved = train_row["agent_steps_per_second"]
    return {"config": config, "network": flops["network"], "num_envs": train_row["num_envs"],
            "flops_per_agent_step": flops["flops_per_agent_step"], "matmul_flops_per_second": rate,
            "ceiling_agent_steps_per_second": ceiling, "achieved_agent_steps_per_second": achieved,
            "fraction": achieved / ceiling, "compile_s": train_row["compile_s"]}


def env_columns(env: Environment, params: Any, counts: list[int], m: dict) -> tuple[list[dict], list[dict]]:
    """The env-only and env + inference (fast config's network) columns at each robot count."""
    spec = inference_throughput.network_spec(FAST_CONFIG, env)
    env_rows, inference_rows = [], []
    for n in counts:
        steps = min(m["env_steps"], n * m["env_steps_per_robot"])
        log(f"env only, {n} robots")
        env_rows.append(env_throughput.measure(env, params, n, steps, m["repeats"]))
        log(f"env + inference, {n} robots")
        inference_rows.append(inference_throughput.measure(
            env, params, n, min(m["inference_steps"], n * m["env_steps_per_robot"]), m["repeats"], spec))
    return env_rows, inference_rows


def train_column(mode: str, counts: list[int], buffer_size: int, skipped: list[dict]) -> list[dict]:
    """The fast config's training throughput at the robot counts ``mode`` trains at; the others go to ``skipped``."""
    m = MODES[mode]
    train_counts = m["train_counts"] or counts
    rows = []
    for n in counts:
        if n not in train_counts:
            skipped.append({"column": "train", "num_envs": n, "why": f"{mode} mode trains at {train_counts}"})
            continue
        if buffer_size // n < 1:
            skipped.append({"column": "train", "num_envs": n, "why": f"buffer_size {buffer_size} // {n} < 1"})
            continue
        log(f"training, {n} robots")
        rows.append(train_throughput.measure(FAST_CONFIG, n, m["train_iterations"], m["train_repeats"]))
    return rows


def numpy_column(mode: str, counts: list[int], skipped: list[dict]) -> list[dict]:
    """The NumPy port's env-only throughput at the robot counts ``mode`` allows; the others go to ``skipped``."""
    m = MODES[mode]
    rows = []
    for n in counts:
        if m["numpy_max_robots"] is not None and n > m["numpy_max_robots"]:
            skipped.append({"column": "numpy", "num_envs": n,
                            "why": f"{mode} mode: NumPy ≤ {m['numpy_max_robots']} robots"})
            continue
        log(f"NumPy env, {n} robots")
        rows.append(numpy_throughput.measure(n, m["numpy_steps"], m["numpy_max_steps"], m["numpy_repeats"]))
    return rows


# The robot count the fast config trains with: its row of the ceiling table.
FAST_ROBOTS = 512


def fast_train_row(train_rows: list[dict], m: dict) -> dict:
    """The fast config's training row at ``FAST_ROBOTS``, measured now when the train column lacks it."""
    row = next((r for r in train_rows if r["num_envs"] == FAST_ROBOTS), None)
    if row is None:
        log(f"training, fast config at {FAST_ROBOTS} robots")
        row = train_throughput.measure(FAST_CONFIG, FAST_ROBOTS, m["train_iterations"], m["train_repeats"])
    return row


def run(mode: str) -> dict:
    m = MODES[mode]
    counts = list(m["counts"]) + (ACCELERATOR_COUNTS if mode == "full" and jax.default_backend() != "cpu" else [])
    env = envs.make("MobileRobot")
    params = env.default_params
    fast_flops = flops_per_agent_step(FAST_CONFIG)
    result = {"machine": machine_info(), "mode": mode, "env": "MobileRobot", "config": FAST_CONFIG,
              "network": fast_flops["network"], "robot_counts": counts,
              "columns": {"env": [], "inference": [], "train": [], "numpy": []}, "skipped": [], "torch": None,
              "sb3": None, "unity": None}
    cols, skipped = result["columns"], result["skipped"]

    log(f"matmul rate ({m['matmul_iterations']} iterations)")
    result["matmul"] = matmul_rate(m["matmul_iterations"])
    cols["env"], cols["inference"] = env_columns(env, params, counts, m)
    cols["train"] = train_column(mode, counts, fast_flops["buffer_size"], skipped)
    cols["numpy"] = numpy_column(mode, counts, skipped)

    rate = result["matmul"]["flops_per_second"]
    fast_row = fast_train_row(cols["train"], m)
    result["ceiling"] = [ceiling_row(FAST_CONFIG, fast_row, fast_flops, rate)]
    if m["course"]:
        log("training, course config")
        result["course_train"] = train_throughput.measure(COURSE_CONFIG, None, 2, 1)
        result["ceiling"].append(ceiling_row(COURSE_CONFIG, result["course_train"],
                                             flops_per_agent_step(COURSE_CONFIG), rate))
    if m["torch"]:
        result["torch"] = torch_column(fast_row)
    if m["sb3"]:
        result["sb3"] = sb3_column(fast_row)
    if m["unity"]:
        result["unity"] = unity_column(env, params, m["repeats"], 300 if mode == "full" else 50)
    return result


UNITY_AGENTS = [1, 16, 64]


def unity_column(env: Environment, params: Any, repeats: int, steps: int) -> dict:
    """Env-only agent-steps/s through ML-Agents' protocol to the stand-in player, beside the JAX env's."""
    try:
        from benchmarks import unity_throughput
    except ImportError as error:
        return {"skipped": f"{error.name} is not installed (pip install -e '.[unity]')"}
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as folder:   # all protocol rows first: XLA's busy threads would slow them
        build = str(unity_throughput.write_launcher(folder))
        for n in UNITY_AGENTS:
            log(f"Unity protocol (stand-in player), {n} agents")
            rows.append(unity_throughput.measure(build, n, steps, repeats))
    for row in rows:
        n = row["num_envs"]
        log(f"JAX env at the same count, {n} robots")
        row["jax_agent_steps_per_second"] = env_throughput.measure(env, params, n, n * 100 * steps, repeats)[
            "agent_steps_per_second"]
    return {"rows": rows, "versions": unity_throughput.versions()}


def torch_column(fast_row: dict) -> dict:
    """The PyTorch PPO-AC loop's training agent-steps/s on the fast config beside rlrobot's, or why it was skipped."""
    try:
        import torch
    except ImportError:
        return {"skipped": "torch is not installed (pip install -e '.[bench]')"}
    from benchmarks.torch_ppo import config_steps_per_second

    log("PyTorch PPO-AC, fast config")
    row = config_steps_per_second(FAST_CONFIG, iterations=2)
    return {**row, "torch": torch.__version__, "rlrobot_agent_steps_per_second": fast_row["agent_steps_per_second"]}


def sb3_column(fast_row: dict) -> dict:
    """SB3 PPO's training agent-steps/s on the fast config beside rlrobot's, or why it was skipped."""
    try:
        import gymnasium
        import stable_baselines3
    except ImportError as error:
        return {"skipped": f"{error.name} is not installed (pip install -e '.[bench]')"}
    from benchmarks.sb3_ppo import train_steps_per_second

    log("SB3 PPO, fast config")
    row = train_steps_per_second(FAST_CONFIG, iterations=3)
    return {**row, "sb3": stable_baselines3.__version__, "gymnasium": gymnasium.__version__,
            "rlrobot_agent_steps_per_second": fast_row["agent_steps_per_second"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small robot counts and step counts (about a minute)")
    parser.add_argument("--out", help="output folder (default benchmarks/out/<backend>)")
    args = parser.parse_args(argv)
    out = args.out or os.path.join("benchmarks", "out", jax.default_backend())
    t0 = time.perf_counter()
    result = run("quick" if args.quick else "full")
    result["wall_s"] = time.perf_counter() - t0
    markdown = write_report(result, out)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
