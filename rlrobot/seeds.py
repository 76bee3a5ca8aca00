"""Many runs in one program: ``--seeds K`` and ``--sweep FILE``, their folders, and the summary across them.

Each run (a *member*) is a plain run of its own (``results/<run-id>/seed-<k>/`` or ``sweep-<j>[/seed-<k>]``, with
the usual layout and a ``configuration.yaml`` that reproduces it alone); the trainer vmaps them into one compile.
The summary (``summary/<group>/`` TensorBoard + ``metrics.jsonl``, and ``seeds_summary.json``) gives the mean and
standard deviation across the seeds of each group. Host-side only: no JAX import.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlrobot.config import ConfigError, RunSettings, load_yaml, read_yaml_text, show, show_key
from rlrobot.limits import MAX_RUNS
from rlrobot.summaries import SummaryWriter, _write_json_atomically

# The hyperparameters a sweep may vary (all numbers, traced in the compiled program): see train.Hyperparams.
SWEEPABLE = ("learning_rate", "beta", "epsilon", "lambd", "gamma")
SUMMARY_NAME = "seeds_summary.json"


@dataclasses.dataclass(frozen=True)
class Member:
    """One run among those trained together."""

    name: str                  # folder under results/<run-id>/ ("" for a plain run)
    seed: int
    group: str                 # runs of a group differ only by seed: "seeds" or "sweep-<j>"
    values: Mapping[str, float] = dataclasses.field(default_factory=dict)  # the swept hyperparameters


def _float(value: Any, where: str) -> float:
    """A finite number; YAML 1.1 reads ``3e-4`` as a string, so numeric strings count."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{where} ({show(value)}) must be a finite number.")
    return number


def load_sweep(path: str) -> list[dict[str, float]]:
    """``{learning_rate: [3e-4, 1e-3], beta: 1e-3}``: the product of the lists, first key slowest.

    Read with the config's bounded YAML loader (size, nesting and alias limits); at most ``limits.MAX_RUNS`` points.
    """
    try:
        raw = load_yaml(read_yaml_text(path))
    except FileNotFoundError:
        raise ConfigError(f"--sweep {path}: no such file.") from None
    except ConfigError as error:
        raise ConfigError(f"--sweep {path}: {error}") from None
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"--sweep {path}: expected a mapping of hyperparameter to values, e.g. "
                          f"{{learning_rate: [3.0e-4, 1.0e-3]}}.")
    axes = {}
    for key, values in raw.items():
        if key not in SWEEPABLE:
            raise ConfigError(f"--sweep {path}: {show_key(key)} cannot be swept (only {', '.join(SWEEPABLE)}).")
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"--sweep {path}: {key} has no values.")
        axes[key] = [_float(v, f"--sweep {path}: {key}") for v in values]
    points = math.prod(len(values) for values in axes.values())
    if points > MAX_RUNS:
        sizes = " x ".join(f"{len(values)} {key}" for key, values in axes.items())
        raise ConfigError(f"--sweep {path}: {sizes} values make {points} runs; at most {MAX_RUNS} train in one "
                          f"program.")
    return [dict(zip(axes, point)) for point in itertools.product(*axes.values())]


def plan_members(seed: int, seeds: int, sweep: list[dict[str, float]] | None) -> list[Member]:
    """Seeds ``seed, seed+1, …`` for each sweep point; a single plain run when neither is asked for."""
    points = sweep or [{}]
    if seeds == 1 and sweep is None:
        return [Member(name="", seed=seed, group="")]
    members = []
    for j, values in enumerate(points):
        group = f"sweep-{j}" if sweep else "seeds"
        for k in range(seeds):
            parts = ([group] if sweep else []) + ([f"seed-{k}"] if seeds > 1 else [])
            members.append(Member(name="/".join(parts), seed=seed + k, group=group, values=values))
    return members


def member_settings(settings: RunSettings, behavior: str, member: Member) -> RunSettings:
    """The settings that train this member alone: its seed, swept values and folder (``run_id: <id>/<name>``)."""
    if not member.name:
        return settings
    trainer = settings.behavior(behavior)
    hp = {k: v for k, v in member.values.items() if k != "gamma"}
    signals = dict(trainer.reward_signals)
    if "gamma" in member.values:
        signals["extrinsic"] = dataclasses.replace(signals["extrinsic"], gamma=member.values["gamma"])
    try:
        trainer = dataclasses.replace(trainer, reward_signals=signals,
                                      hyperparameters=dataclasses.replace(trainer.hyperparameters, **hp))
    except ConfigError as error:
        raise ConfigError(f"--sweep {member.group}: {error}") from None
    cp = settings.checkpoint_settings
    return dataclasses.replace(
        settings, behaviors={**settings.behaviors, behavior: trainer},
        env_settings=dataclasses.replace(settings.env_settings, seed=member.seed),
        checkpoint_settings=dataclasses.replace(cp, run_id=f"{cp.run_id}/{member.name}"))


def hyperparameter_table(members: list[Member], base: Mapping[str, float]) -> dict[str, np.ndarray] | None:
    """Per-member values of every sweepable number (``base`` where not swept), or None without a sweep."""
    if not any(m.values for m in members):
        return None
    return {key: np.asarray([m.values.get(key, base[key]) for m in members], np.float32) for key in SWEEPABLE}


class SeedsSummary:
    """Mean ± std across the runs of each group at every summary step (written by process 0)."""

    def __init__(self, run_dir: Path, members: list[Member], clear_past_data: bool) -> None:
        self.run_dir = Path(run_dir)
        self.members = members
        self.groups = {m.group: [i for i, n in enumerate(members) if n.group == m.group] for m in members}
        self.writers = {group: SummaryWriter(self.run_dir / "summary", group, clear_past_data) for group in self.groups}

    def add(self, step: int, scalars: list[dict[str, float]], elapsed: float, steps_per_second: float) -> None:
        """``scalars[i]`` are member i's summary scalars; a tag counts over the members that reported it."""
        for group, indices in self.groups.items():
            stats = {}
            for tag in sorted({t for i in indices for t in scalars[i]}):
                values = np.asarray([scalars[i][tag] for i in indices if tag in scalars[i]], np.float64)
                stats[tag], stats[f"{tag} std"] = float(values.mean()), float(values.std())
            self.writers[group].write(step, stats, wall_time=elapsed, steps_per_second=steps_per_second)

    def close(self) -> Path:
        """Write ``seeds_summary.json`` from the groups' ``metrics.jsonl`` (so a resumed run's is whole)."""
        for writer in self.writers.values():
            writer.close()
        groups = {}
        for group, indices in self.groups.items():
            lines = [json.loads(line) for line in
                     (self.run_dir / "summary" / group / "metrics.jsonl").read_text().splitlines()]
            groups[group] = {"members": [self.members[i].name for i in indices],
                             "seeds": [self.members[i].seed for i in indices],
                             "hyperparameters": dict(self.members[indices[0]].values),
                             "steps": [line["step"] for line in lines],
                             "mean": _columns(lines, lambda tag: not tag.endswith(" std")),
                             "std": {tag[:-4]: v for tag, v in _columns(lines, lambda t: t.endswith(" std")).items()}}
        path = self.run_dir / SUMMARY_NAME
        _write_json_atomically(path, {"groups": groups})
        return path


def _columns(lines: list[dict], keep) -> dict[str, list[float | None]]:
    tags = sorted({tag for line in lines for tag in line if "/" in tag and keep(tag)})
    return {tag: [line.get(tag) for line in lines] for tag in tags}
