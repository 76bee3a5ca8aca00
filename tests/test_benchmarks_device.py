"""The GPU suite (``python -m benchmarks.device``): ``--smoke`` end to end on the CPU (about a minute on 2 cores), the
section runner's failure and budget paths, the robot sweep's stop rules, the timing split against the iteration, the
GPU config, the offline wheel installer and the report without matplotlib."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from benchmarks.device import offline, report, suite
from benchmarks.device.sizes import COURSE_CONFIG, GPU_CONFIG, SMOKE, smoke_config
from benchmarks.device.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [name for name, _ in suite.SECTIONS]


def run_suite(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.device", "--smoke", "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_smoke_suite_writes_every_section(tmp_path):
    out = tmp_path / "device"
    proc = run_suite(out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / "device.json").read_text())
    assert result["mode"] == "smoke" and result["machine"]["backend"] == "cpu"
    assert list(result["sections"]) == SECTIONS
    assert {name: s["status"] for name, s in result["sections"].items()} == dict.fromkeys(SECTIONS, "ok")
    sections = {name: s["result"] for name, s in result["sections"].items()}

    assert all(r["flops_per_second"] > 0 for r in sections["matmul"]["rows"])
    assert {r["dtype"] for r in sections["matmul"]["rows"]} == {"float32", "bfloat16"}

    solve = sections["time_to_solve"]
    assert solve["config"] == GPU_CONFIG and solve["compile_s"] > 0 and solve["steps"] > 0 and solve["curve"]
    assert solve["final"]["episodes"] > 0 and 0.0 <= solve["final"]["success_rate"] <= 1.0

    training = sections["training"]
    assert [r["config"] for r in training["rows"]] == [GPU_CONFIG, COURSE_CONFIG, "configs/MobileRobot-fast.yaml"]
    assert all(r["steady"] for r in training["rows"])
    assert all(r["agent_steps_per_second"] > 0 and r["compile_s"] > 0 for r in training["rows"])
    assert all(0 < c["fraction"] and c["ceiling_agent_steps_per_second"] > 0 for c in training["ceiling"])
    assert not training["failures"]

    for scene in ("MobileRobot", "MobileRobotObstacles"):
        for column in ("env", "inference"):
            rows = sections["env_sweep"][scene][column]["rows"]
            assert rows and all(r["agent_steps_per_second"] > 0 for r in rows), (scene, column)
            assert rows[0]["num_envs"] == SMOKE.robots_start

    (split_row,) = sections["split"]["rows"]
    assert split_row["config"] == GPU_CONFIG and split_row["whole_s"] > 0
    assert all(split_row["parts_s"][p] > 0 for p in ("rollout", "gae", "update"))
    assert sum(split_row["fractions"].values()) == pytest.approx(1.0)

    seeds = sections["seeds"]
    assert seeds["seeds"] == 2 and seeds["rows"][0]["agent_steps_per_second"] > 0

    goals = {g["goal"]: g for g in result["goals"]}
    assert len(goals) == 6 and all(g["met"] is not None for g in goals.values())  # all measured (tiny: not met)

    text = (out / "device.md").read_text()
    assert "Smoke run" in text and "## Goals" in text and "## Time to solve" in text
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files)
    assert {"device.json", "device.md", "device.log"} <= set(files)
    if report_has_matplotlib():
        assert {"throughput.png", "training.png", "split.png", "time_to_solve.png"} <= set(files)


def report_has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_a_failing_section_is_recorded_and_the_suite_goes_on(tmp_path):
    seen = {}

    def after(budget):
        seen["json"] = json.loads((tmp_path / "device.json").read_text())  # written before this section started
        return {"value": 1}

    runner = suite.Suite(tmp_path, 100.0, {"mode": "test"}, lambda result, out: None, inject_failure="matmul",
                         min_section_s=0.0)
    result = runner.run({"matmul": lambda budget: {"never": True}, "training": after,
                         "seeds": lambda budget: 1 / 0})
    sections = result["sections"]
    assert sections["matmul"]["status"] == "error" and "injected" in sections["matmul"]["error"]
    assert seen["json"]["sections"]["matmul"]["status"] == "error"
    assert sections["training"]["status"] == "ok" and sections["training"]["result"] == {"value": 1}
    assert sections["seeds"]["status"] == "error" and "ZeroDivisionError" in sections["seeds"]["error"]
    assert "Traceback" in sections["seeds"]["traceback"]
    assert json.loads((tmp_path / "device.json").read_text())["sections"]["seeds"]["status"] == "error"


def test_sections_share_the_budget_and_are_skipped_when_it_is_spent(tmp_path):
    runner = suite.Suite(tmp_path, 0.0, {"mode": "test"}, lambda result, out: None)
    result = runner.run({"matmul": lambda budget: 1})
    assert result["sections"]["matmul"]["status"] == "skipped"
    budget = suite.Budget(100.0)
    assert budget.begin(0.25, 1.0) == pytest.approx(25.0, abs=0.1)
    assert 0 < budget.sub(2) <= 12.5


def test_out_of_memory_is_recognised():
    assert suite.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8GiB"))
    assert not suite.is_out_of_memory(ValueError("shapes do not match"))


def fake_rates(rates: dict[int, float], error_at: int | None = None, calls: list | None = None):
    def measure(n: int, agent_steps: int) -> dict:
        if calls is not None:
            calls.append((n, agent_steps))
        if n == error_at:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating")
        return {"num_envs": n, "agent_steps_per_second": rates[n]}
    return measure


def test_sweep_doubles_until_throughput_saturates():
    sizes = dataclasses.replace(SMOKE, robots_start=4, robots_max=1024)
    result = sweep(fake_rates({4: 1.0, 8: 2.0, 16: 3.0, 32: 3.2, 64: 9.0}), sizes, 100.0, "test")
    assert [r["num_envs"] for r in result["rows"]] == [4, 8, 16, 32]
    assert result["stopped"].startswith("saturated") and result["peak"]["num_envs"] == 32


def test_sweep_sizes_each_run_from_a_probe_and_the_last_rate():
    sizes = dataclasses.replace(SMOKE, robots_start=4, robots_max=8, sweep_run_s=2.0, sweep_agent_steps=10_000)
    calls = []
    sweep(fake_rates({4: 100.0, 8: 1000.0}, calls=calls), sizes, 100.0, "test")
    assert calls == [(4, 64), (4, 200), (8, 200)]   # probe: 16 steps; then 2 s at the last point's rate


def test_sweep_records_out_of_memory_and_the_cap():
    sizes = dataclasses.replace(SMOKE, robots_start=4, robots_max=16)
    oom = sweep(fake_rates({4: 1.0, 8: 2.0}, error_at=16), sizes, 100.0, "test")
    assert [r["num_envs"] for r in oom["rows"]] == [4, 8] and oom["stopped"] == "out of memory at 16 robots"
    assert oom["failure"]["out_of_memory"]
    capped = sweep(fake_rates({4: 1.0, 8: 2.0, 16: 4.0}), sizes, 100.0, "test")
    assert len(capped["rows"]) == 3 and capped["stopped"].startswith("cap")
    timed_out = sweep(fake_rates({4: 1.0, 8: 2.0}), sizes, -1.0, "test")
    assert len(timed_out["rows"]) == 1 and timed_out["stopped"].startswith("time spent")


def test_split_parts_compose_to_the_iteration(tmp_path):
    from benchmarks.device.split import split_iteration
    from rlrobot.config import load_run_settings
    from rlrobot.train import iteration
    from rlrobot.trainer import build_jax_trainer

    trainer = build_jax_trainer(load_run_settings(smoke_config("configs/MobileRobot-fast.yaml", tmp_path)), devices=1)
    state = trainer.init_state(3)
    whole, _ = jax.jit(lambda s: iteration(trainer.env, trainer.env_params, trainer.spec, s))(state)
    parts = jax.jit(lambda s: split_iteration(trainer, s))(state)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(parts)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-6)


def test_gpu_config_loads_with_many_robots_and_comments_each_change():
    from rlrobot.config import load_run_settings
    from rlrobot.trainer import build_jax_trainer

    spec = build_jax_trainer(load_run_settings(GPU_CONFIG), devices=1).spec
    assert spec.num_envs >= 4096 and spec.batch_size >= 16384 and spec.steps_per_iteration >= 2**18
    gpu_text = (ROOT / GPU_CONFIG).read_text().splitlines()
    gpu, course = (yaml.safe_load((ROOT / c).read_text()) for c in (GPU_CONFIG, COURSE_CONFIG))

    def leaves(tree, prefix=()):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, (*prefix, key))
            else:
                yield (*prefix, key), value

    course_values = dict(leaves(course))
    for path, value in leaves(gpu):
        if course_values.get(path, object()) != value:
            line = next(line for line in gpu_text if line.strip().startswith(f"{path[-1]}:"))
            assert "#" in line, f"{'.'.join(path)} differs from the course YAML without a comment saying why"


def test_smoke_config_caps_sizes(tmp_path):
    data = yaml.safe_load(Path(smoke_config(COURSE_CONFIG, tmp_path)).read_text())
    behavior = data["behaviors"]["MobileRobot"]
    assert behavior["hyperparameters"]["buffer_size"] <= 256 and behavior["network_settings"]["num_layers"] == 3
    assert data["env_settings"]["num_envs"] <= 32


def make_wheel(folder: Path, name: str, tag: str = "py3-none-any") -> Path:
    wheel = folder / f"{name}-1.0-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        archive.writestr(f"{name}-1.0.data/purelib/{name}_extra.py", "EXTRA = 1\n")
    return wheel


def test_offline_installer_unpacks_only_what_is_missing(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    make_wheel(wheels, "rlrobot_fake_pkg")
    make_wheel(wheels, "numpy")  # numpy is importable: never unpacked over it
    needed = {"rlrobot_fake_pkg": ("rlrobot-fake-pkg", "x"), "numpy": ("numpy", "numpy"),
              "rlrobot_absent": ("rlrobot-absent", "y")}
    done = offline.install(wheels, target, needed)
    assert done["rlrobot_fake_pkg"].startswith("installed") and done["numpy"] == "already importable"
    assert done["rlrobot_absent"].startswith("MISSING")
    assert (target / "rlrobot_fake_pkg" / "__init__.py").is_file() and (target / "rlrobot_fake_pkg_extra.py").is_file()
    assert not (target / "numpy").exists() and not list(target.glob("*.data"))


def test_offline_wheel_tags():
    assert offline.fits(Path("protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl"), (3, 12))
    assert not offline.fits(Path("protobuf-7.36.2-cp313-abi3-manylinux2014_x86_64.whl"), (3, 12))
    assert offline.fits(Path("tensorboardx-2.6.5-py3-none-any.whl"), (3, 12))
    assert not offline.fits(Path("x-1.0-cp311-cp311-manylinux2014_x86_64.whl"), (3, 12))
    assert not offline.fits(Path("x-1.0-cp312-abi3-macosx_11_0_arm64.whl"), (3, 12))


def test_offline_run_script_installs_and_passes_arguments_on(tmp_path):
    """run.sh with no wheels on a Python that has everything: nothing to unpack, then the suite's --help."""
    proc = subprocess.run([str(ROOT / "benchmarks/device/run.sh"), "--help"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": sys.executable,
                                            "RLROBOT_WHEELS": str(tmp_path / "none"),
                                            "RLROBOT_SITE": str(tmp_path / "site")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--budget" in proc.stdout and "already importable" in proc.stderr


def test_report_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    note = report.write_plots({"sections": {}}, tmp_path)
    assert note.startswith("none: matplotlib is not installed") and not list(tmp_path.glob("*.png"))
