"""Environment-only throughput: agent-steps per second of the JAX MobileRobot vs number of parallel robots.

Each measurement runs ``steps`` vmapped ``env.step`` calls inside one jitted ``lax.scan`` with random actions,
carrying the observations from step to step as a rollout does (so XLA cannot drop them, nor the auto-reset's),
blocks on the result, and takes the median of ``repeats`` runs after one warm-up run. Compilation (ahead of
time, before any run) is timed and reported separately.

The env is compiled as ``rlrobot-learn`` compiles it: with 512-bit vectors on a CPU with AVX-512, LLVM at level 2
where JAX compiles for the CPU only (``rlrobot.host_devices.tune_cpu_compiler``).

``--devices N`` splits the robots over N devices (``shard_map``), each stepping its share with no communication.
On a CPU the cores then serve as N host devices (``jax_num_cpu_devices``): XLA's CPU runtime runs the env's many
small fused loops on one thread each, so one device leaves most of a second core idle.

    python -m benchmarks.env_throughput [--env MobileRobot] [--num-envs 1 16 256 4096 65536] [--devices 2]
                                        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

import envs
from benchmarks.machine import compile_and_time, machine_info, throughput_row, throughput_table
from envs.api import Environment

# ``(key, obs [N, obs_size], policy) -> actions [N, action_size]``; ``policy`` is the runner's second argument.
Act = Callable[[jax.Array, jax.Array, Any], jax.Array]


def make_runner(env: Environment, params: Any, num_envs: int, steps: int, act: Act | None = None) -> Callable:
    """A jitted ``(key, policy=None)`` running ``steps`` steps of ``num_envs`` robots acting with ``act`` (default:
    uniform random actions)."""
    act = act or (lambda key, obs, _: jax.random.uniform(key, (num_envs, env.action_size), minval=-1.0, maxval=1.0))

    def run(key: jax.Array, policy: Any = None) -> jax.Array:
        key_reset, key_run = jax.random.split(key)
        obs, state = env.reset_batch(key_reset, params, num_envs)

        def body(carry: tuple, _: None) -> tuple[tuple, None]:
            obs, state, key, total = carry
            key, key_act, key_step = jax.random.split(key, 3)
            action = act(key_act, obs, policy)
            obs, state, reward, *_ = env.step_batch(key_step, state, action, params)
            return (obs, state, key, total + jnp.sum(reward)), None

        (obs, _, _, total), _ = jax.lax.scan(body, (obs, state, key_run, jnp.float32(0.0)), None, length=steps)
        return total + jnp.sum(obs)

    return jax.jit(run)


def split_over_devices(runner: Callable, key: jax.Array, devices: int) -> tuple[Callable, jax.Array]:
    """A jitted ``(keys [devices, 2]) -> [devices]`` running ``runner`` on each of ``devices`` devices, one key each,
    and those keys, split from ``key`` and placed one per device."""
    mesh = jax.make_mesh((devices,), ("robots",), devices=jax.devices()[:devices])
    per_device = jax.shard_map(lambda keys: runner(keys[0])[None], mesh=mesh, in_specs=PartitionSpec("robots"),
                               out_specs=PartitionSpec("robots"), check_vma=False)
    keys = jax.device_put(jax.random.split(key, devices), NamedSharding(mesh, PartitionSpec("robots")))
    return jax.jit(per_device), keys


def measure(env: Environment, params: Any, num_envs: int, min_agent_steps: int, repeats: int,
            devices: int = 1) -> dict:
    """One throughput row; with ``devices`` > 1 the ``num_envs`` robots are split evenly over that many devices."""
    if num_envs % devices:
        raise ValueError(f"--num-envs {num_envs} does not split evenly over --devices {devices}")
    steps = max(16, min_agent_steps // num_envs)
    runner = make_runner(env, params, num_envs // devices, steps)
    key = jax.random.PRNGKey(1)
    if devices > 1:
        runner, key = split_over_devices(runner, key, devices)
    compile_s, seconds = compile_and_time(runner, (key,), repeats)
    return {**throughput_row(num_envs, steps, seconds, compile_s), "devices": devices}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="MobileRobot", choices=envs.registered())
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 16, 256, 1024, 4096, 16384, 65536])
    parser.add_argument("--agent-steps", type=int, default=4_000_000,
                        help="agent-steps per timed run (at least 16 steps)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", type=int, default=1,
                        help="split the robots over this many devices (on a CPU: its cores as host devices)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    from rlrobot.host_devices import tune_cpu_compiler  # here: benchmarks.against loads this file in older checkouts

    tune_cpu_compiler()  # compiled as rlrobot-learn compiles it
    use_devices(args.devices)
    env = envs.make(args.env)
    try:
        rows = [measure(env, env.default_params, n, args.agent_steps, args.repeats, args.devices)
                for n in args.num_envs]
    except ValueError as error:
        raise SystemExit(f"[ERROR] {error}") from None
    info = machine_info()
    print(f"{args.env} env-only throughput — {info['cpu']} ({info['cores']} cores), {info['backend']}, "
          f"JAX {info['jax']}, {info['date']}, {args.devices} device(s)")
    print(throughput_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "env": args.env, "rows": rows}, f, indent=2)


def use_devices(devices: int) -> None:
    """Ask for ``devices`` CPU devices (before JAX starts its backends); exit with one line if there are fewer."""
    if devices < 1:
        raise SystemExit(f"[ERROR] --devices {devices}: must be at least 1")
    jax.config.update("jax_num_cpu_devices", devices)
    if jax.device_count() < devices:
        raise SystemExit(f"[ERROR] --devices {devices}: only {jax.device_count()} {jax.default_backend()} device(s)")


if __name__ == "__main__":
    main()
