"""What every benchmark shares: the machine stamp, median timing and the throughput table."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from typing import Callable

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


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls, after one warm-up call (``run`` must block)."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput_table(rows: list[dict]) -> str:
    """``| robots | agent-steps/s | run (s) | compile (s) |``; a compile time of None prints as "—"."""
    lines = ["| robots | agent-steps/s | run (s) | compile (s) |", "|---:|---:|---:|---:|"]
    for r in rows:
        compile_s = "—" if r["compile_s"] is None else f"{r['compile_s']:.2f}"
        lines.append(f"| {r['num_envs']} | {r['agent_steps_per_second']:,.0f} | {r['seconds']:.3f} | {compile_s} |")
    return "\n".join(lines)
