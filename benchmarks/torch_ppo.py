"""Throughput baseline: the course's PyTorch PPO-AC training loop, stepping the NumPy robot.

The loop follows the LearnPPO-AC exemplar (``docs/mobile-robot.md``, the course's PPO-AC loop): separate actor and
critic MLPs, a state-independent learnable ``log_std``, GAE with masks, the clipped surrogate, ``0.5 * value loss -
beta * entropy``, Adam, ``epochs x minibatches``. It is written for ``N`` robots at once and fixes the exemplar's
single-agent assumptions:

* masks are per robot and per step (``[T, N]``), never one scalar for the whole step;
* a robot that hit the time limit (truncated) bootstraps from ``V(final_obs)``, the observation before its reset,
  and only a terminated robot gets ``V = 0``; the GAE recursion is cut for either;
* log-probs are summed over action dimensions (one ratio per transition), rewards and losses are never summed across
  robots; minibatches are a shuffled permutation (not sampled with replacement), as in rlrobot; the entropy is
  averaged over action dimensions, as in the exemplar and ML-Agents.

To measure the same work as one rlrobot iteration (``benchmarks.train_throughput``), the networks have rlrobot's shape
(``num_layers x (Linear(hidden) + SiLU)`` per network, a linear ``mu`` head, a linear value head), advantages are
standardised over the buffer, and each iteration is a rollout of ``num_envs x rollout_steps`` transitions, GAE, and
``epochs x (steps // minibatch)`` Adam steps. Observation normalisation is left out (cheap either way).

``--solve`` trains on one config for time to solve (``time_to_solve``, also run by ``benchmarks.time_to_solve
--baselines torch``): the config's hyperparameters with ML-Agents' schedules (learning rate, beta and clip decayed
over ``max_steps``), until ``max_steps`` or a wall-clock budget, a success/reward summary per iteration, and the final
policy judged by the first-episode validation in the NumPy port.

    python -m benchmarks.torch_ppo --compare                      # training agent-steps/s, both configs
    python -m benchmarks.torch_ppo --solve [--budget 600] [--seed 0]
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.solving import (
    EpisodeLog,
    baseline_parser,
    baseline_spec,
    first_episodes_numpy,
    is_solved,
    print_time_to_solve,
)
from envs.numpy_robot import NumpyMobileRobot
from rlrobot.train import TrainSpec


def mlp(in_size: int, hidden_units: int, num_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_layers):
        layers += [nn.Linear(in_size if i == 0 else hidden_units, hidden_units), nn.SiLU()]
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate actor and critic trunks; Gaussian policy with a state-independent ``log_std`` (initialised to 0)."""

    def __init__(self, obs_size: int, action_size: int, hidden_units: int, num_layers: int):
        super().__init__()
        self.actor = nn.Sequential(mlp(obs_size, hidden_units, num_layers), nn.Linear(hidden_units, action_size))
        self.critic = nn.Sequential(mlp(obs_size, hidden_units, num_layers), nn.Linear(hidden_units, 1))
        self.log_std = nn.Parameter(torch.zeros(action_size))

    def dist(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mu = self.actor(obs)
        return torch.distributions.Normal(mu, self.log_std.exp().expand_as(mu))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)


def compute_gae(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor, truncated: Tensor,
                gamma: float, lambd: float) -> tuple[Tensor, Tensor]:
    """GAE per robot over ``[T, N]`` arrays.

    ``next_values[t]`` is ``V`` of the observation that followed step ``t`` (for robots whose episode ended, the final
    observation before the reset). A terminated robot does not bootstrap; a truncated one does. The advantage chain is
    cut wherever an episode ended, so it never runs from one robot's episode into the next.
    """
    not_terminal = 1.0 - terminated
    not_done = 1.0 - torch.maximum(terminated, truncated)
    deltas = rewards + gamma * next_values * not_terminal - values
    advantages = torch.zeros_like(rewards)
    gae = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        gae = deltas[t] + gamma * lambd * not_done[t] * gae
        advantages[t] = gae
    return advantages, advantages + values


