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

import jax
import jax.numpy as jnp

import envs
from benchmarks import env_throughput, inference_throughput, numpy_throughput, train_throughput
from benchmarks.machine import machine_info, median_seconds
from benchmarks.report import write_report

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


def matmul_rate(iterations: int, rows: int = 2048, width: int = 512) -> dict:
    """float32 FLOP/s of a jitted chain of ``x = tanh(x @ w)`` with ``x[rows, width]``, ``w[width, width]``."""
    x = jax.random.normal(jax.random.PRNGKey(0), (rows, width), jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(1), (width, width), jnp.float32) / jnp.sqrt(width)

    def chain(x, w):
        return jax.lax.fori_loop(0, iterations, lambda _, x: jnp.tanh(x @ w), x)

    t0 = time.perf_counter()
    run = jax.jit(chain).lower(x, w).compile()
    compile_s = time.perf_counter() - t0
    seconds = median_seconds(lambda: run(x, w).block_until_ready(), 3)
    flops = 2.0 * rows * width * width * iterations
    return {"shape": f"[{rows},{width}]@[{width},{width}] + tanh", "iterations": iterations, "seconds": seconds,
            "flops": flops, "flops_per_second": flops / seconds, "compile_s": compile_s}


def mlp_forward_flops(sizes: list[int]) -> int:
    """2·Σ fan_in·fan_out over the layers of an MLP with these layer widths."""
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def flops_per_agent_step(config: str, obs_size: int, action_size: int) -> dict:
    """NN FLOPs one agent-step of PPO costs: acting, two critic passes, and num_epoch × (forward + backward ≈ 3×)."""
    from rlrobot.config import load_run_settings
    from rlrobot.runner import choose_behavior

    settings = load_run_settings(config)
    trainer = settings.behavior(choose_behavior(settings))
    net = trainer.network_settings
    hidden = [net.hidden_units] * max(net.num_layers, 1)
    actor = mlp_forward_flops([obs_size, *hidden, action_size])
    critic = mlp_forward_flops([obs_size, *hidden, 1])
    epochs = trainer.hyperparameters.num_epoch
    total = actor + 2 * critic + epochs * 3 * (actor + critic)
    return {"network": f"{net.num_layers}x{net.hidden_units}", "actor_forward": actor, "critic_forward": critic,
            "epochs": epochs, "flops_per_agent_step": total, "buffer_size": trainer.hyperparameters.buffer_size}


def ceiling_row(config: str, train_row: dict, flops: dict, rate: float) -> dict:
    ceiling = rate / flops["flops_per_agent_step"]
    achieved = train_row["agent_steps_per_second"]
    return {"config": config, "network": flops["network"], "num_envs": train_row["num_envs"],
            "flops_per_agent_step": flops["flops_per_agent_step"], "matmul_flops_per_second": rate,
            "ceiling_agent_steps_per_second": ceiling, "achieved_agent_steps_per_second": achieved,
            "fraction": achieved / ceiling, "compile_s": train_row["compile_s"]}


def run(mode: str) -> dict:
    m = MODES[mode]
    backend = jax.default_backend()
    counts = list(m["counts"]) + (ACCELERATOR_COUNTS if mode == "full" and backend != "cpu" else [])
    env = envs.make("MobileRobot")
    params = env.default_params
    spec = inference_throughput.network_spec(FAST_CONFIG, env)
    fast_flops = flops_per_agent_step(FAST_CONFIG, env.observation_size, env.action_size)
    result = {"machine": machine_info(), "mode": mode, "env": "MobileRobot", "config": FAST_CONFIG,
              "network": fast_flops["network"], "robot_counts": counts,
              "columns": {"env": [], "inference": [], "train": [], "numpy": []}, "skipped": [], "torch": None,
              "sb3": None, "unity": None}
    cols = result["columns"]

    log(f"matmul rate ({m['matmul_iterations']} iterations)")
    result["matmul"] = matmul_rate(m["matmul_iterations"])

    for n in counts:
        steps = min(m["env_steps"], n * m["env_steps_per_robot"])
        log(f"env only, {n} robots")
        cols["env"].append(env_throughput.measure(env, params, n, steps, m["repeats"]))
        log(f"env + inference, {n} robots")
        cols["inference"].append(inference_throughput.measure(
            env, params, n, min(m["inference_steps"], n * m["env_steps_per_robot"]), m["repeats"], spec))

    train_counts = m["train_counts"] or counts
    for n in counts:
        if n not in train_counts:
            result["skipped"].append({"column": "train", "num_envs": n, "why": f"{mode} mode trains at {train_counts}"})
            continue
        if fast_flops["buffer_size"] // n < 1:
            result["skipped"].append({"column": "train", "num_envs": n,
                                      "why": f"buffer_size {fast_flops['buffer_size']} // {n} < 1"})
            continue
        log(f"training, {n} robots")
        cols["train"].append(train_throughput.measure(FAST_CONFIG, n, m["train_iterations"], m["train_repeats"]))

    for n in counts:
        if m["numpy_max_robots"] is not None and n > m["numpy_max_robots"]:
            result["skipped"].append({"column": "numpy", "num_envs": n, "why": f"{mode} mode: NumPy ≤ {m['numpy_max_robots']} robots"})
            continue
        log(f"NumPy env, {n} robots")
        cols["numpy"].append(numpy_throughput.measure(n, m["numpy_steps"], m["numpy_max_steps"], m["numpy_repeats"]))

    rate = result["matmul"]["flops_per_second"]
    # The fast config at its own robot count (the count it trains with), measured above when it was in the list.
    fast_n = 512
    fast_row = next((r for r in cols["train"] if r["num_envs"] == fast_n), None)
    if fast_row is None:
        log(f"training, fast config at {fast_n} robots")
        fast_row = train_throughput.measure(FAST_CONFIG, fast_n, m["train_iterations"], m["train_repeats"])
    result["ceiling"] = [ceiling_row(FAST_CONFIG, fast_row, fast_flops, rate)]
    if m["course"]:
        log("training, course config")
        course_row = train_throughput.measure(COURSE_CONFIG, None, 2, 1)
        course_flops = flops_per_agent_step(COURSE_CONFIG, env.observation_size, env.action_size)
        result["course_train"] = course_row
        result["ceiling"].append(ceiling_row(COURSE_CONFIG, course_row, course_flops, rate))

    if m["torch"]:
        try:
            import torch  # noqa: F401
        except ImportError:
            result["torch"] = {"skipped": "torch is not installed (pip install -e '.[bench]')"}
        else:
            from benchmarks.torch_ppo import config_shape, train_steps_per_second

            log("PyTorch PPO-AC, fast config")
            shape = config_shape(FAST_CONFIG)
            hyper = {k: shape[k] for k in ("learning_rate", "beta", "clip", "lambd", "gamma")}
            t = train_steps_per_second(shape["num_envs"], shape["rollout_steps"], shape["hidden_units"],
                                       shape["num_layers"], shape["minibatch"], shape["epochs"], 2, **hyper)
            t["config"] = FAST_CONFIG
            t["torch"] = torch.__version__
            result["torch"] = t
            result["torch"]["rlrobot_agent_steps_per_second"] = fast_row["agent_steps_per_second"]
    if m["sb3"]:
        result["sb3"] = sb3_column(fast_row)
    if m["unity"]:
        result["unity"] = unity_column(env, params, m["repeats"], 300 if mode == "full" else 50)
    return result


UNITY_AGENTS = [1, 16, 64]


def unity_column(env, params, repeats: int, steps: int) -> dict:
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
