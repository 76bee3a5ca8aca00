"""The PyTorch PPO-AC baseline (``benchmarks/torch_ppo.py``) runs, learns and times its way to solving; skipped
without torch."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.torch_ppo import TorchPPO, compute_gae, time_to_solve, train_steps_per_second  # noqa: E402


def test_two_iterations_on_16_robots():
    result = train_steps_per_second(num_envs=16, rollout_steps=16, hidden_units=8, num_layers=1, minibatch=64,
                                    epochs=2, iterations=2, threads=1, return_trainer=True)
    trainer = result["trainer"]
    fresh = type(trainer)(16, 16, 8, 1, 64, 2)  # same seed: the parameters before any update
    assert result["agent_steps_per_second"] > 0
    assert result["steps_per_iteration"] == 256 and result["adam_steps_per_iteration"] == 2 * 4
    assert result["loss_is_finite"] and np.isfinite(result["final_loss"])
    changed = [not torch.equal(a, b) for a, b in zip(trainer.model.parameters(), fresh.model.parameters())]
    assert all(changed)


def test_gae_is_per_robot_and_bootstraps_on_truncation():
    # Two robots, two steps; robot 0 terminates at t=0, robot 1 is truncated at t=0.
    rewards = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    values = torch.tensor([[0.5, 0.5], [2.0, 2.0]])
    next_values = torch.tensor([[3.0, 3.0], [0.0, 0.0]])  # V(final_obs) at t=0 for both robots
    terminated = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    truncated = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    adv, _ = compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.9, lambd=0.5)
    assert adv[1].tolist() == [-2.0, -2.0]
    assert adv[0, 0].item() == pytest.approx(1.0 - 0.5)            # no bootstrap, chain cut
    assert adv[0, 1].item() == pytest.approx(1.0 + 0.9 * 3.0 - 0.5)  # bootstrap from V(final_obs), chain cut


def test_schedules_decay_learning_rate_beta_and_clip_over_max_steps():
    ppo = TorchPPO(16, 16, 8, 1, 64, 1, learning_rate=1e-3, beta=1e-3, clip=0.2, max_steps=512)
    ppo.iteration()  # at step 0: the initial values
    assert ppo.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3) and ppo.clip == pytest.approx(0.2)
    ppo.iteration()  # at step 256 of 512: half-way to the floors
    assert ppo.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)
    assert ppo.beta == pytest.approx((1e-3 + 1e-5) / 2) and ppo.clip == pytest.approx(0.15)
    assert ppo.log.curve == [] and ppo.steps == 512


def test_time_to_solve_stops_at_the_budget_and_validates():
    r = time_to_solve("configs/MobileRobot-fast.yaml", seed=0, budget_s=0.0, threads=1)
    assert r["out_of_time"] and r["steps"] == 16384 and len(r["curve"]) == 1  # one update of 512 robots x 32 steps
    assert r["final"]["episodes"] + r["final"]["unfinished"] == 1000
    assert not r["solved"]  # past a budget of 0 s, whatever the validation says
