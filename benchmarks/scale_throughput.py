"""Scale-out throughput: agent-steps/s of the PPO iteration split over 1/2/4 devices, and of K seeds vmapped.

Each measurement runs in its own interpreter, since the number of (forced CPU) devices is fixed when JAX starts.
On a CPU the forced devices share the same cores, so the device rows should be flat: they prove the sharded code
path, not a speed-up. The seeds rows show what vmapping whole runs buys (per-run and total agent-steps/s).

    python -m benchmarks.scale_throughput [--config configs/MobileRobot-fast.yaml] [--devices 1 2 4] [--seeds 16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(config: str, devices: int, seeds: int, iterations: int) -> dict:
    """In this process: compile the iteration for ``seeds`` runs on ``devices`` devices and time ``iterations``."""
    from benchmarks.machine import machine_info
    from benchmarks.train_throughput import time_iterations
    from rlrobot.config import load_run_settings
    from rlrobot.trainer import build_jax_trainer

    trainer = build_jax_trainer(load_run_settings(config), devices=devices)
    batched = seeds > 1
    state = trainer.place([trainer.init_state(seed) for seed in range(seeds)], batched)
    compile_s, seconds = time_iterations(trainer, state, iterations, repeats=1, batched=batched)
    spec = trainer.spec
    total = seeds * iterations * spec.steps_per_iteration / seconds
    return {"config": config, "devices": devices, "seeds": seeds, "num_envs": spec.num_envs,
            "steps_per_iteration": spec.steps_per_iteration, "iterations": iterations, "compile_s": compile_s,
            "agent_steps_per_second": total, "per_run_steps_per_second": total / seeds, "machine": machine_info()}


def measure_in_subprocess(config: str, devices: int, seeds: int, iterations: int, forced: int) -> dict:
    """``measure`` in a fresh interpreter with ``forced`` CPU devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={forced}"}
    code = ("import json, sys; from benchmarks.scale_throughput import measure; "
            "print(json.dumps(measure(sys.argv[1], *map(int, sys.argv[2:]))))")
    out = subprocess.run([sys.executable, "-c", code, config, str(devices), str(seeds), str(iterations)], cwd=REPO,
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/MobileRobot-fast.yaml")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = [measure_in_subprocess(args.config, n, 1, args.iterations, n) for n in args.devices]
    rows += [measure_in_subprocess(args.config, 1, args.seeds, args.iterations, 1)] if args.seeds > 1 else []
    info = rows[0]["machine"]
    print(f"Scale-out throughput — {info['cpu']} ({info['cores']} cores), {info['backend']}, JAX {info['jax']}, "
          f"{info['date']}; {args.config}, {rows[0]['num_envs']} robots, {args.iterations} iterations timed")
    print("| devices | seeds | agent-steps/s (all runs) | per run | compile (s) |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['devices']} | {r['seeds']} | {r['agent_steps_per_second']:,.0f} | "
              f"{r['per_run_steps_per_second']:,.0f} | {r['compile_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
