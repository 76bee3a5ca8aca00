"""How much work each section does: the full sizes for an accelerator, or ``--smoke`` sizes that run the same code on
a CPU in seconds (configs shrunk into a temporary folder)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
FAST_CONFIG = "configs/MobileRobot-fast.yaml"
COURSE_CONFIG = "configs/MobileRobot.yaml"
GPU_CONFIG = "configs/MobileRobot-gpu.yaml"
TRAIN_CONFIGS = (GPU_CONFIG, COURSE_CONFIG, FAST_CONFIG)   # most wanted first: a short budget drops the last
SCENES = ("MobileRobot", "MobileRobotObstacles")


@dataclass(frozen=True)
class Sizes:
    """One mode's sizes. Every timed run is the median of ``repeats`` after a warm-up; compiles are timed apart."""

    name: str
    robots_start: int            # the robot-count sweep starts here and doubles
    robots_max: int              # ... and never goes past this
    sweep_agent_steps: int       # at most this many agent-steps per timed sweep run (at least 16 steps per robot)
    sweep_run_s: float           # ... and about this long a run (0: 16 steps per robot, no probe)
    repeats: int
    min_gain: float              # the sweep stops at the first doubling that gains less than this factor
    matmul: tuple[tuple[int, int, int], ...]   # (rows, width, iterations) per shape
    train_seconds: float         # a timed training call runs about this long (at least one iteration)
    max_train_iterations: int
    seeds_iterations: int
    validation_episodes: int
    validation_max_steps: int
    split_configs: tuple[str, ...]   # configs the timing split and the seeds section measure
    seeds_configs: tuple[str, ...]
    smoke: bool


FULL = Sizes(name="full", robots_start=4096, robots_max=2**25, sweep_agent_steps=2**28, sweep_run_s=0.25,
             repeats=3, min_gain=1.10, matmul=((2048, 512, 200), (8192, 4096, 50)), train_seconds=1.0,
             max_train_iterations=1000, seeds_iterations=5, validation_episodes=1000, validation_max_steps=1000,
             split_configs=TRAIN_CONFIGS, seeds_configs=(FAST_CONFIG, GPU_CONFIG), smoke=False)
# On a CPU the big matmul alone would take minutes: the full mode measures the CPU's shape only.
FULL_CPU_MATMUL = ((2048, 512, 200),)
# --smoke: every code path once, in about a minute on 2 cores (the compiles are most of it).
SMOKE = Sizes(name="smoke", robots_start=64, robots_max=64, sweep_agent_steps=2**12, sweep_run_s=0.0,
              repeats=1, min_gain=1.10, matmul=((128, 64, 4),), train_seconds=0.0, max_train_iterations=1,
              seeds_iterations=1, validation_episodes=64, validation_max_steps=1000, split_configs=(GPU_CONFIG,),
              seeds_configs=(FAST_CONFIG,), smoke=True)

# --smoke: each config keeps its keys and semantics, at these sizes at most.
SMOKE_LIMITS = {"buffer_size": 256, "batch_size": 128, "hidden_units": 32, "time_horizon": 16, "max_steps": 1024,
                "summary_freq": 256, "num_envs": 32}


def sizes_for(smoke: bool, backend: str) -> Sizes:
    if smoke:
        return SMOKE
    if backend == "cpu":
        import dataclasses

        return dataclasses.replace(FULL, matmul=FULL_CPU_MATMUL)
    return FULL


def smoke_config(path: str, folder: Path) -> str:
    """``path`` rewritten into ``folder`` with every size capped at ``SMOKE_LIMITS`` (same file name)."""
    data = yaml.safe_load((REPO / path).read_text())
    cap = SMOKE_LIMITS
    for behavior in data["behaviors"].values():
        hp = behavior.setdefault("hyperparameters", {})
        hp["buffer_size"] = min(hp.get("buffer_size", cap["buffer_size"]), cap["buffer_size"])
        hp["batch_size"] = min(hp.get("batch_size", cap["batch_size"]), cap["batch_size"])
        net = behavior.setdefault("network_settings", {})
        net["hidden_units"] = min(net.get("hidden_units", cap["hidden_units"]), cap["hidden_units"])
        for key in ("time_horizon", "max_steps", "summary_freq"):
            behavior[key] = min(behavior.get(key, cap[key]), cap[key])
        behavior["checkpoint_interval"] = behavior["max_steps"]
    env = data.setdefault("env_settings", {}) or {}
    env["num_envs"] = min(env.get("num_envs") or cap["num_envs"], cap["num_envs"])
    data["env_settings"] = env
    out = folder / Path(path).name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(out)


def configs(smoke: bool, folder: Path) -> dict[str, str]:
    """Each training config's name as reported -> the file the suite loads (a shrunk copy under ``--smoke``)."""
    return {c: smoke_config(c, folder) if smoke else str(REPO / c) for c in TRAIN_CONFIGS}
