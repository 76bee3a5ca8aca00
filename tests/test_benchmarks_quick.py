"""``python -m benchmarks --quick`` runs end to end and writes its JSON, Markdown and plot (about 40 s on 2 cores)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_results(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert proc.returncode == 0, proc.stderr[-4000:]

    result = json.loads((out / "results.json").read_text())
    from benchmarks.__main__ import MODES

    counts = MODES["quick"]["counts"]
    assert result["robot_counts"] == counts
    columns = result["columns"]
    for name in ("env", "inference"):
        by_count = {r["num_envs"]: r for r in columns[name]}
        assert sorted(by_count) == counts, name
        assert all(r["agent_steps_per_second"] > 0 and r["compile_s"] >= 0 for r in by_count.values()), name
    trained = {r["num_envs"]: r for r in columns["train"]}
    assert sorted(trained) == MODES["quick"]["train_counts"]
    assert all(r["agent_steps_per_second"] > 0 for r in trained.values())
    assert all(r["agent_steps_per_second"] > 0 for r in columns["numpy"]) and columns["numpy"]
    assert result["matmul"]["flops_per_second"] > 0
    assert result["torch"] is None and result["sb3"] is None  # training baselines: full mode only (need torch, sb3)
    unity = result["unity"]   # the protocol path: mlagents-envs (dev extra) to the stand-in player
    assert [r["num_envs"] for r in unity["rows"]] == [1, 16, 64]
    assert all(r["agent_steps_per_second"] > 0 and r["jax_agent_steps_per_second"] > 0 for r in unity["rows"])
    ceiling = result["ceiling"][0]
    assert ceiling["ceiling_agent_steps_per_second"] > 0 and ceiling["fraction"] > 0

    png = out / "throughput.png"
    assert png.is_file() and png.stat().st_size > 0
    md = (out / "results.md").read_text()
    machine = result["machine"]
    assert machine["cpu"] in md and machine["backend"] in md and machine["date"] in md
    assert md.strip() in proc.stdout
