"""Where an iteration's time goes: its three parts jitted alone on the iteration's own shapes, beside the whole.

* ``rollout``: ``train.collect`` (act, step, book-keep every robot for ``rollout_steps``) and ``train.make_window``;
* ``gae``: the normalisers' update, the critic over the window and GAE, advantages standardised (``make_batch``);
* ``update``: ``num_epoch`` shuffled passes of Adam steps over the ready steps (``train.update``).

They are ``train.iteration`` / ``train.learn`` cut at their seams (``split_iteration`` composes them back into the same
result, tested). All start from the steady state (``training.steady_iterations`` iterations in: a full carry, about a
rollout's worth of ready steps). Each part is compiled ahead of time and timed as the median of ``repeats`` calls
after a warm-up;
the whole iteration is the trainer's compiled program at one iteration. Parts run alone write their outputs to memory
and cannot fuse across the seams, so their sum can exceed the whole; ``other`` is the whole minus the sum.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from benchmarks.device.sizes import Sizes
from benchmarks.device.suite import Budget, is_out_of_memory, log
from benchmarks.device.training import steady_iterations
from benchmarks.machine import median_seconds
from rlrobot import ppo
from rlrobot.config import load_run_settings
from rlrobot.networks import update_normalizers
from rlrobot.train import Hyperparams, TrainState, agent_steps, collect, make_batch, make_window, next_carry, update
from rlrobot.trainer import JaxTrainer, build_jax_trainer

PARTS = ("rollout", "gae", "update")


def _flat(x: jnp.ndarray) -> jnp.ndarray:
    return x.reshape((-1,) + x.shape[2:])


def make_parts(trainer: JaxTrainer):
    """The three parts of ``train.iteration`` as pure functions (un-jitted)."""
    env, env_params, spec = trainer.env, trainer.env_params, trainer.spec
    hp = Hyperparams.from_spec(spec)

    def rollout(state: TrainState):
        key, key_collect, key_update = jax.random.split(state.key, 3)
        pending = state.tracker.trajectory_length
        step = agent_steps(state.iteration, spec)
        new_state, transitions, _ = collect(env, env_params, spec, state.replace(key=key), key_collect)
        window = make_window(spec, state.carry, transitions, pending, new_state.tracker.trajectory_length,
                             new_state.obs)
        return new_state, window, key_update, step

    def gae(agent, window):
        ready = _flat(window.ready)
        if spec.network.normalize:
            agent = update_normalizers(agent, _flat(window.transitions.obs), ready)
        return agent, make_batch(agent, window, spec, hp), ready

    def learn_update(agent, opt_state, batch, ready, key, step):
        schedule = ppo.schedule_at(step, spec.max_steps, hp.learning_rate, hp.beta, hp.epsilon,
                                   spec.learning_rate_schedule, spec.beta_schedule, spec.epsilon_schedule)
        agent, opt_state, _ = update(agent, opt_state, batch, schedule, key, spec, None, ready)
        return agent, opt_state

    return rollout, gae, learn_update


def split_iteration(trainer: JaxTrainer, state: TrainState) -> TrainState:
    """One iteration through the three parts (the same result as ``train.iteration``'s, up to float rounding)."""
    rollout, gae, learn_update = make_parts(trainer)
    new_state, window, key, step = rollout(state)
    agent, batch, ready = gae(new_state.agent, window)
    agent, opt_state = learn_update(agent, new_state.opt_state, batch, ready, key, step)
    return new_state.replace(agent=agent, opt_state=opt_state, carry=next_carry(trainer.spec, window.transitions))


def _timed(fn, args: tuple, repeats: int) -> tuple[float, float, object]:
    """Compile ``fn`` for ``args`` (timed), run it once for its output, then the median of ``repeats`` runs."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))
    seconds = median_seconds(lambda: jax.block_until_ready(compiled(*args)), repeats)
    return compile_s, seconds, out


def measure_config(name: str, path: str, sizes: Sizes, seconds: float = float("inf")) -> dict:
    """The whole iteration and its parts; one timed call each instead of ``sizes.repeats`` when the iterations seen
    in the warm-up say that would not fit in ``seconds``."""
    end = time.perf_counter() + seconds
    trainer = build_jax_trainer(load_run_settings(path), devices=1)
    state = trainer.init_state(0)
    t0 = time.perf_counter()
    program = trainer.compile(state)   # not donated: the parts below start from the same state
    whole_compile_s = time.perf_counter() - t0
    # The steady state (see training.steady_iterations): a full carry, and about a rollout's worth of ready steps.
    steady = steady_iterations(trainer)
    t0 = time.perf_counter()
    warm, _ = program(state, jnp.int32(steady), None)
    jax.block_until_ready(warm)
    per_iteration = (time.perf_counter() - t0) / steady
    # whole and parts: (repeats + 1) calls each, the parts together about one iteration; 3 compiles besides
    repeats = max(sizes.repeats, 1)
    if 2 * (repeats + 1) * per_iteration > end - time.perf_counter():
        repeats = 1
    whole_s = median_seconds(lambda: jax.block_until_ready(program(warm, jnp.int32(1), None)), repeats)
    rollout, gae, learn_update = make_parts(trainer)
    compiles, times = {}, {}
    compiles["rollout"], times["rollout"], (new_state, window, key, step) = _timed(rollout, (warm,), repeats)
    compiles["gae"], times["gae"], (agent, batch, ready) = _timed(gae, (new_state.agent, window), repeats)
    compiles["update"], times["update"], _ = _timed(learn_update, (agent, new_state.opt_state, batch, ready, key,
                                                                   step), repeats)
    total = sum(times.values())
    spec = trainer.spec
    return {"config": name, "network": f"{spec.network.num_layers}x{spec.network.hidden_units}",
            "num_envs": spec.num_envs, "rollout_steps": spec.rollout_steps,
            "window_steps": int(window.ready.shape[0]), "minibatch": spec.batch_size, "epochs": spec.num_epoch,
            "ready_steps": int(jnp.sum(ready)), "whole_s": whole_s, "whole_compile_s": whole_compile_s,
            "parts_s": times, "parts_compile_s": compiles, "fractions": {p: times[p] / total for p in PARTS},
            "other_s": whole_s - total, "dominant": max(PARTS, key=times.__getitem__), "repeats": repeats}


def measure(configs: dict[str, str], sizes: Sizes, budget: Budget) -> dict:
    rows, failures = [], []
    for index, (name, path) in enumerate(configs.items()):
        if rows and budget.left() <= 0:
            failures.append({"config": name, "error": "the section's time was spent"})
            continue
        log(f"timing split, {name}")
        try:
            rows.append(measure_config(name, path, sizes, budget.sub(len(configs) - index)))
        except Exception as error:  # noqa: BLE001
            failures.append({"config": name, "error": f"{type(error).__name__}: {error}"[:1000],
                             "out_of_memory": is_out_of_memory(error)})
    return {"rows": rows, "failures": failures}
