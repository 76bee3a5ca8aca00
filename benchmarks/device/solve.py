"""Time to solve MobileRobot with a config, in this process, as ``rlrobot-learn`` trains it.

From launch (loading the YAML) the config's trainer is built and its program compiled (timed apart), then it trains
in device calls of one summary period (``summary_freq`` agent-steps, as ``rlrobot.runner`` does). After every call
the current policy is validated as ``rlrobot-validate`` does it (one episode for each of 1000 robots, robot i in arena
i mod 8, sampled actions): solved is ≥ 99% success and mean return ≥ 7.8 (``benchmarks.solving``), and a first pass
must be confirmed by 1000 more episodes with other draws, so that one lucky validation among many checks does not
count. The training log cannot be the trigger: episodes that began under the early policy end only at the 1000-step
limit, so with many robots the logged success and reward lag the policy by ~1000 steps per robot (16 M agent-steps at
16,384 robots). The training clock stops during validations: ``solved_s`` is launch to the end of the device call
whose policy passed, compile included, validations not; ``solved_excl_compile_s`` is that minus the compile;
``validation_s`` is the validations' own time (their program compiled before training, timed apart). Training stops
at the config's ``max_steps`` or when the section's time is spent. Nothing is extrapolated: a run that does not get
there is "not solved" in the time it had.
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.device.sizes import Sizes
from benchmarks.device.suite import Budget, log
from benchmarks.device.training import own_buffers
from benchmarks.solving import is_solved
from envs.rollout import first_episodes
from rlrobot.config import load_run_settings
from rlrobot.networks import AgentState, env_action, policy_distribution, sample_action
from rlrobot.train import summary_scalars
from rlrobot.trainer import JaxTrainer, build_jax_trainer
from rlrobot.validate import episode_summary


def make_validator(trainer: JaxTrainer, episodes: int, max_steps: int):
    """A compiled ``(agent, key) -> EpisodeStats``: each of ``episodes`` robots' first episode, sampled actions (as
    ``rlrobot-validate``'s JAX path acts with a checkpoint)."""
    env, net = trainer.env, trainer.spec.network

    def run(agent: AgentState, key: jax.Array):
        def act(obs, key):
            mu, log_std = policy_distribution(agent.params, agent.actor_norm, obs, net)
            return env_action(sample_action(key, mu, log_std))

        return first_episodes(env, env.default_params, act, key, episodes, max_steps)

    return run


def summarize_validation(stats) -> dict:
    stats = jax.device_get(stats)
    finished = np.asarray(stats.finished)
    summary = episode_summary(np.asarray(stats.success)[finished], np.asarray(stats.returns)[finished],
                              np.asarray(stats.lengths)[finished])
    summary["unfinished"] = int((~finished).sum())
    return summary


def validate(validator, agent: AgentState, seed: int, index: int) -> dict:
    """One check of the current policy: 1000 episodes; if they pass, 1000 more with other draws must pass too (one
    lucky validation among many checks does not count)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), index)
    result = summarize_validation(validator(agent, key))
    check = {"success_rate": result["success_rate"], "mean_return": result["mean_return"],
             "mean_length": result["mean_length"], "result": result}
    if not is_solved(result):
        return {**check, "passed": False}
    confirm = summarize_validation(validator(agent, jax.random.fold_in(key, 1)))
    return {**check, "passed": is_solved(confirm), "confirmation": {k: confirm[k] for k in (
        "success_rate", "mean_return", "mean_length")}}


def measure(name: str, path: str, sizes: Sizes, budget: Budget, seed: int = 0) -> dict:
    launch = time.perf_counter()
    paused = 0.0          # validation seconds, off the training clock

    def clock() -> float:
        return time.perf_counter() - launch - paused

    settings = load_run_settings(path)
    trainer = build_jax_trainer(settings, devices=1)
    state = own_buffers(trainer.init_state(seed))
    # The validator is compiled before the launch clock matters: its compile is not training.
    t0 = time.perf_counter()
    validator = jax.jit(make_validator(trainer, sizes.validation_episodes, sizes.validation_max_steps)).lower(
        state.agent, jax.random.PRNGKey(0)).compile()
    validation_compile_s = time.perf_counter() - t0
    paused += validation_compile_s
    t0 = time.perf_counter()
    program = trainer.compile(state, donate=True)
    compile_s = time.perf_counter() - t0
    config = settings.behavior(trainer.behavior)
    spec = trainer.spec
    chunk = max(1, math.ceil(config.summary_freq / spec.steps_per_iteration))
    curve, validations = [], []
    solved_at, step, why = None, 0, None
    while True:
        if step >= config.max_steps:
            why = f"max_steps ({config.max_steps:,}) reached"
            break
        if budget.left() <= 0:
            why = "the section's time was spent"
            break
        state, metrics = program(state, jnp.int32(chunk), None)
        host = jax.device_get(metrics)    # the summary's host sync, as the runner's
        step = trainer.steps(state)
        scalars = summary_scalars(host)
        point = {"step": step, "seconds": clock(), "success_rate": scalars.get("Environment/Success Rate"),
                 "mean_reward": scalars.get("Environment/Cumulative Reward")}
        curve.append(point)
        t0 = time.perf_counter()
        check = validate(validator, state.agent, seed, len(validations))
        paused += time.perf_counter() - t0
        validations.append({"step": step, "seconds": point["seconds"], **check})
        log(f"time to solve: {step:,} steps, {point['seconds']:.2f} s: validation {check['success_rate']:.3f} "
            f"success, return {check['mean_return']:.2f}, length {check['mean_length']:.1f}")
        if check["passed"]:
            log(f"time to solve: validated solved at {step:,} steps, {point['seconds']:.2f} s")
            solved_at = {**point, "validation": check["result"]}
            why = "solved"
            break
    if validations:     # solved: the passing validation; else the last policy's, for the record
        final = validations[-1]["result"]
    else:
        t0 = time.perf_counter()
        final = summarize_validation(validator(state.agent, jax.random.PRNGKey(seed)))
        paused += time.perf_counter() - t0
    wall_s = time.perf_counter() - launch
    return {"config": name, "seed": seed, "num_envs": spec.num_envs, "steps_per_iteration": spec.steps_per_iteration,
            "iterations_per_call": chunk, "solved": solved_at is not None, "stopped": why,
            "solved_s": None if solved_at is None else solved_at["seconds"],
            "solved_excl_compile_s": None if solved_at is None else solved_at["seconds"] - compile_s,
            "solved_step": None if solved_at is None else solved_at["step"], "steps": step,
            "compile_s": compile_s, "validation_compile_s": validation_compile_s,
            "validation_s": paused - validation_compile_s, "validations": validations, "wall_s": wall_s,
            "validation_episodes": sizes.validation_episodes, "final": final, "curve": curve}
