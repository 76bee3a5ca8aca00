"""What watching the robot costs: rendering speed, and the training throughput lost to checkpoint replays.

    python -m benchmarks.render_cost [--config configs/MobileRobot-fast.yaml] [--repeats 3] [--rounds 6] [--out FILE]

* Speed: ``rlrobot-render`` draws 8 episodes × 100 steps of an untrained policy (it reaches no goal, so every
  episode runs all 100 steps) to a GIF, as a user runs it: a fresh process, with an empty compile cache (cold) and
  again with the cache it filled (warm).
* Loop cost: in one process, the config's compiled training program runs in segments of two checkpoint intervals,
  alternately with the replays a real run draws at its checkpoints (each segment submits two and waits for them) and
  without; ``--rounds`` pairs of segments. Both variants share the process, the compiled programs and (nearly) the
  moment, so other jobs' load disturbs the comparison least: agent-steps/s and process CPU time per segment.
* Command cost: ``rlrobot-learn CONFIG`` with replays (the default) and with ``--no-replays``, side by side in one
  run: a warm-up run of each (fills the compile cache, not counted), then ``--repeats`` pairs, alternating which goes
  first.
  Each pair gives the ratio of the training loop's agent-steps/s (``run_logs/timers.json``, the loop alone), of
  the whole command's wall time (start-up, compile, training, and waiting for the last replay), and of the CPU time
  the command used (user + system, all threads). On a machine shared with other jobs the first two move with the
  others' load; the CPU time does much less, and on an otherwise idle machine whose cores training keeps busy, the
  extra CPU time is the throughput lost.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _load() -> float:
    return os.getloadavg()[0]


def untrained_policy(path: Path) -> Path:
    """An ONNX of freshly initialised networks (the fast config's shape) for the MobileRobot scene."""
    import jax

    import envs
    from rlrobot.config import load_run_settings
    from rlrobot.export import export_policy
    from rlrobot.networks import init_agent
    from rlrobot.train import make_train_spec

    settings = load_run_settings(str(REPO / "configs" / "MobileRobot-fast.yaml"))
    env = envs.make("MobileRobot")
    spec = make_train_spec(settings.behavior("MobileRobot"), env.observation_size, env.action_size, 8)
    return export_policy(init_agent(jax.random.PRNGKey(0), spec.network), spec.network, path)


def render_speed(folder: Path) -> dict:
    """Wall time of ``rlrobot-render`` (8 episodes × 100 steps → GIF), cold and warm compile cache."""
    from PIL import Image

    policy = untrained_policy(folder / "MobileRobot.onnx")
    env = {**os.environ, "RLROBOT_CACHE_DIR": str(folder / "cache")}
    out, rows = folder / "speed.gif", {}
    for label in ("cold", "warm"):
        command = [str(BIN / "rlrobot-render"), str(policy), "--episodes", "8", "--max-steps", "100", "-o", str(out)]
        load, started = _load(), time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        with Image.open(out) as gif:
            frames, size = gif.n_frames, gif.size
        rows[label] = {"seconds": seconds, "frames": frames, "image": list(size), "bytes": out.stat().st_size,
                       "load_before": load, "load_after": _load()}
        print(f"render 8 x 100 steps -> GIF ({label} cache): {seconds:.1f} s, {frames} frames {size[0]}x{size[1]}, "
              f"{out.stat().st_size / 1e6:.2f} MB", flush=True)
    rows["command"] = "rlrobot-render POLICY --episodes 8 --max-steps 100 -o OUT.gif"
    return rows


def train(config: str, folder: Path, run_id: str, replays: bool) -> dict:
    """One ``rlrobot-learn`` in its own process: loop agent-steps/s, compile and wall seconds, replays written."""
    command = [str(BIN / "rlrobot-learn"), config, f"--run-id={run_id}", "--force", "--debug", "--results-dir",
               str(folder / "results")] + ([] if replays else ["--no-replays"])
    env = {**os.environ, "RLROBOT_CACHE_DIR": str(folder / "cache")}
    load, started = _load(), time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    replay_cpu = re.search(r"Checkpoint replays: (\d+) drawn in ([\d.]+) s of CPU time.*compiled in ([\d.]+) s",
                           done.stdout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run = folder / "results" / run_id
    gauges = json.loads((run / "run_logs" / "timers.json").read_text())["gauges"]
    replay_files = sorted((run).glob("*/replays/*.gif"))
    return {"replays": replays, "steps_per_second": gauges["steps_per_second"]["value"],
            "compile_seconds": gauges["compile_seconds"]["value"], "wall_seconds": wall, "cpu_seconds": cpu,
            "replay_thread_cpu_seconds": float(replay_cpu[2]) if replay_cpu else 0.0,
            "replay_compile_cpu_seconds": float(replay_cpu[3]) if replay_cpu else 0.0,
            "replay_gifs": len(replay_files), "replay_bytes": sum(p.stat().st_size for p in replay_files),
            "load_before": load, "load_after": _load()}


def training_cost(config: str, folder: Path, repeats: int) -> dict:
    for replays in (True, False):  # warm-up: compile both programs into the cache
        train(config, folder, "warmup", replays)
    pairs = []
    for index in range(repeats):
        order = (True, False) if index % 2 == 0 else (False, True)
        runs = {replays: train(config, folder, f"r{index}-{int(replays)}", replays) for replays in order}
        on, off = runs[True], runs[False]
        pair = {"on": on, "off": off, "first": "replays" if order[0] else "no replays",
                "throughput_ratio": on["steps_per_second"] / off["steps_per_second"],
                "wall_ratio": on["wall_seconds"] / off["wall_seconds"],
                "cpu_ratio": on["cpu_seconds"] / off["cpu_seconds"]}
        pairs.append(pair)
        print(f"pair {index + 1} ({pair['first']} first): agent-steps/s {on['steps_per_second']:,.0f} with replays "
              f"({on['replay_gifs']} GIFs, {on['replay_bytes'] / 1e6:.2f} MB) vs {off['steps_per_second']:,.0f} "
              f"without = {pair['throughput_ratio']:.3f}; wall {on['wall_seconds']:.1f} s vs "
              f"{off['wall_seconds']:.1f} s = {pair['wall_ratio']:.3f}; CPU {on['cpu_seconds']:.1f} s vs "
              f"{off['cpu_seconds']:.1f} s = {pair['cpu_ratio']:.3f} (replay thread "
              f"{on['replay_thread_cpu_seconds']:.2f} s + compile {on['replay_compile_cpu_seconds']:.2f} s); "
              f"load {on['load_before']:.2f}/{off['load_before']:.2f}", flush=True)
    summary = {"median_throughput_ratio": statistics.median(p["throughput_ratio"] for p in pairs),
               "median_wall_ratio": statistics.median(p["wall_ratio"] for p in pairs),
               "median_cpu_ratio": statistics.median(p["cpu_ratio"] for p in pairs)}
    print(f"median with/without replays: throughput {summary['median_throughput_ratio']:.3f}, wall time "
          f"{summary['median_wall_ratio']:.3f}, CPU time {summary['median_cpu_ratio']:.3f}", flush=True)
    return {"config": config, "pairs": pairs, **summary}


def loop_cost(config: str, rounds: int) -> dict:
    """Alternating in-process segments of training with and without checkpoint replays (see the module docstring)."""
    import jax
    import jax.numpy as jnp

    from rlrobot import parallel
    from rlrobot.config import load_run_settings
    from rlrobot.render.replay import CheckpointReplays
    from rlrobot.trainer import build_jax_trainer

    settings = load_run_settings(config)
    trainer = build_jax_trainer(settings)
    state = trainer.place([trainer.init_state(0)], False)
    program = trainer.compile(state)
    per_call = trainer.spec.steps_per_iteration
    interval = max(1, -(-settings.behavior(trainer.behavior).effective_checkpoint_interval // per_call))
    replays = CheckpointReplays(trainer, 4, 200, False, 0, state.agent)
    replays.wait_until_compiled()

    class Sink:  # the replays' GIFs, encoded, then dropped
        def save_replay(self, step, gif, size):
            pass

    def segment(with_replays: bool) -> dict:
        nonlocal state
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for call in range(2 * interval):
            state, _ = program(state, jnp.int32(1), None)
            trainer.steps(state)
            if with_replays and call % interval == interval - 1:
                replays.submit(Sink(), jax.device_get(parallel.gather(state)).agent, call)
            replays.collect()
        replays.collect(wait=True)
        after, seconds = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"steps_per_second": 2 * interval * per_call / seconds, "cpu_seconds": cpu, "load": _load()}

    segment(False)  # warm-up
    rows = []
    for index in range(rounds):
        order = (True, False) if index % 2 == 0 else (False, True)
        rows.append({("on" if flag else "off"): segment(flag) for flag in order})
        on, off = rows[-1]["on"], rows[-1]["off"]
        print(f"round {index + 1}: agent-steps/s {on['steps_per_second']:,.0f} with replays vs "
              f"{off['steps_per_second']:,.0f} without; CPU {on['cpu_seconds']:.2f} s vs {off['cpu_seconds']:.2f} s; "
              f"load {on['load']:.2f}/{off['load']:.2f}", flush=True)
    replays.close()

    def ratios(key: str) -> list[float]:  # per round: the load drifts between rounds, less within one
        return sorted(row["on"][key] / row["off"][key] for row in rows)

    summary = {"segment_steps": 2 * interval * per_call, "replays_per_segment": 2,
               "throughput_ratios": ratios("steps_per_second"), "cpu_ratios": ratios("cpu_seconds"),
               "throughput_ratio": statistics.median(ratios("steps_per_second")),
               "cpu_ratio": statistics.median(ratios("cpu_seconds"))}
    print(f"loop, median of the rounds' ratios with/without replays: throughput {summary['throughput_ratio']:.3f} "
          f"[{summary['throughput_ratios'][0]:.3f}, {summary['throughput_ratios'][-1]:.3f}], CPU time "
          f"{summary['cpu_ratio']:.3f} ({2 * interval * per_call:,} agent-steps and 2 replays a segment)", flush=True)
    return {"config": config, "rounds": rows, **summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "MobileRobot-fast.yaml"))
    parser.add_argument("--repeats", type=int, default=3, help="pairs of training runs (with and without replays)")
    parser.add_argument("--rounds", type=int, default=6, help="pairs of in-process loop segments")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    from benchmarks.machine import machine_info

    result = {"machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="rlrobot-render-cost-") as tmp:
        if not args.skip_speed:
            (Path(tmp) / "speed").mkdir()
            result["speed"] = render_speed(Path(tmp) / "speed")
        if not args.skip_loop:
            result["loop"] = loop_cost(args.config, args.rounds)
        if not args.skip_cost:
            result["cost"] = training_cost(args.config, Path(tmp), args.repeats)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
