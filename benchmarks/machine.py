"""What every benchmark shares: the machine stamp, median timing and the throughput table."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    devices = jax.devices()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": [d.device_kind for d in devices],
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def report(title: str, table: str, json_path: str | None, **results: Any) -> None:
    """Print ``title`` stamped with this machine, then ``table``; with ``json_path``, also write ``results`` and the
    machine there as JSON."""
    info = machine_info()
    print(f"{title} — {info['cpu']} ({info['cores']} cores), {info['backend']}, JAX {info['jax']}, {info['date']}")
    print(table)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": info, **results}, f, indent=2)


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls, after one warm-up call (``run`` must block)."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compile_and_time(jitted: Any, args: tuple, repeats: int) -> tuple[float, float]:
    """Compile a jitted function ahead of time for ``args``, then time it: ``(compile seconds, median run seconds)``."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    return compile_s, median_seconds(lambda: jax.block_until_ready(compiled(*args)), repeats)


def throughput_row(num_envs: int, steps: int, seconds: float, compile_s: float | None) -> dict:
    """One row of a throughput table: ``steps`` steps of ``num_envs`` robots took ``seconds``."""
    return {"num_envs": num_envs, "steps": steps, "agent_steps": steps * num_envs, "seconds": seconds,
            "agent_steps_per_second": steps * num_envs / seconds, "compile_s": compile_s}


def throughput_table(rows: list[dict]) -> str:
    """``| robots | agent-steps/s | run (s) | compile (s) |``; a compile time of None prints as "—"."""
    lines = ["| robots | agent-steps/s | run (s) | compile (s) |", "|---:|---:|---:|---:|"]
    for r in rows:
        compile_s = "—" if r["compile_s"] is None else f"{r['compile_s']:.2f}"
        lines.append(f"| {r['num_envs']} | {r['agent_steps_per_second']:,.0f} | {r['seconds']:.3f} | {compile_s} |")
    return "\n".join(lines)