class TorchPPO:
    """The PPO-AC loop on ``NumpyMobileRobot``; ``iteration()`` does one rollout + GAE + update.

    With ``max_steps`` the learning rate, ``beta`` and ``clip`` follow ML-Agents' ``schedules`` (learning rate, beta,
    epsilon; "linear" decays to the floors at ``max_steps``); without, they stay constant. ``log`` counts episodes.
    """

    def __init__(self, num_envs: int, rollout_steps: int, hidden_units: int, num_layers: int, minibatch: int,
                 epochs: int, learning_rate: float = 3e-4, gamma: float = 0.99, lambd: float = 0.95,
                 clip: float = 0.2, beta: float = 0.005, seed: int = 0, max_steps: int | None = None,
                 schedules: tuple[str, str, str] = ("linear", "linear", "linear")):
        torch.manual_seed(seed)
        self.env = NumpyMobileRobot(num_envs, seed=seed)
        self.num_envs, self.rollout_steps = num_envs, rollout_steps
        self.steps_per_iteration = num_envs * rollout_steps
        self.minibatch = min(minibatch, self.steps_per_iteration)
        self.num_minibatches = max(1, self.steps_per_iteration // self.minibatch)
        self.epochs, self.gamma, self.lambd, self.clip, self.beta = epochs, gamma, lambd, clip, beta
        self.initial = (learning_rate, beta, clip)
        self.max_steps, self.schedules, self.steps = max_steps, schedules, 0
        self.log = EpisodeLog(num_envs)
        self.model = ActorCritic(NumpyMobileRobot.observation_size, NumpyMobileRobot.action_size, hidden_units,
                                 num_layers)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        self.obs = torch.from_numpy(self.env.reset())
        self.generator = torch.Generator().manual_seed(seed)
        self.last_losses: list[float] = []

    @torch.no_grad()
    def rollout(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        T, N, obs_size = self.rollout_steps, self.num_envs, NumpyMobileRobot.observation_size
        obs = torch.empty(T, N, obs_size)
        next_obs = torch.empty(T, N, obs_size)
        actions = torch.empty(T, N, NumpyMobileRobot.action_size)
        log_probs = torch.empty(T, N)
        rewards, terminated, truncated = torch.empty(T, N), torch.empty(T, N), torch.empty(T, N)
        for t in range(T):
            dist = self.model.dist(self.obs)
            action = dist.sample()
            new_obs, reward, term, trunc, final_obs = self.env.step(action.numpy())
            obs[t], actions[t], log_probs[t] = self.obs, action, dist.log_prob(action).sum(-1)
            next_obs[t] = torch.from_numpy(final_obs)
            rewards[t] = torch.from_numpy(np.asarray(reward, np.float32))
            terminated[t] = torch.from_numpy(np.asarray(term, np.float32))
            truncated[t] = torch.from_numpy(np.asarray(trunc, np.float32))
            self.obs = torch.from_numpy(new_obs)
            self.log.record(reward, term, trunc)
        self.steps += self.steps_per_iteration
        values = self.model.value(obs)
        next_values = self.model.value(next_obs)
        advantages, returns = compute_gae(rewards, values, next_values, terminated, truncated, self.gamma, self.lambd)
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        flat = lambda x: x.reshape(T * N, *x.shape[2:])  # noqa: E731
        return flat(obs), flat(actions), flat(log_probs), flat(advantages), flat(returns)

    def update(self, obs: Tensor, actions: Tensor, old_log_probs: Tensor, advantages: Tensor,
               returns: Tensor) -> list[float]:
        losses = []
        used = self.num_minibatches * self.minibatch
        for _ in range(self.epochs):
            order = torch.randperm(obs.shape[0], generator=self.generator)[:used].view(self.num_minibatches, -1)
            for idx in order:
                dist = self.model.dist(obs[idx])
                ratio = (dist.log_prob(actions[idx]).sum(-1) - old_log_probs[idx]).exp()
                adv = advantages[idx]
                actor_loss = -torch.min(ratio * adv, ratio.clamp(1 - self.clip, 1 + self.clip) * adv).mean()
                critic_loss = (returns[idx] - self.model.value(obs[idx])).pow(2).mean()
                entropy = dist.entropy().mean()
                loss = 0.5 * critic_loss + actor_loss - self.beta * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                losses.append(loss.item())
        return losses

    def follow_schedules(self) -> None:
        """Set learning rate, beta and clip for the next update as ML-Agents would at ``self.steps``."""
        from rlrobot.ppo import schedule_at

        s = schedule_at(self.steps, self.max_steps, *self.initial, *self.schedules)
        for group in self.optimizer.param_groups:
            group["lr"] = float(s.learning_rate)
        self.beta, self.clip = float(s.beta), float(s.epsilon)

    def iteration(self) -> list[float]:
        if self.max_steps:
            self.follow_schedules()
        self.last_losses = self.update(*self.rollout())
        return self.last_losses


def train_steps_per_second(num_envs: int, rollout_steps: int, hidden_units: int, num_layers: int, minibatch: int,
                           epochs: int, iterations: int, threads: int | None = None, return_trainer: bool = False,
                           **hyperparameters) -> dict:
    """Agent-steps/s of whole PPO iterations (rollout + GAE + update), timed after one warm-up iteration."""
    torch.set_num_threads(threads or os.cpu_count())
    ppo = TorchPPO(num_envs, rollout_steps, hidden_units, num_layers, minibatch, epochs, **hyperparameters)
    ppo.iteration()  # warm-up
    times, losses = [], []
    for _ in range(iterations):
        t0 = time.perf_counter()
        losses += ppo.iteration()
        times.append(time.perf_counter() - t0)
    result = {
        "network": f"{num_layers}x{hidden_units}", "num_envs": num_envs, "rollout_steps": rollout_steps,
        "steps_per_iteration": ppo.steps_per_iteration, "minibatch": ppo.minibatch, "epochs": epochs,
        "adam_steps_per_iteration": epochs * ppo.num_minibatches, "iterations": iterations,
        "threads": torch.get_num_threads(), "total_s": sum(times), "median_s": statistics.median(times),
        "agent_steps_per_second": ppo.steps_per_iteration / statistics.median(times),
        "agent_steps_per_second_total": iterations * ppo.steps_per_iteration / sum(times),
        "loss_is_finite": bool(np.all(np.isfinite(losses))), "final_loss": losses[-1],
    }
    if return_trainer:
        result["trainer"] = ppo
    return result


def ppo_arguments(spec: TrainSpec) -> dict:
    """``TorchPPO``'s shapes and hyperparameters from rlrobot's spec of a config (``solving.baseline_spec``)."""
    net = spec.network
    return {"num_envs": spec.num_envs, "rollout_steps": spec.rollout_steps, "hidden_units": net.hidden_units,
            "num_layers": net.num_layers, "minibatch": spec.batch_size, "epochs": spec.num_epoch,
            "learning_rate": spec.learning_rate, "beta": spec.beta, "clip": spec.epsilon, "lambd": spec.lambd,
            "gamma": spec.gamma}


def config_steps_per_second(config: str, iterations: int, threads: int | None = None) -> dict:
    """``train_steps_per_second`` with the shapes and hyperparameters rlrobot uses for ``config`` on a CPU."""
    row = train_steps_per_second(**ppo_arguments(baseline_spec(config)), iterations=iterations, threads=threads)
    return {**row, "config": config}


def time_to_solve(config: str, seed: int, budget_s: float, max_steps: int | None = None,
                  threads: int | None = None) -> dict:
    """Train until ``max_steps`` (default the config's) or ``budget_s`` wall-clock seconds, then validate the policy."""
    torch.set_num_threads(threads or os.cpu_count())
    spec = baseline_spec(config)  # before the clock: it starts JAX, which the loop does not use
    start = time.perf_counter()
    max_steps = max_steps or spec.max_steps
    ppo = TorchPPO(**ppo_arguments(spec), seed=seed, max_steps=max_steps,
                   schedules=(spec.learning_rate_schedule, spec.beta_schedule, spec.epsilon_schedule))
    out_of_time = False
    while ppo.steps < max_steps and not out_of_time:
        ppo.iteration()
        seconds = time.perf_counter() - start
        ppo.log.summary(ppo.steps, seconds)
        out_of_time = seconds >= budget_s
    train_s = time.perf_counter() - start

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        return ppo.model.dist(torch.from_numpy(obs)).sample().numpy()

    final = first_episodes_numpy(act)
    return {"method": "PyTorch PPO-AC", "seed": seed, "config": config, "train_seconds": train_s, "steps": ppo.steps,
            "budget_s": budget_s, "out_of_time": out_of_time, "curve": ppo.log.curve, "final": final,
            "solved": is_solved(final) and train_s <= budget_s}


def main(argv: list[str] | None = None) -> None:
    args = baseline_parser(__doc__.split("\n")[0],
                           "also time rlrobot (benchmarks.train_throughput)").parse_args(argv)
    if args.solve:
        print_time_to_solve(args, time_to_solve)
        return
    rows = [config_steps_per_second(config, args.iterations, args.threads) for config in args.configs]
    print(f"PyTorch {torch.__version__}, {rows[0]['threads']} threads, {args.iterations} timed iterations (median)")
    print("| config | network | robots | PyTorch PPO-AC agent-steps/s |")
    print("|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['network']} | {r['num_envs']} | {r['agent_steps_per_second']:,.0f} |")
    if args.compare:
        from benchmarks.train_throughput import measure

        print()
        print("| config | rlrobot | PyTorch | ratio |")
        print("|---|---:|---:|---:|")
        for r in rows:
            j = measure(r["config"], None, args.iterations, repeats=1)
            ratio = j["agent_steps_per_second"] / r["agent_steps_per_second"]
            print(f"| {r['config']} | {j['agent_steps_per_second']:,.0f} | {r['agent_steps_per_second']:,.0f} | "
                  f"{ratio:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
