"""How long a user waits after typing ``rlrobot-learn``: a cold launch (empty compile cache) and then a warm one.

Runs the real command line as a child process, twice per round with a fresh temporary ``RLROBOT_CACHE_DIR`` and
results folder (the first run fills the cache, the second loads from it), reads its stdout line by line as the lines
arrive and stamps each with the seconds since the launch. Reported per run, from the launch:

* ``hyperparameters``: the "Hyperparameters for behavior name" line (imports, config, env and trainer built, the
  initial state made, the run folder opened);
* ``compiled``: the "Compiled the training step in" line (and the seconds it reports);
* ``first summary``: the first ML-Agents summary line ("Step: ... Time Elapsed ...");
* ``solved``: the first summary from which every later summary shows ≥ 99% success and mean reward ≥ 7.8 (the
  MobileRobot criterion of ``benchmarks.solving``), if the run gets there;
* ``exit``: the process has exited (final checkpoint, ONNX, replays written).

This is the method of ``benchmarks/RESULTS.md``'s "A warm compile cache" table (a wrapper timing the launch from
its output), made repeatable::

    python -m benchmarks.startup --runs 3                     # configs/MobileRobot-fast.yaml, seed 0
    python -m benchmarks.startup --repo /tmp/other-checkout  # another copy of rlrobot (cwd and PYTHONPATH)
    python -m benchmarks.startup --until first-summary        # stop each run at its first summary (quick)

``--json FILE`` also writes every run's figures and stamped lines. The machine's 1-minute load is printed before and
after each run: the figures are wall-clock seconds and a busy machine stretches them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"Step: (\d+)\. Time Elapsed: [\d.]+ s\.")
EXTRAS = re.compile(r"Step: (\d+)\. .*Success Rate: (\d+\.\d+)")
REWARD = re.compile(r"Step: (\d+)\. Time Elapsed: [\d.]+ s\. Mean Reward: (-?\d+\.\d+)")
COMPILED = re.compile(r"Compiled the training step in ([\d.]+) s")
SOLVED_SUCCESS, SOLVED_REWARD = 0.99, 7.8
MARKS = ("hyperparameters", "compiled", "first_summary", "solved", "exit")


@dataclass
class Launch:
    """One run's seconds from the launch to each mark (None: not reached)."""

    cache: str
    hyperparameters: float | None = None
    compiled: float | None = None
    compile_reported: float | None = None
    first_summary: float | None = None
    solved: float | None = None
    exit: float | None = None
    returncode: int | None = None
    load_before: float = 0.0
    load_after: float = 0.0
    lines: list[tuple[float, str]] = field(default_factory=list)


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def solved_at(summaries: list[tuple[float, int, float | None, float | None]]) -> float | None:
    """The time of the first summary from which every later one is solved (success and reward both known)."""
    first = None
    for seconds, _, reward, success in summaries:
        ok = reward is not None and success is not None and reward >= SOLVED_REWARD and success >= SOLVED_SUCCESS
        if ok and first is None:
            first = seconds
        elif not ok:
            first = None
    return first


def child_env(repo: Path) -> dict[str, str]:
    """The environment of a child process that runs the checkout ``repo`` (first on ``PYTHONPATH``)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])}


def launch(config: Path, repo: Path, cache_dir: Path, results_dir: Path, cache: str, extra: list[str],
           until: str, timeout: float) -> Launch:
    """Run the command line once and stamp its output."""
    command = [sys.executable, "-c", "from rlrobot.cli import entry; entry()", str(config), "--run-id=startup",
               "--force", "--results-dir", str(results_dir), *extra]
    env = {**child_env(repo), "RLROBOT_CACHE_DIR": str(cache_dir)}
    env.pop("RLROBOT_COMPILE_CACHE", None)
    result = Launch(cache=cache, load_before=load_average())
    rewards: dict[int, float] = {}
    summaries: list[tuple[float, int, float | None, float | None]] = []
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - started
            line = line.rstrip("\n")
            result.lines.append((round(now, 4), line))
            if result.hyperparameters is None and "Hyperparameters for behavior name" in line:
                result.hyperparameters = now
            if result.compiled is None and (match := COMPILED.search(line)):
                result.compiled, result.compile_reported = now, float(match.group(1))
            if match := REWARD.search(line):
                rewards[int(match.group(1))] = float(match.group(2))
            if SUMMARY.search(line) and result.first_summary is None:
                result.first_summary = now
                if until == "first-summary":
                    proc.terminate()
            if match := EXTRAS.search(line):
                step = int(match.group(1))
                summaries.append((now, step, rewards.get(step), float(match.group(2))))
            if now > timeout:
                proc.kill()
        result.returncode = proc.wait()
        result.exit = time.perf_counter() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result.solved = solved_at(summaries)
    result.load_after = load_average()
    return result


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def table(launches: list[Launch]) -> str:
    rows = ["| run | cache | → hyperparameters | → compiled (reported) | → first summary | → solved | → exit | rc "
            "| load before → after |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for index, run in enumerate(launches):
        rows.append(f"| {index // 2 + 1} | {run.cache} | {_fmt(run.hyperparameters)} | {_fmt(run.compiled)} "
                    f"({_fmt(run.compile_reported)}) | {_fmt(run.first_summary)} | {_fmt(run.solved)} "
                    f"| {_fmt(run.exit)} | {run.returncode} | {run.load_before:.2f} → {run.load_after:.2f} |")
    for cache in ("cold", "warm"):
        runs = [r for r in launches if r.cache == cache]
        if len(runs) > 1:
            medians = [_median([getattr(r, mark) for r in runs]) for mark in MARKS]
            rows.append(f"| median | {cache} | {_fmt(medians[0])} | {_fmt(medians[1])} | {_fmt(medians[2])} "
                        f"| {_fmt(medians[3])} | {_fmt(medians[4])} | | |")
    return "\n".join(rows)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) and known else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="rounds of (cold, warm), each with a fresh cache")
    parser.add_argument("--config", default="configs/MobileRobot-fast.yaml", help="relative to --repo")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout of rlrobot to run (default: this one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--until", choices=("exit", "first-summary"), default="exit",
                        help="first-summary: stop each run there (launch → exit is then not a full run)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a run is killed")
    parser.add_argument("--json", type=Path, help="also write every run (with its stamped lines) here")
    parser.add_argument("extra", nargs="*", help="more rlrobot-learn arguments (after --)")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    config = (repo / args.config).resolve()
    launches: list[Launch] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="rlrobot-startup-") as tmp:
            for cache in ("cold", "warm"):
                run = launch(config, repo, Path(tmp) / "cache", Path(tmp) / "results", cache,
                             [f"--seed={args.seed}", *args.extra], args.until, args.timeout)
                launches.append(run)
                print(f"{cache}: hyperparameters {_fmt(run.hyperparameters)} s, compiled {_fmt(run.compiled)} s "
                      f"(reported {_fmt(run.compile_reported)} s), first summary {_fmt(run.first_summary)} s, "
                      f"solved {_fmt(run.solved)} s, exit {_fmt(run.exit)} s, rc {run.returncode}, "
                      f"load {run.load_before:.2f} → {run.load_after:.2f}", flush=True)
                if run.returncode not in (0, -15) and args.until == "exit":
                    print("\n".join(line for _, line in run.lines[-20:]), file=sys.stderr)
    print(f"\n{repo} {args.config}, seed {args.seed}, {sys.executable} ({sys.version.split()[0]})\n")
    print(table(launches))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in launches], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
