"""Training agent-steps/s per config (compile apart), each config's fraction of its NN-FLOP ceiling, and ``--seeds``
runs vmapped in one program.

Each config is built as ``rlrobot-learn`` builds it on this backend (``rlrobot.trainer.build_jax_trainer``: the YAML's
``num_envs`` or the backend's default, one device) and compiled with its state donated. It is warmed up past
``time_horizon`` steps per robot, one iteration is timed to pick how many iterations a timed call runs
(``sizes.train_seconds`` worth, at least ``time_horizon / rollout_steps``: see ``measure_config``); the median of
``sizes.repeats`` such calls is reported (one call when they would not fit in the config's share of the time).
The ceiling is ``benchmarks``' (``flops_per_agent_step``, ``ceiling_row``):
the float32 matmul rate at the CPU benchmark's shape over the networks' FLOPs per agent-step; the fractions of the
best measured float32 and bf16 rates are reported beside it.
"""
from __future__ import annotations

import math
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks import scale_throughput
from benchmarks.__main__ import ceiling_row, flops_per_agent_step
from benchmarks.device.sizes import Sizes
from benchmarks.device.suite import Budget, is_out_of_memory, log
from rlrobot.config import load_run_settings
from rlrobot.trainer import JaxTrainer, build_jax_trainer


def own_buffers(tree):
    """Every leaf in a buffer of its own: a fresh state can share one (equal constants), and XLA refuses to take
    the same buffer twice when the state is donated."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def run_timed(program, state, iterations: int):
    """``program`` for ``iterations`` iterations from ``state`` (donated), blocked: ``(state, metrics, seconds)``."""
    t0 = time.perf_counter()
    state, metrics = program(state, jnp.int32(iterations), None)
    jax.block_until_ready((state, metrics))
    return state, metrics, time.perf_counter() - t0


def measure_config(name: str, path: str, sizes: Sizes, seconds: float) -> dict:
    """Compile ``path``'s iteration (timed), warm it up, then time calls of a calibrated number of iterations, all
    within about ``seconds`` (a config too slow for that is timed over fewer iterations and marked not steady)."""
    end = time.perf_counter() + seconds
    trainer = build_jax_trainer(load_run_settings(path), devices=1)
    state = own_buffers(trainer.init_state(0))
    t0 = time.perf_counter()
    program = trainer.compile(state, donate=True)
    compile_s = time.perf_counter() - t0
    # Warm-up past the start, when few trajectories are complete and the update does little work, one iteration per
    # call (the last one's time sizes the timed calls). Robots start together, so trajectories complete in waves
    # (every time_horizon steps when episodes are long): a timed call covers at least one wave's cycle, so that it
    # learns from about a rollout's worth of steps per iteration.
    steady = steady_iterations(trainer)
    cycle = steady - 1
    warmup, warmup_s, one_s = 0, 0.0, 0.0
    while warmup < steady and (warmup < 2 or time.perf_counter() + one_s * (1 + cycle) < end):
        state, _, one_s = run_timed(program, state, 1)
        warmup, warmup_s = warmup + 1, warmup_s + one_s
    left = max(end - time.perf_counter(), 0.0)
    iterations = int(min(sizes.train_seconds, left / max(sizes.repeats, 1)) / max(one_s, 1e-9))
    iterations = max(cycle, min(iterations, sizes.max_train_iterations))
    repeats = sizes.repeats if iterations * one_s * sizes.repeats <= left else 1
    whole = warmup >= steady and iterations * one_s <= left
    if not whole:   # not enough time for the steady state: what fits, flagged
        iterations = max(1, min(iterations, int(left / max(one_s, 1e-9))))
    times = []
    for _ in range(repeats):
        state, _, took = run_timed(program, state, iterations)
        times.append(took)
    median = statistics.median(times)
    return {**shape_row(name, trainer), "iterations": iterations, "repeats": repeats, "seconds": median,
            "agent_steps_per_second": iterations * trainer.spec.steps_per_iteration / median,
            "compile_s": compile_s, "warmup_iterations": warmup, "warmup_s": warmup_s, "one_iteration_s": one_s,
            "steady": whole}


def steady_iterations(trainer: JaxTrainer) -> int:
    """Iterations until every robot has run ``time_horizon`` steps (every trajectory has completed once), plus one."""
    spec = trainer.spec
    return math.ceil(spec.time_horizon / spec.rollout_steps) + 1


def shape_row(name: str, trainer: JaxTrainer) -> dict:
    spec, net = trainer.spec, trainer.spec.network
    return {"config": name, "network": f"{net.num_layers}x{net.hidden_units}", "num_envs": spec.num_envs,
            "rollout_steps": spec.rollout_steps, "steps_per_iteration": spec.steps_per_iteration,
            "minibatch": spec.batch_size, "minibatches": spec.num_minibatches, "epochs": spec.num_epoch,
            "time_horizon": spec.time_horizon}


def ceiling(name: str, path: str, row: dict, matmul: dict) -> dict:
    """``benchmarks``' ceiling row for ``row`` at the ceiling rate, plus the fractions of the peak rates."""
    flops = flops_per_agent_step(path)
    result = ceiling_row(name, row, flops, matmul["ceiling_rate"])
    achieved = row["agent_steps_per_second"] * flops["flops_per_agent_step"]
    result["fraction_of_peak_float32"] = achieved / matmul["peak_float32"]
    if matmul.get("peak_bfloat16"):
        result["fraction_of_peak_bfloat16"] = achieved / matmul["peak_bfloat16"]
    return result


