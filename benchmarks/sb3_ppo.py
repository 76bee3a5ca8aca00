"""Library baseline: Stable-Baselines3 PPO on the NumPy MobileRobot batch, set up from an rlrobot (ML-Agents) YAML.

The model gets the config's task and sizes (``sb3_settings``): ``RobotVecEnv`` with the robot count rlrobot uses on a
CPU, ``n_steps = ceil(buffer_size / robots)`` (one update per ``buffer_size`` agent-steps, as rlrobot's iteration),
``batch_size``, ``n_epochs = num_epoch``, ``gamma``, ``gae_lambda = lambd``, separate ``num_layers x hidden_units``
SiLU actor and critic (``net_arch`` pi/vf), Adam without gradient clipping, value loss weight 0.5, and ML-Agents'
linear decay over ``max_steps`` of the learning rate (floor 1e-10), the clip range (floor 0.1) and — through
``SolveCallback`` — the entropy weight (floor 1e-5). ``normalize: true`` becomes ``VecNormalize`` of the observations
(clipped to ±5 like ML-Agents' normaliser). What SB3 does differently, and keeps:

* ratios, log-probs and entropy are summed over the 2 action dimensions (ML-Agents: per dimension / averaged), so
  ``ent_coef = beta / 2`` gives the same entropy weight;
* advantages are standardised per minibatch (rlrobot: over the buffer); the value loss is not clipped;
* the observation normaliser updates every step (rlrobot: once per iteration, before the update);
* actions are sampled with σ = e^log_std (initially 1) and clipped to ``[-1, 1]`` (rlrobot: ``clip(a, -3, 3) / 3``);
* SB3 bootstraps a time-limit end by calling the critic on that one robot's final observation inside its step loop.

    python -m benchmarks.sb3_ppo [--configs ...] [--iterations 3]   # training agent-steps/s
    python -m benchmarks.sb3_ppo --compare     # rlrobot, the PyTorch PPO-AC loop and SB3 side by side, as ratios
    python -m benchmarks.sb3_ppo --solve [--budget 600] [--seed 0]   # time to solve the first config
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from benchmarks.gym_robot import RobotVecEnv
from benchmarks.solving import (
    EpisodeLog,
    baseline_parser,
    baseline_spec,
    first_episodes_numpy,
    is_solved,
    print_time_to_solve,
)
from benchmarks.torch_ppo import config_steps_per_second
from benchmarks.train_throughput import measure
from envs.numpy_robot import NumpyMobileRobot
from rlrobot import ppo
from rlrobot.networks import NORMALIZED_OBS_CLIP


def linear_schedule(initial: float, floor: float, schedule: str) -> Callable[[float], float]:
    """ML-Agents' ``DecayedValue`` as an SB3 schedule of ``progress_remaining`` (1 → 0 over ``max_steps``)."""
    if schedule == "constant":
        return lambda progress_remaining: initial
    return lambda progress_remaining: floor + (initial - floor) * max(progress_remaining, 0.0)


def sb3_settings(config: str, num_envs: int | None = None) -> dict:
    """The robot count, SB3 ``PPO`` keyword arguments and ML-Agents schedules for ``config`` (``baseline_spec``)."""
    spec = baseline_spec(config, num_envs)
    net, actions = spec.network, NumpyMobileRobot.action_size
    layers = [net.hidden_units] * net.num_layers
    return {
        "num_envs": spec.num_envs, "normalize": net.normalize, "max_steps": spec.max_steps,
        "network": f"{net.num_layers}x{net.hidden_units}",
        "beta": linear_schedule(spec.beta / actions, ppo.BETA_FLOOR / actions, spec.beta_schedule),
        "ppo": {
            "n_steps": spec.rollout_steps, "batch_size": spec.batch_size, "n_epochs": spec.num_epoch,
            "gamma": spec.gamma, "gae_lambda": spec.lambd,
            "learning_rate": linear_schedule(spec.learning_rate, ppo.LR_FLOOR, spec.learning_rate_schedule),
            "clip_range": linear_schedule(spec.epsilon, ppo.EPSILON_FLOOR, spec.epsilon_schedule),
            "ent_coef": spec.beta / actions, "vf_coef": ppo.VALUE_LOSS_COEF, "max_grad_norm": math.inf,
            "policy_kwargs": {"net_arch": {"pi": layers, "vf": layers}, "activation_fn": torch.nn.SiLU},
        },
    }


def make_model(settings: dict, seed: int) -> PPO:
    env = RobotVecEnv(settings["num_envs"], seed=seed)
    if settings["normalize"]:
        env = VecNormalize(env, norm_obs=True, norm_reward=False, clip_obs=NORMALIZED_OBS_CLIP)
    return PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **settings["ppo"])


class IterationTimer(BaseCallback):
    """Wall time of each PPO iteration (rollout + update): the gaps between rollout starts, and the last to the end."""

    def __init__(self):
        super().__init__()
        self.starts: list[float] = []

    def _on_rollout_start(self) -> None:
        self.starts.append(time.perf_counter())

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.starts.append(time.perf_counter())

    def durations(self) -> list[float]:
        return [b - a for a, b in zip(self.starts[:-1], self.starts[1:])]


