"""Agent-steps/s through ML-Agents' gRPC protocol: the real mlagents-envs client (behind ``envs.unity.UnityBatchEnv``)
talking to the Unity-protocol stand-in player (``envs.standin``) launched as a separate process.

For each agent count the player is started with ``--agents N``, reset, and ``steps`` adapter steps with uniform random
actions (drawn each step, as the policy would send them) are timed; the figure is the median of ``repeats`` runs after
one warm-up run. Both sides are Python and share the machine's cores, so this measures the protocol path (proto
building, parsing, pickling through mlagents' pipe, loopback gRPC) plus the NumPy physics, not a Unity build.

    python -m benchmarks.unity_throughput [--agents 1 16 64] [--steps 300] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import socket
import tempfile
from importlib.metadata import version

import numpy as np

from benchmarks.machine import machine_info, median_seconds, throughput_row
from envs.standin.build import write_launcher
from envs.unity import UnityBatchEnv


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def measure(build: str, agents: int, steps: int, repeats: int, seed: int = 0) -> dict:
    with UnityBatchEnv(build, base_port=free_port(), seed=seed, additional_args=("--agents", str(agents))) as env:
        rng = np.random.default_rng(seed)
        env.reset()

        def run() -> None:
            for _ in range(steps):
                env.step(rng.uniform(-1.0, 1.0, (env.num_agents, env.action_size)).astype(np.float32))

        seconds = median_seconds(run, repeats)
    row = throughput_row(agents, steps, seconds, None)
    row["env_steps_per_second"] = steps / seconds
    return row


def versions() -> dict[str, str]:
    return {name: version(name) for name in ("mlagents-envs", "protobuf", "grpcio")}


def table(rows: list[dict]) -> str:
    lines = ["| agents | agent-steps/s | env-steps/s | ms/step |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['num_envs']} | {r['agent_steps_per_second']:,.0f} | {r['env_steps_per_second']:,.0f} | "
                     f"{1000.0 / r['env_steps_per_second']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--steps", type=int, default=300, help="adapter steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="standin-") as folder:
        build = str(write_launcher(folder))
        rows = [measure(build, n, args.steps, args.repeats) for n in args.agents]
    info = machine_info()
    used = versions()
    print(f"MobileRobot through ML-Agents' protocol (mlagents-envs {used['mlagents-envs']} <-> stand-in player, "
          f"protobuf {used['protobuf']}, grpcio {used['grpcio']}) — {info['cpu']} ({info['cores']} cores), "
          f"{info['date']}; median of {args.repeats} x {args.steps} steps")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "versions": used, "env": "MobileRobot", "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
