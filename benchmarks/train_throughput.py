"""Whole-training throughput: agent-steps per second of rlrobot's jitted PPO iteration for given configs.

Each config is built as ``rlrobot-learn`` builds it, by ``rlrobot.trainer.build_jax_trainer`` (same YAML, same
default number of robots unless ``--num-envs``), on the devices it would use (on a CPU with two cores or more, the
actor and the critic learn on a host device each: ``rlrobot.network_split``; ``--devices 1``: one device); compiled
once (compile time reported separately), then ``--iterations`` iterations run in one device call (``--per-call K
[K ...]``: in calls of K, a row each, as ``rlrobot-learn`` asks for several summary periods per call); the median of
``--repeats`` timings is reported.

    python -m benchmarks.train_throughput configs/MobileRobot-fast.yaml configs/MobileRobot.yaml
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks.machine import machine_info
from rlrobot.config import load_run_settings
from rlrobot.host_devices import provide_host_devices, tune_cpu_compiler
from rlrobot.train import TrainState
from rlrobot.trainer import JaxTrainer, build_jax_trainer

tune_cpu_compiler()  # as rlrobot-learn does, before anything starts JAX's backend
provide_host_devices()


def time_iterations(trainer: JaxTrainer, state: TrainState, iterations: int, repeats: int,
                    batched: bool = False, per_call: int | None = None) -> tuple[float, float]:
    """Compile ``trainer``'s iteration for ``state``, run one iteration as a warm-up, then time ``repeats`` runs of
    ``iterations`` iterations, each from where the last left off, in calls of ``per_call`` iterations (default: one
    call), the host reading each call's metrics as ``rlrobot-learn`` does: ``(compile seconds, median seconds)``."""
    t0 = time.perf_counter()
    run = trainer.compile(state, batched=batched)
    compile_s = time.perf_counter() - t0
    state, _ = run(state, jnp.int32(1), None)  # warm-up
    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for start in range(0, iterations, per_call or iterations):
            state, metrics = run(state, jnp.int32(min(per_call or iterations, iterations - start)), None)
            jax.device_get(metrics)
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times)


def measure(config: str, num_envs: int | None, iterations: int, repeats: int, devices: int | None = None,
            per_call: int | None = None) -> dict:
    """Agent-steps/s of ``config``'s iteration with ``num_envs`` robots (default: as rlrobot-learn) on ``devices``
    devices (default: as rlrobot-learn), ``per_call`` iterations per device call (default: all)."""
    trainer = build_jax_trainer(load_run_settings(config), num_envs=num_envs, devices=devices)
    state = trainer.place([trainer.init_state(0)], False)
    compile_s, seconds = time_iterations(trainer, state, iterations, repeats, per_call=per_call)
    spec = trainer.spec
    net = spec.network
    return {"config": config, "network": f"{net.num_layers}x{net.hidden_units}", "num_envs": spec.num_envs,
            "learners": 1 if trainer.learners is None else trainer.learners.size,
            "steps_per_iteration": spec.steps_per_iteration, "minibatch": spec.batch_size, "epochs": spec.num_epoch,
            "per_call": per_call or iterations,
            "agent_steps_per_second": iterations * spec.steps_per_iteration / seconds, "compile_s": compile_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--num-envs", type=int)
    parser.add_argument("--devices", type=int, help="as rlrobot-learn's flag (1: one device, no split)")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per-call", type=int, nargs="+", default=[None],
                        help="iterations per device call, one row each (default: all in one call)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = [measure(c, args.num_envs, args.iterations, args.repeats, args.devices, per_call)
            for c in args.configs for per_call in args.per_call]
    info = machine_info()
    print(f"Training throughput — {info['cpu']} ({info['cores']} cores), {info['backend']}, JAX {info['jax']}, "
          f"{info['date']}")
    print("| config | network | robots | steps/update | minibatch × epochs | learner devices | updates/call | "
          "agent-steps/s | compile (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['network']} | {r['num_envs']} | {r['steps_per_iteration']} | "
              f"{r['minibatch']} × {r['epochs']} | {r['learners']} | {r['per_call']} | "
              f"{r['agent_steps_per_second']:,.0f} | {r['compile_s']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
