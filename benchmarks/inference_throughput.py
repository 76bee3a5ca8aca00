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
import dataclasses
from typing import Any

import jax

import envs
from benchmarks.env_throughput import Act, make_runner
from benchmarks.machine import compile_and_time, report, throughput_row, throughput_table
from envs.api import Environment
from rlrobot.config import load_run_settings
from rlrobot.host_devices import tune_cpu_compiler
from rlrobot.networks import AgentState, NetworkSpec, env_action, init_agent, policy_distribution, sample_action
from rlrobot.trainer import build_jax_trainer


def network_spec(config: str, env: Environment) -> NetworkSpec:
    """The network ``config`` trains (its ``build_jax_trainer`` spec's), sized for ``env``."""
    network = build_jax_trainer(load_run_settings(config), devices=1).spec.network
    return dataclasses.replace(network, obs_size=env.observation_size, action_size=env.action_size)


def policy_act(spec: NetworkSpec) -> Act:
    """``env_throughput.make_runner``'s ``act`` for a policy ``agent``: a Gaussian sample of its actor, as an action."""

    def act(key: jax.Array, obs: jax.Array, agent: AgentState) -> jax.Array:
        mu, log_std = policy_distribution(agent.params, agent.actor_norm, obs, spec)
        return env_action(sample_action(key, mu, log_std))

    return act


def measure(env: Environment, params: Any, num_envs: int, min_agent_steps: int, repeats: int,
            spec: NetworkSpec) -> dict:
    steps = max(16, min_agent_steps // num_envs)
    agent = init_agent(jax.random.PRNGKey(2), spec)
    runner = make_runner(env, params, num_envs, steps, policy_act(spec))
    compile_s, seconds = compile_and_time(runner, (jax.random.PRNGKey(1), agent), repeats)
    return {**throughput_row(num_envs, steps, seconds, compile_s), "network": f"{spec.num_layers}x{spec.hidden_units}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="MobileRobot", choices=envs.registered())
    parser.add_argument("--config", default="configs/MobileRobot-fast.yaml", help="network_settings come from here")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 16, 256, 1024, 4096, 16384, 65536])
    parser.add_argument("--agent-steps", type=int, default=2_000_000,
                        help="agent-steps per timed run (at least 16 steps)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    tune_cpu_compiler()  # compiled as rlrobot-learn compiles it
    env = envs.make(args.env)
    spec = network_spec(args.config, env)
    rows = [measure(env, env.default_params, n, args.agent_steps, args.repeats, spec) for n in args.num_envs]
    report(f"{args.env} env + inference ({spec.num_layers}x{spec.hidden_units}) throughput", throughput_table(rows),
           args.json, env=args.env, config=args.config, rows=rows)


if __name__ == "__main__":
    main()
