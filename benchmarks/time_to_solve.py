"""Time to solve MobileRobot with rlrobot: success rate and mean reward against wall-clock seconds, per seed.

Each seed runs ``rlrobot-learn`` on the config in a scratch results folder; the curve comes from its
``metrics.jsonl`` (x = compile time + training wall time at each summary), and the final policy is then judged
with ``rlrobot-validate``'s first-episode evaluation (solved = ≥ 99% success and mean return ≥ 7.8). The Unity +
ML-Agents reference from the exemplar (680k agent-steps in 715 s) is drawn as a line.

    python -m benchmarks.time_to_solve [--config configs/MobileRobot-fast.yaml] [--seeds 0 1 2] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine_info

UNITY_SECONDS = 715.0
SOLVED_SUCCESS, SOLVED_RETURN = 0.99, 7.8


def run_seed(config: str, seed: int, scratch: Path) -> dict:
    from rlrobot.cli import main as learn
    from rlrobot.validate import validate_in_jax

    t0 = time.perf_counter()
    code = learn([config, f"--run-id=seed{seed}", "--force", f"--seed={seed}", "--results-dir", str(scratch)])
    total_s = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"rlrobot-learn exited with {code} for seed {seed}")
    run = scratch / f"seed{seed}"
    timers = json.loads((run / "run_logs" / "timers.json").read_text())
    compile_s = timers["children"]["compile"]["total"]
    behavior = next(p for p in run.iterdir() if (p / "metrics.jsonl").is_file())
    lines = [json.loads(line) for line in (behavior / "metrics.jsonl").read_text().splitlines()]
    curve = [{"step": m["step"], "seconds": compile_s + m["wall_time"],
              "success_rate": m.get("Environment/Success Rate"), "mean_reward": m.get("Environment/Cumulative Reward")}
             for m in lines]
    _, final = validate_in_jax(run / f"{behavior.name}.onnx", None, episodes=1000, deterministic=False, seed=0,
                               max_steps=1000)
    solved = final["success_rate"] >= SOLVED_SUCCESS and final["mean_return"] >= SOLVED_RETURN
    return {"seed": seed, "command_seconds": total_s, "compile_seconds": compile_s, "curve": curve,
            "final": final, "solved": solved}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_success, ax_reward) = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        xs = [p["seconds"] for p in r["curve"]]
        ax_success.plot(xs, [p["success_rate"] for p in r["curve"]], label=f"rlrobot seed {r['seed']}")
        ax_reward.plot(xs, [p["mean_reward"] for p in r["curve"]], label=f"rlrobot seed {r['seed']}")
    for ax, label in ((ax_success, "success rate (episodes ended since last summary)"), (ax_reward, "mean reward")):
        ax.axvline(UNITY_SECONDS, color="grey", linestyle="--", label="Unity + ML-Agents (715 s)")
        ax.set_xscale("log")
        ax.set_xlabel("wall-clock seconds (compile included)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_reward.set_ylim(-20, 11)
    ax_success.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/MobileRobot-fast.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/time_to_solve"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        results = [run_seed(args.config, seed, Path(scratch)) for seed in args.seeds]
    info = machine_info()
    (args.out / "time_to_solve.json").write_text(json.dumps({"machine": info, "config": args.config,
                                                             "results": results}, indent=2))
    plot(results, args.out / "time_to_solve.png")
    print(f"Time to solve `{args.config}` — {info['cpu']} ({info['cores']} cores), {info['backend']}, JAX {info['jax']}, "
          f"{info['date']}")
    print("| seed | whole command (s) | compile (s) | success [95% CI] | mean return | mean length | solved |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        f = r["final"]
        lo, hi = f["success_rate_ci95"]
        print(f"| {r['seed']} | {r['command_seconds']:.1f} | {r['compile_seconds']:.1f} | {f['success_rate']:.3f} "
              f"[{lo:.3f}, {hi:.3f}] | {f['mean_return']:.2f} | {f['mean_length']:.1f} | {'yes' if r['solved'] else 'no'} |")


if __name__ == "__main__":
    main()
