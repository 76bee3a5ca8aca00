"""Whole-training throughput: agent-steps per second of rlrobot's jitted PPO iteration for given configs.

Each config is built exactly as ``rlrobot-learn`` builds it (same YAML, same default number of robots unless
``--num-envs``), compiled once (compile time reported separately), then ``--iterations`` iterations run in one
device call; the median of ``--repeats`` timings is reported.

    python -m benchmarks.train_throughput configs/MobileRobot-fast.yaml configs/MobileRobot.yaml
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

import envs
from benchmarks.machine import machine_info
from rlrobot.config import load_run_settings
from rlrobot.runner import choose_behavior
from rlrobot.train import default_num_envs, init_train_state, make_train_iterations, make_train_spec


def measure(config: str, num_envs: int | None, iterations: int, repeats: int) -> dict:
    settings = load_run_settings(config)
    behavior = choose_behavior(settings)
    trainer = settings.behavior(behavior)
    env = envs.make(behavior)
    n = num_envs or settings.env_settings.num_envs or default_num_envs(trainer, jax.default_backend())
    spec = make_train_spec(trainer, env.observation_size, env.action_size, n)
    state = init_train_state(jax.random.PRNGKey(0), env, env.default_params, spec)
    t0 = time.perf_counter()
    run = make_train_iterations(env, env.default_params, spec).lower(state, jnp.int32(1)).compile()
    compile_s = time.perf_counter() - t0
    state, _ = run(state, jnp.int32(1))  # warm-up
    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = run(state, jnp.int32(iterations))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    net = spec.network
    return {"config": config, "network": f"{net.num_layers}x{net.hidden_units}", "num_envs": n,
            "steps_per_iteration": spec.steps_per_iteration, "minibatch": spec.batch_size, "epochs": spec.num_epoch,
            "agent_steps_per_second": iterations * spec.steps_per_iteration / seconds, "compile_s": compile_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--num-envs", type=int)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = [measure(c, args.num_envs, args.iterations, args.repeats) for c in args.configs]
    info = machine_info()
    print(f"Training throughput — {info['cpu']} ({info['cores']} cores), {info['backend']}, JAX {info['jax']}, {info['date']}")
    print("| config | network | robots | steps/update | minibatch × epochs | agent-steps/s | compile (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['network']} | {r['num_envs']} | {r['steps_per_iteration']} | "
              f"{r['minibatch']} × {r['epochs']} | {r['agent_steps_per_second']:,.0f} | {r['compile_s']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
