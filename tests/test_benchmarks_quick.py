"""``python -m benchmarks --quick`` runs end to end and writes its JSON, Markdown and plot (about 40 s on 2 cores);
the benchmarks package imports no module that imports it back (lazy imports inside functions included)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "benchmarks"


def module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` statement anywhere in ``path`` names (``from a import b`` names ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(filter(None, [PACKAGE if node.level else None, node.module]))
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def benchmarks_import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (self-imports left out)."""
    modules = {module_name(path): path for path in (ROOT / PACKAGE).glob("*.py")}
    return {name: (imported_modules(path) & modules.keys()) - {name} for name, path in modules.items()}


def test_benchmarks_import_graph_is_acyclic():
    graph = benchmarks_import_graph()
    assert "benchmarks.torch_ppo" in graph["benchmarks.time_to_solve"]  # lazy imports in functions are counted
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(f"import cycle in benchmarks: {' -> '.join(error.args[1])}")


def test_quick_benchmark_writes_results(tmp_path):
    pytest.importorskip("matplotlib")
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
