"""Environment + inference throughput: agent-steps per second of the JAX MobileRobot acting with the policy network.

Like ``benchmarks.env_throughput`` (one jitted ``lax.scan`` over vmapped ``env.step`` calls, observations carried from
step to step, median of ``repeats`` runs after a warm-up, compile timed separately), but each step acts as a rollout
does: normalised observations → actor MLP → Gaussian sample → ``env_action``, instead of uniform random actions.
The normaliser is not updated (that is training work), so this is the cost of running the policy, as Isaac Lab's
"env + inference" column.

    python -m benchmarks.inference_throughput [--config configs/MobileRobot-fast.yaml] [--num-envs 1 16 256 4096]
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

import envs
from benchmarks.machine import compile_and_time, machine_info, throughput_row, throughput_table
from rlrobot.networks import NetworkSpec, env_action, init_agent, policy_distribution, sample_action


def network_spec(config: str, env) -> NetworkSpec:
    """The network ``config`` trains, sized for ``env``."""
    from rlrobot.config import load_run_settings
    from rlrobot.runner import choose_behavior

    settings = load_run_settings(config)
    net = settings.behavior(choose_behavior(settings)).network_settings
    return NetworkSpec(obs_size=env.observation_size, action_size=env.action_size, hidden_units=net.hidden_units,
                       num_layers=net.num_layers, normalize=net.normalize)


def make_runner(env, params, num_envs: int, steps: int, spec: NetworkSpec):
    """A compiled function running ``steps`` steps of ``num_envs`` robots acting with the policy of ``agent``."""

    def run(key, agent):
        key_reset, key_run = jax.random.split(key)
        obs, state = env.reset_batch(key_reset, params, num_envs)

        def body(carry, _):
            obs, state, key, total = carry
            key, key_act, key_step = jax.random.split(key, 3)
            mu, log_std = policy_distribution(agent.params, agent.actor_norm, obs, spec)
            action = env_action(sample_action(key_act, mu, log_std))
            obs, state, reward, *_ = env.step_batch(key_step, state, action, params)
            return (obs, state, key, total + jnp.sum(reward)), None

        (obs, _, _, total), _ = jax.lax.scan(body, (obs, state, key_run, jnp.float32(0.0)), None, length=steps)
        return total + jnp.sum(obs)

    return jax.jit(run)


def measure(env, params, num_envs: int, min_agent_steps: int, repeats: int, spec: NetworkSpec) -> dict:
    steps = max(16, min_agent_steps // num_envs)
    agent = init_agent(jax.random.PRNGKey(2), spec)
    runner = make_runner(env, params, num_envs, steps, spec)
    compile_s, seconds = compile_and_time(runner, (jax.random.PRNGKey(1), agent), repeats)
    return {**throughput_row(num_envs, steps, seconds, compile_s), "network": f"{spec.num_layers}x{spec.hidden_units}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="MobileRobot", choices=envs.registered())
    parser.add_argument("--config", default="configs/MobileRobot-fast.yaml", help="network_settings come from here")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 16, 256, 1024, 4096, 16384, 65536])
    parser.add_argument("--agent-steps", type=int, default=2_000_000, help="agent-steps per timed run (at least 16 steps)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    env = envs.make(args.env)
    spec = network_spec(args.config, env)
    rows = [measure(env, env.default_params, n, args.agent_steps, args.repeats, spec) for n in args.num_envs]
    info = machine_info()
    print(f"{args.env} env + inference ({spec.num_layers}x{spec.hidden_units}) throughput — {info['cpu']} "
          f"({info['cores']} cores), {info['backend']}, JAX {info['jax']}, {info['date']}")
    print(throughput_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "env": args.env, "config": args.config, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
