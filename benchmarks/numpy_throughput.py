"""Environment-only throughput of the NumPy port of MobileRobot (``envs.numpy_robot``): the baseline for
``benchmarks.env_throughput``.

Each measurement resets ``num_envs`` robots, then times ``steps`` calls of ``NumpyMobileRobot.step`` with uniform
random actions drawn each step (as the JAX benchmark draws its own), auto-resets included, and takes the median of
``repeats`` runs after one warm-up run. There is nothing to compile (the compile column reads "—"). ``steps`` is
``agent_steps // num_envs`` clipped to [16, ``max_steps``], so a single robot does not take minutes.

``--compare`` also runs ``benchmarks.env_throughput.measure`` (the jitted JAX env) for the same robot counts and
prints the speed-up JAX / NumPy.

    python -m benchmarks.numpy_throughput [--num-envs 1 16 256 4096 65536] [--compare] [--json out.json]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.machine import machine_info, median_seconds, throughput_row, throughput_table
from envs.numpy_robot import NumpyMobileRobot


def measure(num_envs: int, min_agent_steps: int, max_steps: int, repeats: int, seed: int = 0) -> dict:
    steps = min(max_steps, max(16, min_agent_steps // num_envs))
    robots = NumpyMobileRobot(num_envs, seed=seed)
    rng = np.random.default_rng(seed)

    def run() -> float:
        robots.reset()
        total = 0.0
        for _ in range(steps):
            actions = rng.random((num_envs, 2), dtype=np.float32) * np.float32(2.0) - np.float32(1.0)
            obs, reward, *_ = robots.step(actions)
            total += float(reward.sum())
        return total + float(obs.sum())

    seconds = median_seconds(run, repeats)
    return throughput_row(num_envs, steps, seconds, None)


def ratio_table(numpy_rows: list[dict], jax_rows: list[dict]) -> str:
    lines = ["| robots | NumPy agent-steps/s | JAX agent-steps/s | JAX / NumPy |", "|---:|---:|---:|---:|"]
    for n, j in zip(numpy_rows, jax_rows):
        lines.append(f"| {n['num_envs']} | {n['agent_steps_per_second']:,.0f} | {j['agent_steps_per_second']:,.0f} | "
                     f"{j['agent_steps_per_second'] / n['agent_steps_per_second']:.1f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 16, 256, 4096, 65536])
    parser.add_argument("--agent-steps", type=int, default=1_000_000, help="agent-steps per timed NumPy run")
    parser.add_argument("--max-steps", type=int, default=2000, help="most steps per timed NumPy run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", action="store_true", help="also time the JAX env and print JAX / NumPy")
    parser.add_argument("--jax-agent-steps", type=int, default=1_000_000, help="agent-steps per timed JAX run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    rows = [measure(n, args.agent_steps, args.max_steps, args.repeats) for n in args.num_envs]
    info = machine_info()
    print(f"MobileRobot NumPy env-only throughput — {info['cpu']} ({info['cores']} cores), NumPy {np.__version__}, "
          f"{info['date']}")
    print(throughput_table(rows))
    result = {"machine": info, "env": "MobileRobot", "numpy": np.__version__, "rows": rows}
    if args.compare:
        import envs
        from benchmarks.env_throughput import measure as measure_jax

        env = envs.make("MobileRobot")
        jax_rows = [measure_jax(env, env.default_params, n, args.jax_agent_steps, args.repeats) for n in args.num_envs]
        print()
        print(f"MobileRobot JAX env-only throughput — {info['backend']}, JAX {info['jax']}")
        print(throughput_table(jax_rows))
        print()
        print(ratio_table(rows, jax_rows))
        result["jax_rows"] = jax_rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