def train_steps_per_second(config: str, iterations: int, threads: int | None = None, num_envs: int | None = None,
                           seed: int = 0) -> dict:
    """Agent-steps/s of whole SB3 PPO iterations for ``config`` (median of ``iterations`` after one warm-up)."""
    torch.set_num_threads(threads or os.cpu_count())
    settings = sb3_settings(config, num_envs)
    model = make_model(settings, seed)
    steps_per_iteration = settings["num_envs"] * settings["ppo"]["n_steps"]
    timer = IterationTimer()
    model.learn(total_timesteps=(iterations + 1) * steps_per_iteration, callback=timer)
    times = timer.durations()[1:]  # the first iteration is the warm-up
    p = settings["ppo"]
    return {"config": config, "network": settings["network"], "num_envs": settings["num_envs"],
            "rollout_steps": p["n_steps"], "steps_per_iteration": steps_per_iteration, "minibatch": p["batch_size"],
            "epochs": p["n_epochs"],
            "adam_steps_per_iteration": p["n_epochs"] * (steps_per_iteration // p["batch_size"]),
            "iterations": len(times), "threads": torch.get_num_threads(), "median_s": statistics.median(times),
            "agent_steps_per_second": steps_per_iteration / statistics.median(times)}


class SolveCallback(BaseCallback):
    """Time-to-solve book-keeping: the episode curve per update, ML-Agents' entropy decay and the wall-clock budget."""

    def __init__(self, log: EpisodeLog, start: float, budget_s: float, beta: Callable[[float], float], max_steps: int):
        super().__init__()
        self.log, self.start, self.budget_s, self.beta, self.max_steps = log, start, budget_s, beta, max_steps
        self.out_of_time = False

    def _on_step(self) -> bool:
        dones, infos = self.locals["dones"], self.locals["infos"]
        truncated = np.zeros_like(dones)
        for i in np.flatnonzero(dones):
            truncated[i] = infos[i]["TimeLimit.truncated"]
        self.log.record(self.locals["rewards"], dones & ~truncated, truncated)
        self.out_of_time = time.perf_counter() - self.start >= self.budget_s
        return not self.out_of_time

    def _on_rollout_end(self) -> None:
        self.log.summary(self.num_timesteps, time.perf_counter() - self.start)
        self.model.ent_coef = self.beta(1.0 - self.num_timesteps / self.max_steps)


def policy_actor(model: PPO) -> Callable[[np.ndarray], np.ndarray]:
    """The trained policy as ``obs [N, 19] -> actions [N, 2]``, sampled; observations normalised as in training."""
    env = model.get_env()

    def act(obs: np.ndarray) -> np.ndarray:
        if isinstance(env, VecNormalize):
            obs = env.normalize_obs(obs)
        return model.predict(obs, deterministic=False)[0]

    return act


def time_to_solve(config: str, seed: int, budget_s: float, max_steps: int | None = None,
                  threads: int | None = None) -> dict:
    """Train until ``max_steps`` (default the config's) or ``budget_s`` wall-clock seconds, then validate the policy."""
    torch.set_num_threads(threads or os.cpu_count())
    settings = sb3_settings(config)  # before the clock: it starts JAX, which SB3 does not use
    start = time.perf_counter()
    max_steps = max_steps or settings["max_steps"]
    model = make_model(settings, seed)
    callback = SolveCallback(EpisodeLog(settings["num_envs"]), start, budget_s, settings["beta"], max_steps)
    model.learn(total_timesteps=max_steps, callback=callback)
    train_s = time.perf_counter() - start
    final = first_episodes_numpy(policy_actor(model))
    return {"method": "SB3 PPO", "seed": seed, "config": config, "train_seconds": train_s,
            "steps": model.num_timesteps, "budget_s": budget_s, "out_of_time": callback.out_of_time,
            "curve": callback.log.curve, "final": final, "solved": is_solved(final) and train_s <= budget_s}


def main(argv: list[str] | None = None) -> None:
    compare_help = "also time rlrobot (benchmarks.train_throughput) and the PyTorch PPO-AC loop, per config"
    args = baseline_parser(__doc__.split("\n")[0], compare_help).parse_args(argv)
    if args.solve:
        print_time_to_solve(args, time_to_solve)
        return
    import gymnasium
    import stable_baselines3

    print(f"stable-baselines3 {stable_baselines3.__version__}, gymnasium {gymnasium.__version__}, torch "
          f"{torch.__version__}, {args.threads or os.cpu_count()} threads, {args.iterations} timed iterations (median)")
    if not args.compare:
        print("| config | network | robots × steps | minibatch × epochs | SB3 PPO agent-steps/s |")
        print("|---|---|---:|---:|---:|")
    else:
        print("| config | network | robots × steps | rlrobot | PyTorch PPO-AC | SB3 PPO | rlrobot / PyTorch | "
              "rlrobot / SB3 |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
    for config in args.configs:
        r = train_steps_per_second(config, args.iterations, args.threads)
        shape = f"{r['num_envs']} × {r['rollout_steps']}"
        if not args.compare:
            print(f"| {config} | {r['network']} | {shape} | {r['minibatch']} × {r['epochs']} | "
                  f"{r['agent_steps_per_second']:,.0f} |", flush=True)
            continue
        rl = measure(config, None, args.iterations, repeats=1)["agent_steps_per_second"]
        t = config_steps_per_second(config, args.iterations, args.threads)["agent_steps_per_second"]
        sb3 = r["agent_steps_per_second"]
        print(f"| {config} | {r['network']} | {shape} | {rl:,.0f} | {t:,.0f} | {sb3:,.0f} | {rl / t:.1f}× | "
              f"{rl / sb3:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
