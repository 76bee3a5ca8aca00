"""Time to solve the obstacle course (s7) from scratch: wall time per seed and the validated result.

Each seed runs ``rlrobot-learn`` on the config (default ``configs/MobileRobotObstacles-fast.yaml``) in a scratch
results folder, timed from launch to exit with the compile reported apart, then its final policy plays one episode in
each of 1000 robots (robot i in arena i mod 8, up to the scene's 2500 decisions) with sampled and with deterministic
actions. Solved = ≥ 99% success sampled and ≥ 95% deterministic. Unity + ML-Agents learned the scene in 498,408
agent-steps and 557 s. The load average is recorded around each run (other processes share the cores).

    python -m benchmarks.obstacle_course [--config C] [--seeds 0 1 2] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.machine import machine_info
from benchmarks.solving import learn_seed, with_load

EPISODES = 1000
MAX_STEPS = 2500
SOLVED_SAMPLED, SOLVED_DETERMINISTIC = 0.99, 0.95
UNITY = {"agent_steps": 498_408, "seconds": 557.0}


def run_seed(config: str, seed: int, scratch: Path) -> dict:
    from rlrobot.validate import validate_in_jax

    run, wall_s, compile_s = learn_seed(config, seed, scratch)
    policy = next(run.glob("*.onnx"))
    results = {mode: validate_in_jax(policy, None, EPISODES, mode == "deterministic", seed=0, max_steps=MAX_STEPS)[1]
               for mode in ("sampled", "deterministic")}
    solved = (results["sampled"]["success_rate"] >= SOLVED_SAMPLED
              and results["deterministic"]["success_rate"] >= SOLVED_DETERMINISTIC)
    return {"seed": seed, "wall_seconds": wall_s, "compile_seconds": compile_s, **results, "solved": solved}


def table(rows: list[dict]) -> list[str]:
    lines = ["| seed | wall s (compile s) | success sampled | mean steps | success deterministic | solved |",
             "|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        s, d = r["sampled"], r["deterministic"]
        lines.append(f"| {r['seed']} | {r['wall_seconds']:.1f} ({r['compile_seconds']:.1f}) | {s['success_rate']:.3f} "
                     f"| {s['mean_length']:.1f} | {d['success_rate']:.3f} | {'yes' if r['solved'] else 'no'} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/MobileRobotObstacles-fast.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/obstacle_course"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            rows.append(with_load(lambda seed=seed: run_seed(args.config, seed, Path(scratch))))
            print("\n".join(table(rows)[-1:]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_info(), "config": args.config, "unity": UNITY, "runs": rows}
    (args.out / "obstacle_course.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
