"""The highest fraction of its NN-FLOP ceiling a config's training could reach on this machine, from measured floors.

An iteration of ``rlrobot.train.iteration`` cannot take less than the work no schedule removes:
- the env stepping ``steps_per_iteration`` robot-steps;
- the acting: ``rollout_steps`` actor forwards, one per decision, each waiting for the env step before it;
- the critic over the window (counted as two forwards per agent-step in the ceiling's FLOPs);
- each network's ``num_epoch × num_minibatches`` minibatch steps, a chain: a step starts from the last one's
  parameters.

Each part is timed alone, stripped to the networks' own layers: the matmuls, with or without the hidden layers' Swish
(ML-Agents' activation: part of the model, not overhead), a bare SGD step (no loss terms, no Adam, no normaliser, no
shuffle), the env with uniform random actions. The schedule is rlrobot's on a CPU with two cores, for the networks it
splits (``network_split``: up to 128 units, measured faster than both networks on both cores), made better: the actor's
and the critic's chains on a device each at the same time, and the env and the forward passes split evenly over the
devices (rlrobot's learners each act for every robot). Each part is timed with every device on its share at once:

    floor = env + acting and critic passes + actor chain ∥ critic chain,

and ``steps_per_iteration / floor`` over the ceiling (``benchmarks.__main__``: the float32 matmul rate over the NN
FLOPs per agent-step) bounds the fraction this schedule reaches on XLA's kernels here: with the matmuls alone (a
network with no activations), and with the network's Swish. The achieved fraction (``benchmarks.train_throughput``)
is measured in the same run. (The ceiling's FLOPs count ``num_epoch`` passes over every step. The fast config's
window learns from about as many steps as it collects; one with a long ``time_horizon``, like the course config's,
learns from fewer, and the count overstates its work.)

    python -m benchmarks.flop_bound [configs/MobileRobot-fast.yaml] [--json out.json]
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.__main__ import flops_per_agent_step, matmul_rate
from benchmarks.env_throughput import make_runner, split_over_devices
from benchmarks.machine import median_seconds, report
from benchmarks.train_throughput import measure as measure_training
from rlrobot import network_split
from rlrobot.config import load_run_settings
from rlrobot.host_devices import provide_host_devices, tune_cpu_compiler
from rlrobot.networks import matmul
from rlrobot.train import TrainSpec
from rlrobot.trainer import JaxTrainer, build_jax_trainer

tune_cpu_compiler()  # as rlrobot-learn does, before anything starts JAX's backend
provide_host_devices()

SGD_STEP = 1e-6   # small enough that the chain's numbers stay finite; a step at all keeps the chain sequential


def layer_sizes(spec: TrainSpec, outputs: int) -> list[int]:
    net = spec.network
    return [net.obs_size, *[net.hidden_units] * max(net.num_layers, 1), outputs]


def init_kernels(sizes: Sequence[int], device: jax.Device) -> list[jax.Array]:
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    return [jax.device_put(jax.random.normal(k, (a, b)) / a**0.5, device)
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


Activation = Callable[[jax.Array], jax.Array]
ACTIVATIONS: dict[str, Activation] = {"matmuls": lambda x: x, "with Swish": nn.swish}


def forward(kernels: list[jax.Array], x: jax.Array, activation: Activation) -> jax.Array:
    """The network's layers: ``rlrobot.networks.matmul`` (its kernel gradients take rlrobot's forms), ``activation``
    after each hidden one."""
    for kernel in kernels[:-1]:
        x = activation(matmul(x, kernel))
    return matmul(x, kernels[-1])


def update_chain(kernels: list[jax.Array], minibatches: jax.Array, activation: Activation) -> list[jax.Array]:
    """One SGD step per minibatch ``[steps, batch, inputs]``, each from the last one's kernels: forward, backward
    (every kernel gradient and every input gradient but the first layer's) and the step."""
    def step(kernels: list[jax.Array], x: jax.Array) -> tuple[list[jax.Array], None]:
        grads = jax.grad(lambda ks: jnp.sum(forward(ks, x, activation) ** 2))(kernels)
        return [k - SGD_STEP * g for k, g in zip(kernels, grads)], None

    return jax.lax.scan(step, kernels, minibatches)[0]


def acting_chain(kernels: list[jax.Array], observations: jax.Array, activation: Activation) -> jax.Array:
    """One actor forward per decision ``[steps, robots, inputs]``, each waiting for the last one's output."""
    def step(carry: jax.Array, x: jax.Array) -> tuple[jax.Array, None]:
        return carry + jnp.sum(forward(kernels, x + carry, activation)), None

    return jax.lax.scan(step, jnp.float32(0.0), observations)[0]


def time_on_devices(program: Callable, inputs: list[tuple], devices: list[jax.Device], repeats: int) -> float:
    """Median seconds of ``program`` run on every device at once, device i on ``inputs[i]``."""
    jitted = jax.jit(program)
    placed = [jax.device_put(args, device) for args, device in zip(inputs, devices)]
    return median_seconds(lambda: jax.block_until_ready([jitted(*args) for args in placed]), repeats)


def update_floor(spec: TrainSpec, action_size: int, activation: Activation, devices: list[jax.Device],
                 repeats: int) -> float:
    """The actor's and the critic's minibatch chains at once, on a device each (one after the other on one)."""
    steps = spec.num_epoch * spec.num_minibatches
    data = jax.random.normal(jax.random.PRNGKey(1), (steps, spec.batch_size, spec.network.obs_size))
    chains = [(init_kernels(layer_sizes(spec, outputs), devices[0]), data) for outputs in (action_size, 1)]
    program = partial(update_chain, activation=activation)
    if len(devices) >= 2:
        return time_on_devices(program, chains, devices[:2], repeats)
    return sum(time_on_devices(program, [chain], devices, repeats) for chain in chains)


def forward_floor(spec: TrainSpec, action_size: int, activation: Activation, devices: list[jax.Device],
                  repeats: int) -> float:
    """The acting and the critic passes: each device acts for its share of the robots, then evaluates the critic on
    its share of twice the iteration's steps."""
    share = spec.num_envs // len(devices)
    actor = init_kernels(layer_sizes(spec, action_size), devices[0])
    observations = jax.random.normal(jax.random.PRNGKey(2), (spec.rollout_steps, share, spec.network.obs_size))
    acting = time_on_devices(partial(acting_chain, activation=activation), [(actor, observations)] * len(devices),
                             devices, repeats)
    critic = init_kernels(layer_sizes(spec, 1), devices[0])
    rows = jax.random.normal(jax.random.PRNGKey(3),
                             (2 * spec.steps_per_iteration // len(devices), spec.network.obs_size))
    return acting + time_on_devices(partial(forward, activation=activation), [(critic, rows)] * len(devices),
                                    devices, repeats)


def env_floor(trainer: JaxTrainer, devices: list[jax.Device], repeats: int, periods: int = 16) -> float:
    """Seconds per iteration of the trainer's env alone, its robots split over the devices (``periods`` iterations'
    steps per timed call, so that the initial reset weighs little)."""
    spec = trainer.spec
    runner = make_runner(trainer.env, trainer.env_params, spec.num_envs // len(devices), spec.rollout_steps * periods)
    key = jax.random.PRNGKey(4)
    if len(devices) > 1:
        runner, key = split_over_devices(runner, key, len(devices))
    return median_seconds(lambda: jax.block_until_ready(runner(key)), repeats) / periods


def bound_rows(config: str, iterations: int, repeats: int) -> list[dict]:
    """A row per kind of floor (the matmuls alone, with Swish): its parts, the fraction of the config's NN-FLOP
    ceiling it allows, and the fraction the config's training reaches (measured once, in the same run)."""
    trainer = build_jax_trainer(load_run_settings(config), devices=1)
    spec, devices, action_size = trainer.spec, jax.devices(), trainer.env.action_size
    if spec.network.hidden_units > network_split.MAX_HIDDEN_UNITS or spec.network.shared_critic:
        raise ValueError(f"{config}: its actor and critic do not learn on a device each (network_split), the "
                         "schedule this floor assumes")
    env = env_floor(trainer, devices, repeats)
    ceiling = matmul_rate(200)["flops_per_second"] / flops_per_agent_step(config)["flops_per_agent_step"]
    achieved = measure_training(config, None, iterations, repeats)["agent_steps_per_second"]
    rows = []
    for name, activation in ACTIVATIONS.items():
        forwards = forward_floor(spec, action_size, activation, devices, repeats)
        chains = update_floor(spec, action_size, activation, devices, repeats)
        floor = env + forwards + chains
        rows.append({"config": config, "layers": name, "devices": len(devices), "env_ms": 1e3 * env,
                     "forwards_ms": 1e3 * forwards, "update_chains_ms": 1e3 * chains, "floor_ms": 1e3 * floor,
                     "achieved_ms": 1e3 * spec.steps_per_iteration / achieved,
                     "ceiling_agent_steps_per_second": ceiling,
                     "max_fraction": spec.steps_per_iteration / floor / ceiling,
                     "achieved_fraction": achieved / ceiling})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| config | layers | devices | env | acting + critic passes | update chains | floor | achieved "
             "| max fraction | achieved fraction |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['layers']} | {r['devices']} | {r['env_ms']:.2f} | {r['forwards_ms']:.2f} "
                     f"| {r['update_chains_ms']:.2f} | {r['floor_ms']:.2f} | {r['achieved_ms']:.2f} "
                     f"| {r['max_fraction']:.1%} | {r['achieved_fraction']:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", default=["configs/MobileRobot-fast.yaml"])
    parser.add_argument("--iterations", type=int, default=10, help="training iterations per timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    try:
        rows = [row for config in args.configs for row in bound_rows(config, args.iterations, args.repeats)]
    except ValueError as error:
        parser.error(str(error))
    report("NN-FLOP bound: an iteration's floor and what the training takes, in ms", table(rows), args.json, rows=rows)


if __name__ == "__main__":
    main()
