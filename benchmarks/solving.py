"""What the time-to-solve benchmark and the training baselines (``torch_ppo``, ``sb3_ppo``) share.

The solved criterion, one seed's ``rlrobot-learn`` run (``learn_seed``), the training curve of episodes
(``EpisodeLog``), the first-episode validation in the NumPy port
(``first_episodes_numpy``), the shapes a baseline takes from a config (``baseline_spec``), the baselines' command line
and the methods table. It imports no other benchmark that uses it, so ``benchmarks.time_to_solve`` can run the
baselines and the baselines can use these pieces without an import cycle.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rlrobot.config import load_run_settings
from rlrobot.train import TrainSpec
from rlrobot.trainer import build_jax_trainer, choose_behavior, resolve_num_envs

SOLVED_SUCCESS, SOLVED_RETURN = 0.99, 7.8
VALIDATION_EPISODES, VALIDATION_MAX_STEPS = 1000, 1000
BASELINE_CONFIGS = ["configs/MobileRobot-fast.yaml", "configs/MobileRobot.yaml"]


def is_solved(final: dict) -> bool:
    return final["success_rate"] >= SOLVED_SUCCESS and final["mean_return"] >= SOLVED_RETURN


class EpisodeLog:
    """The training curve as rlrobot's summaries count it: episodes that ended since the last summary."""

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs, np.float64)
        self.curve: list[dict] = []
        self.episodes = self.successes = 0
        self.return_sum = 0.0

    def record(self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """One step of every robot (``terminated``: reached the goal; ``truncated``: time limit)."""
        self.returns += reward
        done = np.asarray(terminated) | np.asarray(truncated)
        self.episodes += int(np.count_nonzero(done))
        self.successes += int(np.count_nonzero(terminated))
        self.return_sum += float(self.returns[done].sum())
        self.returns[done] = 0.0

    def summary(self, step: int, seconds: float) -> dict:
        n = self.episodes
        point = {"step": int(step), "seconds": seconds, "success_rate": self.successes / n if n else None,
                 "mean_reward": self.return_sum / n if n else None}
        self.curve.append(point)
        self.episodes = self.successes = 0
        self.return_sum = 0.0
        return point


def first_episodes_numpy(act: Callable[[np.ndarray], np.ndarray], episodes: int = VALIDATION_EPISODES,
                         max_steps: int = VALIDATION_MAX_STEPS, seed: int = 0) -> dict:
    """``rlrobot-validate``'s evaluation in the NumPy port: each robot's first episode under ``act(obs) -> actions``."""
    from envs.numpy_robot import NumpyMobileRobot
    from rlrobot.validate import episode_summary

    env = NumpyMobileRobot(episodes, seed=seed)
    obs = env.reset()
    success, finished = np.zeros(episodes, bool), np.zeros(episodes, bool)
    returns, lengths = np.zeros(episodes), np.zeros(episodes)
    for _ in range(max_steps):
        active = ~finished
        obs, reward, terminated, truncated, _ = env.step(act(obs))
        returns += np.where(active, reward, 0.0)
        lengths += active
        success |= active & terminated
        finished |= active & (terminated | truncated)
        if finished.all():
            break
    summary = episode_summary(success[finished], returns[finished], lengths[finished])
    summary["unfinished"] = int((~finished).sum())
    return summary


def solved_from(curve: list[dict]) -> dict | None:
    """The first summary from which every summary shows ≥ 99% success and mean reward ≥ 7.8, if any.

    Not simply the first such summary: the first summaries only count the episodes that ended quickly, which are
    the lucky successes (a random policy's first summary scores 100%).
    """
    start = None
    for p in curve:
        ok = p["success_rate"] is not None and p["success_rate"] >= SOLVED_SUCCESS and p["mean_reward"] >= SOLVED_RETURN
        start = (start or p) if ok else None
    return start


def baseline_spec(config: str, num_envs: int | None = None) -> TrainSpec:
    """rlrobot's spec for ``config`` (``trainer.build_jax_trainer``) as it would train on a CPU, where the baselines
    run: ``num_envs`` robots, by default the YAML's, else the CPU default."""
    settings = load_run_settings(config)
    behavior = choose_behavior(settings)
    robots = num_envs or resolve_num_envs(settings, settings.behavior(behavior), backend="cpu")
    return build_jax_trainer(settings, behavior, num_envs=robots, devices=1).spec


def baseline_parser(description: str, compare_help: str) -> argparse.ArgumentParser:
    """The command line the training baselines share: throughput per config, or ``--solve`` to a budget."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--configs", nargs="+", default=BASELINE_CONFIGS)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--compare", action="store_true", help=compare_help)
    parser.add_argument("--solve", action="store_true", help="time to solve the first config instead of throughput")
    parser.add_argument("--budget", type=float, default=600.0, help="--solve: wall-clock seconds to train at most")
    parser.add_argument("--seed", type=int, default=0, help="--solve: seed")
    return parser


def print_time_to_solve(args: argparse.Namespace, time_to_solve: Callable[..., dict]) -> None:
    """``--solve``: one baseline's time to solve, as a row of the methods table."""
    result = with_load(lambda: time_to_solve(args.configs[0], args.seed, args.budget, threads=args.threads))
    print("\n".join(methods_table([result], args.budget)))


def learn_seed(config: str, seed: int, scratch: Path) -> tuple[Path, float, float]:
    """Train ``config`` with ``seed`` as ``rlrobot-learn`` does, into ``scratch/seed<seed>``: the run folder, the
    command's wall seconds and the compile seconds its timers recorded."""
    from rlrobot.cli import main as learn

    t0 = time.perf_counter()
    code = learn([config, f"--run-id=seed{seed}", "--force", f"--seed={seed}", "--results-dir", str(scratch)])
    wall_s = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"rlrobot-learn exited with {code} for seed {seed}")
    run = scratch / f"seed{seed}"
    timers = json.loads((run / "run_logs" / "timers.json").read_text())
    return run, wall_s, timers["children"]["compile"]["total"]


def with_load(run: Callable[[], dict]) -> dict:
    """``run()``'s result with the 1-minute load average before and after it."""
    before = os.getloadavg()[0]
    result = run()
    result["load_before"], result["load_after"] = before, os.getloadavg()[0]
    return result


def methods_table(results: list[dict], budget_s: float) -> list[str]:
    lines = ["| method | seed | summaries ≥ 99% success, reward ≥ 7.8 from | trained | final: success [95% CI] | "
             "final: mean return | solved | load before → after |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        f, hit = r["final"], solved_from(r["curve"])
        lo, hi = f["success_rate_ci95"]
        first = "—" if hit is None else f"{hit['seconds']:.1f} s ({hit['step'] / 1e6:.2f} M steps)"
        solved = f"yes, {r['train_seconds']:.0f} s" if r["solved"] and r["train_seconds"] <= budget_s \
            else f"not solved in {budget_s:.0f} s"
        if not r["solved"] and not r.get("out_of_time", True):
            solved += f" (all {r['steps'] / 1e6:.2f} M steps done at {r['train_seconds']:.0f} s)"
        load = f"{r['load_before']:.2f} → {r['load_after']:.2f}" if "load_before" in r else "—"
        lines.append(f"| {r['method']} | {r['seed']} | {first} | {r['steps'] / 1e6:.2f} M steps, "
                     f"{r['train_seconds']:.1f} s | {f['success_rate']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{f['mean_return']:.2f} | {solved} | {load} |")
    return lines
