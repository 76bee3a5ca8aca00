"""Env-only and env + inference agent-steps/s against the number of robots, for each scene.

Each point is ``benchmarks.env_throughput.measure`` / ``benchmarks.inference_throughput.measure`` (one jitted scan
of vmapped steps, median of timed runs after a warm-up, compile timed apart; the inference column acts with the fast
config's policy network). The count starts at ``sizes.robots_start`` and doubles until a doubling gains less than
``sizes.min_gain`` (throughput saturated), XLA runs out of memory (``RESOURCE_EXHAUSTED``, recorded), the cap
``sizes.robots_max`` is reached or the column's share of the section's time is spent.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable

import envs
from benchmarks import env_throughput, inference_throughput
from benchmarks.device.sizes import FAST_CONFIG, REPO, SCENES, Sizes
from benchmarks.device.suite import Budget, is_out_of_memory, log

COLUMNS = ("env", "inference")


def agent_steps_for(n: int, rate: float | None, sizes: Sizes) -> int:
    """Agent-steps of a timed run at ``n`` robots: about ``sizes.sweep_run_s`` at ``rate`` (the last point's), at
    least 16 steps of every robot, at most ``sizes.sweep_agent_steps`` (16 steps when no rate is known yet)."""
    if rate is None:
        return 16 * n
    return int(max(16 * n, min(sizes.sweep_agent_steps, rate * sizes.sweep_run_s)))


def sweep(measure: Callable[[int, int], dict], sizes: Sizes, seconds: float, label: str) -> dict:
    """Rows of ``measure(robots, agent_steps)`` for doubling robot counts, and why the sweep stopped. A first probe
    of 16 steps at the start count gives the rate that sizes the timed runs, so a point takes about as long on any
    device."""
    end = time.perf_counter() + seconds
    rows: list[dict] = []
    stop, failure, next_cost, rate = None, None, 0.0, None
    n = sizes.robots_start
    while stop is None:
        if n > sizes.robots_max:
            stop = f"cap of {sizes.robots_max:,} robots"
            break
        if rows and time.perf_counter() + next_cost > end:
            stop = f"time spent ({seconds:.0f} s for this column)"
            break
        log(f"{label}, {n:,} robots")
        t0 = time.perf_counter()
        try:
            if rate is None and sizes.sweep_run_s > 0:
                rate = measure(n, 16 * n)["agent_steps_per_second"]
            row = measure(n, agent_steps_for(n, rate, sizes))
        except Exception as error:  # noqa: BLE001 - out of memory ends the sweep; so does any other failure
            failure = {"num_envs": n, "error": f"{type(error).__name__}: {error}"[:1000],
                       "out_of_memory": is_out_of_memory(error)}
            stop = f"{'out of memory' if failure['out_of_memory'] else 'failed'} at {n:,} robots"
            gc.collect()
            break
        row["wall_s"] = time.perf_counter() - t0
        next_cost = 1.5 * row["wall_s"]
        rate = row["agent_steps_per_second"]
        best = max((r["agent_steps_per_second"] for r in rows), default=None)
        rows.append(row)
        if best is not None and row["agent_steps_per_second"] < sizes.min_gain * best:
            stop = f"saturated: {n:,} robots gained less than {sizes.min_gain - 1:.0%} over {n // 2:,}"
        n *= 2
    peak = max(rows, key=lambda r: r["agent_steps_per_second"], default=None)
    return {"rows": rows, "stopped": stop, "failure": failure,
            "peak": None if peak is None else {"num_envs": peak["num_envs"],
                                               "agent_steps_per_second": peak["agent_steps_per_second"]}}


def scene_columns(scene: str, sizes: Sizes) -> tuple[str, dict[str, Callable[[int, int], dict]]]:
    """The scene's policy network and its two columns' ``measure(robots)``."""
    env = envs.make(scene)
    params = env.default_params
    spec = inference_throughput.network_spec(str(REPO / FAST_CONFIG), env)

    def env_only(n: int, agent_steps: int) -> dict:
        return env_throughput.measure(env, params, n, agent_steps, sizes.repeats)

    def with_policy(n: int, agent_steps: int) -> dict:
        return inference_throughput.measure(env, params, n, agent_steps, sizes.repeats, spec)

    return f"{spec.num_layers}x{spec.hidden_units}", {"env": env_only, "inference": with_policy}


def measure(sizes: Sizes, budget: Budget, scenes: tuple[str, ...] = SCENES) -> dict:
    """Both columns for every scene; each of the ``scenes × columns`` sweeps gets an equal part of the time left."""
    result = {}
    parts = len(scenes) * len(COLUMNS)
    for scene in scenes:
        network, columns = scene_columns(scene, sizes)
        result[scene] = {"network": network}
        for column in COLUMNS:
            result[scene][column] = sweep(columns[column], sizes, budget.sub(parts), f"{scene} {column}")
            parts -= 1
    return result
