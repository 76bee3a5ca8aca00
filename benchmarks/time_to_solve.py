"""Time to solve MobileRobot: rlrobot per seed, and optionally the PyTorch PPO-AC loop and SB3 PPO, on one plot.

rlrobot: each seed runs ``rlrobot-learn`` on the config in a scratch results folder; the curve comes from its
``metrics.jsonl`` (x = compile time + training wall time at each summary), and the final policy is judged with
``rlrobot-validate``'s first-episode evaluation in the JAX scene. Baselines (``--baselines torch sb3``): each trains
on the NumPy port with the same config until its ``max_steps`` or ``--budget`` wall-clock seconds, whichever comes
first, logging a summary per update (x = seconds since it started building its model), and its final policy plays
the same first-episode evaluation in the NumPy port (``benchmarks.solving.first_episodes_numpy``). Either way: one
episode for each of 1000 robots, robot i in arena i mod 8, sampled actions; solved = ≥ 99% success and mean return
≥ 7.8, within the budget. A run that does not get there is reported as not solved in that many seconds, never
extrapolated. The Unity + ML-Agents reference from the exemplar (680k agent-steps in 715 s) is drawn as a line. The
load average is recorded before and after each run (other processes share the cores).

    python -m benchmarks.time_to_solve [--config C] [--seeds 0 1 2] [--baselines torch sb3 --budget 600] [--out DIR]
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import tempfile
from pathlib import Path

from benchmarks.machine import machine_info
from benchmarks.solving import (
    VALIDATION_EPISODES,
    VALIDATION_MAX_STEPS,
    is_solved,
    learn_seed,
    methods_table,
    with_load,
)

UNITY_SECONDS = 715.0
COLORS = {"rlrobot": "tab:blue", "PyTorch PPO-AC": "tab:orange", "SB3 PPO": "tab:green"}


def run_seed(config: str, seed: int, scratch: Path) -> dict:
    from rlrobot.validate import validate_in_jax

    run, total_s, compile_s = learn_seed(config, seed, scratch)
    behavior = next(p for p in run.iterdir() if (p / "metrics.jsonl").is_file())
    lines = [json.loads(line) for line in (behavior / "metrics.jsonl").read_text().splitlines()]
    curve = [{"step": m["step"], "seconds": compile_s + m["wall_time"],
              "success_rate": m.get("Environment/Success Rate"), "mean_reward": m.get("Environment/Cumulative Reward")}
             for m in lines]
    _, final = validate_in_jax(run / f"{behavior.name}.onnx", None, episodes=VALIDATION_EPISODES, deterministic=False,
                               seed=0, max_steps=VALIDATION_MAX_STEPS)
    return {"method": "rlrobot", "seed": seed, "command_seconds": total_s, "train_seconds": total_s,
            "compile_seconds": compile_s, "steps": curve[-1]["step"] if curve else 0, "curve": curve, "final": final,
            "solved": is_solved(final)}


def run_baseline(name: str, config: str, seed: int, budget_s: float) -> dict:
    if name == "torch":
        from benchmarks.torch_ppo import time_to_solve
    elif name == "sb3":
        from benchmarks.sb3_ppo import time_to_solve
    else:
        raise ValueError(f"unknown baseline {name!r}; expected 'torch' or 'sb3'")
    return time_to_solve(config, seed, budget_s)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_success, ax_reward) = plt.subplots(1, 2, figsize=(11, 4.2))
    labelled = set()
    for r in results:
        method = r["method"]
        label = None if method in labelled else method  # one legend entry per method, seeds in one colour
        labelled.add(method)
        xs = [p["seconds"] for p in r["curve"]]

        def as_float(key: str, curve: list[dict] = r["curve"]) -> list[float]:
            return [math.nan if p[key] is None else p[key] for p in curve]

        color = COLORS.get(method)
        ax_success.plot(xs, as_float("success_rate"), color=color, alpha=0.8, linewidth=1, label=label)
        ax_reward.plot(xs, as_float("mean_reward"), color=color, alpha=0.8, linewidth=1, label=label)
    for ax, label in ((ax_success, "success rate (episodes ended since last summary)"), (ax_reward, "mean reward")):
        ax.axvline(UNITY_SECONDS, color="grey", linestyle="--", label="Unity + ML-Agents (715 s)")
        ax.set_xscale("log")
        ax.set_xlabel("wall-clock seconds (compile / model set-up included)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_reward.set_ylim(-20, 11)
    ax_success.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rlrobot_table(results: list[dict]) -> list[str]:
    lines = ["| seed | whole command (s) | compile (s) | success [95% CI] | mean return | mean length | solved |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        f = r["final"]
        lo, hi = f["success_rate_ci95"]
        lines.append(f"| {r['seed']} | {r['command_seconds']:.1f} | {r['compile_seconds']:.1f} | "
                     f"{f['success_rate']:.3f} [{lo:.3f}, {hi:.3f}] | {f['mean_return']:.2f} | "
                     f"{f['mean_length']:.1f} | "
                     f"{'yes' if r['solved'] else 'no'} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/MobileRobot-fast.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="rlrobot seeds")
    parser.add_argument("--baselines", nargs="*", default=[], choices=["torch", "sb3"])
    parser.add_argument("--baseline-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=float, default=600.0, help="wall-clock seconds each baseline run may train")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/time_to_solve"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        results = [with_load(functools.partial(run_seed, args.config, seed, Path(scratch))) for seed in args.seeds]
    results += [with_load(functools.partial(run_baseline, name, args.config, seed, args.budget))
                for name in args.baselines for seed in args.baseline_seeds]
    info = machine_info()
    (args.out / "time_to_solve.json").write_text(json.dumps(
        {"machine": info, "config": args.config, "budget_s": args.budget, "results": results}, indent=2))
    plot(results, args.out / "time_to_solve.png")
    print(f"Time to solve `{args.config}` — {info['cpu']} ({info['cores']} cores), {info['backend']}, "
          f"JAX {info['jax']}, {info['date']}")
    print("\n".join(rlrobot_table([r for r in results if r["method"] == "rlrobot"])))
    print()
    print("\n".join(methods_table(results, args.budget)))


if __name__ == "__main__":
    main()
