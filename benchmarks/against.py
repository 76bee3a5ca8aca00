"""This checkout against another revision, side by side in one run: the figures users wait on, as ratios.

    python -m benchmarks.against --baseline bb5213e [--rounds 2] [--only env training launches] [--json out.json]

The baseline is checked out into a temporary git worktree. Every figure is measured in a child process whose working
folder and ``PYTHONPATH`` are one checkout, the two checkouts alternating round by round (so that a change in the
machine's load hits both), and each figure is the median over the rounds. Each child sets up JAX's CPU backend as
its checkout's ``rlrobot-learn`` does (``rlrobot.host_devices``, where the checkout has it):

* env only: ``benchmarks.env_throughput`` at 4096 robots, observations carried (agent-steps/s), on one device and
  split over two host devices (the CPU's cores; this checkout's ``split_over_devices`` drives either checkout's env);
* training: ``benchmarks.train_throughput`` of ``configs/MobileRobot-fast.yaml`` at its 512 robots, and its fraction
  of the NN-FLOP ceiling that the float32 matmul rate sets (``benchmarks.__main__``, measured in the same child);
* the course config's training throughput (``configs/MobileRobot.yaml``);
* launches (``benchmarks.startup``, this checkout's harness driving either one): a cold launch with an empty
  compile cache, then a warm one, each to its first summary, to solved (mean reward ≥ 7.8 and ≥ 99% success from
  then on) and to its exit.

``--only`` measures some of these groups (``env``, ``training``, ``launches``), so that a change to one part can be
alternated over more rounds in the same time. Judge a change this way, in separate processes: A/Bs that compiled two
variants in one process and alternated their timings misled on this CPU (``benchmarks/RESULTS.md``, "Measured in
separate processes").
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import startup

REPO = Path(__file__).resolve().parents[1]
FAST, COURSE = "configs/MobileRobot-fast.yaml", "configs/MobileRobot.yaml"

# Each child first sets up the CPU backend as that checkout's rlrobot-learn does (a checkout from before
# rlrobot.host_devices: XLA's defaults).
CPU_SETUP = """
try:
    from rlrobot.host_devices import tune_cpu_compiler as set_up_cpu
except ImportError:
    try:
        from rlrobot.host_devices import prefer_wide_vectors as set_up_cpu
    except ImportError:
        set_up_cpu = None
if set_up_cpu is not None:
    set_up_cpu()
"""

# Run in a child inside one checkout; each prints one JSON line. They use only functions both checkouts have.
# Importing train_throughput sets up the host devices as rlrobot-learn does, for the env's figure too.
ENV = CPU_SETUP + """
import json, envs
from benchmarks import env_throughput, train_throughput
env = envs.make("MobileRobot")
env_row = env_throughput.measure(env, env.default_params, 4096, 4_000_000, 5)
print(json.dumps({{"env_4096": env_row["agent_steps_per_second"]}}))
"""

TRAINING = CPU_SETUP + """
import json
from benchmarks import train_throughput
from benchmarks.__main__ import flops_per_agent_step, matmul_rate
fast = train_throughput.measure({fast!r}, 512, 10, 3)
course = train_throughput.measure({course!r}, None, 2, 1)
rate = matmul_rate(200)["flops_per_second"]
ceiling = rate / flops_per_agent_step({fast!r})["flops_per_agent_step"]
print(json.dumps({{"fast_train": fast["agent_steps_per_second"],
                  "fast_fraction": fast["agent_steps_per_second"] / ceiling, "matmul_flops": rate,
                  "course_train": course["agent_steps_per_second"]}}))