def measure(configs: dict[str, str], sizes: Sizes, budget: Budget, matmul: dict | None) -> dict:
    rows, ceilings, failures = [], [], []
    names = list(configs)
    for index, name in enumerate(names):
        if rows and budget.left() <= 0:
            failures.append({"config": name, "error": "the section's time was spent"})
            continue
        log(f"training {name}")
        try:
            row = measure_config(name, configs[name], sizes, budget.sub(len(names) - index))
        except Exception as error:  # noqa: BLE001 - one config failing must not lose the others
            failures.append({"config": name, "error": f"{type(error).__name__}: {error}"[:1000],
                             "out_of_memory": is_out_of_memory(error)})
            continue
        rows.append(row)
        if matmul is not None:
            ceilings.append(ceiling(name, configs[name], row, matmul))
    return {"rows": rows, "ceiling": ceilings, "failures": failures,
            "ceiling_note": None if matmul else "no matmul rate (that section did not run or failed): no ceiling"}


def seeds_iterations(spec_steps: int, seeds: int, rate: float | None, sizes: Sizes, seconds: float) -> int:
    """Iterations to time: ``sizes.seeds_iterations``, fewer if at the single run's measured ``rate`` (vmapped runs
    are not slower in total) they would not fit in ``seconds`` (0: not even one fits)."""
    if rate is None or rate <= 0:   # unsized: only where every size is tiny
        return sizes.seeds_iterations if sizes.smoke else 0
    per_iteration = seeds * spec_steps / rate     # seconds, compile and warm-up not counted
    return int(min(sizes.seeds_iterations, seconds / (per_iteration * 3)))


def measure_seeds(configs: dict[str, str], seeds: int, sizes: Sizes, budget: Budget,
                  rates: dict[str, float] | None = None) -> dict:
    """``benchmarks.scale_throughput.measure``: ``seeds`` runs of each config vmapped in one program, one device;
    ``rates`` (the training section's single-run agent-steps/s) keep the timed iterations inside the budget."""
    rows, failures = [], []
    for index, (name, path) in enumerate(configs.items()):
        if rows and budget.left() <= 0:
            failures.append({"config": name, "error": "the section's time was spent"})
            continue
        spec = build_jax_trainer(load_run_settings(path), devices=1).spec
        iterations = seeds_iterations(spec.steps_per_iteration, seeds, (rates or {}).get(name), sizes,
                                      budget.sub(len(configs) - index))
        if iterations < 1:
            why = (f"one iteration of {seeds} runs would not fit in the {budget.sub(len(configs) - index):.0f} s left"
                   if (rates or {}).get(name) else "no single-run rate from the training section to size it by")
            failures.append({"config": name, "error": why})
            continue
        log(f"--seeds {seeds}, {name}, {iterations} iterations")
        try:
            row = scale_throughput.measure(path, 1, seeds, iterations)
        except Exception as error:  # noqa: BLE001
            failures.append({"config": name, "error": f"{type(error).__name__}: {error}"[:1000],
                             "out_of_memory": is_out_of_memory(error)})
            continue
        row.pop("machine", None)
        rows.append({**row, "config": name})
    return {"seeds": seeds, "rows": rows, "failures": failures}