"""

FIGURES = (("env_4096", "env only, 4096 robots (agent-steps/s)", "higher"),
           ("env_4096_two_devices", "env only, 4096 robots over 2 host devices (agent-steps/s)", "higher"),
           ("fast_train", "fast-config training (agent-steps/s)", "higher"),
           ("fast_fraction", "fast-config training / NN-FLOP ceiling", "higher"),
           ("matmul_flops", "float32 matmul rate (FLOP/s)", "higher"),
           ("course_train", "course-config training (agent-steps/s)", "higher"),
           ("cold_first_summary", "cold launch → first summary (s)", "lower"),
           ("warm_first_summary", "warm launch → first summary (s)", "lower"),
           ("warm_solved", "warm launch → solved (s)", "lower"),
           ("warm_exit", "warm launch → exit, 2 M steps (s)", "lower"))


# Also run in a child inside one checkout: its env and runner, split over two host devices by this checkout's harness.
SPLIT_ENV = CPU_SETUP + """
import importlib.util, json, jax
jax.config.update("jax_num_cpu_devices", 2)
import envs
from benchmarks import env_throughput
from benchmarks.machine import compile_and_time
spec = importlib.util.spec_from_file_location("harness_env_throughput", {harness!r})
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)
env = envs.make("MobileRobot")
steps = 4_000_000 // 4096
runner, keys = harness.split_over_devices(env_throughput.make_runner(env, env.default_params, 2048, steps),
                                          jax.random.PRNGKey(1), 2)
print(json.dumps({{"env_4096_two_devices": 4096 * steps / compile_and_time(runner, (keys,), 5)[1]}}))
"""


def child_figures(repo: Path, code: str) -> dict:
    """The figures that ``code`` prints as its last line, run in a child inside the checkout ``repo``."""
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=startup.child_env(repo), check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def env_figures(repo: Path) -> dict:
    return {**child_figures(repo, ENV.format()),
            **child_figures(repo, SPLIT_ENV.format(harness=str(REPO / "benchmarks" / "env_throughput.py")))}


def training_figures(repo: Path) -> dict:
    return child_figures(repo, TRAINING.format(fast=FAST, course=COURSE))


def launches(repo: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="rlrobot-against-") as tmp:
        cold = startup.launch(repo / FAST, repo, Path(tmp) / "cache", Path(tmp) / "results", "cold", ["--seed=0"],
                              "exit", 600)
        warm = startup.launch(repo / FAST, repo, Path(tmp) / "cache", Path(tmp) / "results", "warm", ["--seed=0"],
                              "exit", 600)
    return {"cold_first_summary": cold.first_summary, "warm_first_summary": warm.first_summary,
            "warm_solved": warm.solved, "warm_exit": warm.exit}


GROUPS = {"env": env_figures, "training": training_figures, "launches": launches}


def measure(checkouts: dict[str, Path], rounds: int, groups: tuple[str, ...] = tuple(GROUPS)) -> dict[str, dict]:
    """Every figure of ``groups`` for each checkout, once per round, the checkouts' order reversed every other round:
    ``{checkout: {figure: [value per round]}}``."""
    figures: dict[str, dict[str, list]] = {name: {} for name in checkouts}
    for round_index in range(rounds):
        order = list(checkouts.items())
        for name, repo in order if round_index % 2 == 0 else order[::-1]:
            print(f"round {round_index + 1}: {name} (load {startup.load_average():.1f})", flush=True)
            for group in groups:
                for key, value in GROUPS[group](repo).items():
                    figures[name].setdefault(key, []).append(value)
    return figures


def median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def table(figures: dict[str, dict[str, list]], baseline: str, current: str) -> str:
    lines = [f"| figure | {baseline} | {current} | ratio (better > 1) |", "|---|---:|---:|---:|"]
    for key, label, better in FIGURES:
        if key not in figures[baseline] and key not in figures[current]:
            continue  # a group not measured
        old, new = median(figures[baseline].get(key, [])), median(figures[current].get(key, []))
        ratio = None if not old or not new else (new / old if better == "higher" else old / new)
        cells = [f"{v:,.3g}" if v is not None and v < 100 else (f"{v:,.0f}" if v is not None else "—")
                 for v in (old, new)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {'—' if ratio is None else f'{ratio:.2f}×'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, help="a git revision of this repository")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=tuple(GROUPS), default=list(GROUPS),
                        help="measure only these groups of figures (default: all)")
    parser.add_argument("--json", help="also write every measurement here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rlrobot-baseline-") as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.baseline],
                       check=True, capture_output=True)
        try:
            figures = measure({args.baseline: worktree, "this checkout": REPO}, args.rounds, tuple(args.only))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
    print(table(figures, args.baseline, "this checkout"))
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": args.baseline, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
