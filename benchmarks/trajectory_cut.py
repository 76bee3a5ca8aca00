"""Does the rollout-end cut matter? rlrobot's fixed rollouts against whole-trajectory GAE (a lookahead).

ML-Agents cuts an agent's experience into trajectories only at an episode end or after ``time_horizon`` steps, and
computes GAE over each whole trajectory. rlrobot collects ``T = rollout_steps`` steps of every robot per update and
runs ``ppo.compute_gae`` over those T steps, whose reverse scan starts from zero after step T-1: the rollout end acts
as one more cut (it bootstraps from V(next obs) there), so the effective horizon is ``min(time_horizon, T)``.

The **lookahead** variant removes that cut without changing anything else. After ``train.collect`` has gathered the
T transitions, it keeps stepping the robots ``L`` more decisions with the same parameters (a peek: the advanced env
state, tracker and episode counts of the peek are thrown away), runs ``ppo.compute_gae`` over the T+L window and keeps
the first T advantages and returns. ``_rollout_step`` already marks ML-Agents' cuts (episode ends, ``time_horizon``)
in the transitions, so with ``L >= time_horizon`` every transition of the buffer gets the GAE of its whole trajectory,
as ML-Agents computes it (for ``L`` shorter than that, the residual weight on the missing tail is (gamma*lambda)^L).
The update is ``train.learn``'s, on the T buffer steps only: normaliser update on their observations, values with
the updated normaliser, advantages standardised over the buffer, ``train.update``. The RNG stream of the collect and
the update is the baseline's (the peek draws from a key folded off the collect key), so both variants of a seed start
from the same networks and robots and take the same first rollout. Agent steps count the buffer only (the peek's
steps are not counted): the comparison asks what carrying unfinished trajectories to the next update, which costs no
extra steps, could buy.

It measures (a) for one buffer at several points of the baseline training runs, how much the cut changes advantages
and value targets (overall and by position in the rollout), and (b) learning curves, baseline against lookahead,
several seeds each: the training log's mean episode return per update, and every few updates an evaluation as
``rlrobot-validate`` does it (1000 fresh robots play their first episode with sampled actions; same keys for both
variants). The evaluation gives the success rate: the training log's counts only episodes that ended, and until the
robots reach the 1000-step limit once, the failing episodes have not ended yet, so its early success rate is ~1.
Writes ``results.json``, ``summary.md`` (the tables), ``curves.png`` and ``position.png`` to ``--out``.

    python -m benchmarks.trajectory_cut [--quick] [--out DIR] [--configs fast course] [--seeds 0 1 2]
                                        [--course-seeds 0 1 2] [--steps N]
    python -m benchmarks.trajectory_cut --merge DIR1 DIR2 --out DIR      # combine runs of other seeds, re-plot
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.machine import machine_info
from envs.rollout import first_episodes
from rlrobot import ppo
from rlrobot.config import load_run_settings
from rlrobot.networks import env_action, policy_distribution, sample_action, update_normalizers, value_estimate
from rlrobot.train import LEARNED_FIELDS, Hyperparams, Metrics, agent_steps, collect, summary_scalars, update
from rlrobot.trainer import JaxTrainer, build_jax_trainer

DEFAULT_OUT = "benchmarks/out/trajectory_cut"
SUCCESS_TARGET = 0.99
PEEK_SALT = 0x7C07  # folded into the collect key for the peek, so the baseline's RNG stream is untouched
EVAL_EPISODES, EVAL_MAX_STEPS = 1000, 1000  # as rlrobot-validate: each robot's first episode, sampled actions

# name -> config file, settings changes (network / hyperparameters / trainer), robots (None: the YAML's or the CPU
# default), lookahead L (None: time_horizon), agent steps per run, analysis points (agent steps), updates per evaluation
CONFIGS = {
    "fast": dict(config="configs/MobileRobot-fast.yaml", network=None, num_envs=None, lookahead=None,
                 steps=1_000_000, points=(0, 200_000, 600_000, 1_000_000), eval_every=4),
    # the course's YAML with a 2x64 network (3x512 does not fit a 2-core CPU budget); L=256: (0.995*0.95)^256 ~ 1e-7
    "course": dict(config="configs/MobileRobot.yaml", network=dict(hidden_units=64, num_layers=2), num_envs=None,
                   lookahead=256, steps=1_000_000, points=(0, 200_000, 600_000, 1_000_000), eval_every=3),
}


def _flatten(x: jnp.ndarray) -> jnp.ndarray:
    return x.reshape((-1,) + x.shape[2:])


def build(config: str, network: dict | None = None, hyperparameters: dict | None = None,
          num_envs: int | None = None, **trainer_changes) -> JaxTrainer:
    """``build_jax_trainer`` on the YAML's settings, with optional network / hyperparameter / trainer changes."""
    settings = load_run_settings(config)
    name = next(iter(settings.behaviors))
    behavior = settings.behaviors[name]
    if network:
        behavior = dataclasses.replace(behavior, network_settings=dataclasses.replace(behavior.network_settings,
                                                                                      **network))
    if hyperparameters:
        behavior = dataclasses.replace(behavior, hyperparameters=dataclasses.replace(behavior.hyperparameters,
                                                                                     **hyperparameters))
    if trainer_changes:
        behavior = dataclasses.replace(behavior, **trainer_changes)
    settings = dataclasses.replace(settings, behaviors={**settings.behaviors, name: behavior})
    return build_jax_trainer(settings, num_envs=num_envs, devices=1)


def peek(trainer: JaxTrainer, state, key, lookahead: int):
    """``lookahead`` more decisions of every robot from ``state`` with its parameters; only the transitions are kept."""
    spec = dataclasses.replace(trainer.spec, rollout_steps=lookahead)
    _, transitions, _ = collect(trainer.env, trainer.env_params, spec, state, key)
    return transitions


def window_gae(agent, window, spec, hp: Hyperparams, length: int):
    """Values (current normaliser), GAE over the whole ``window`` of transitions, and the first ``length`` steps'
    values, advantages and returns (``train.make_batch``'s maths, over a longer window)."""
    values = value_estimate(agent.params, agent.critic_norm, window.obs, spec.network)
    next_values = value_estimate(agent.params, agent.critic_norm, window.next_obs, spec.network)
    rewards = window.reward * spec.reward_strength
    advantages, returns = ppo.compute_gae(rewards, values, next_values, window.terminated, window.truncated,
                                          hp.gamma, hp.lambd)
    return values[:length], advantages[:length], returns[:length]


def lookahead_iteration(trainer: JaxTrainer, lookahead: int, state):
    """``train.iteration`` with whole-trajectory GAE: collect T, peek ``lookahead`` more, GAE over T+L, learn on T."""
    spec, hp = trainer.spec, Hyperparams.from_spec(trainer.spec)
    key, key_collect, key_update = jax.random.split(state.key, 3)
    step = agent_steps(state.iteration, spec)
    state, transitions, episodes = collect(trainer.env, trainer.env_params, spec, state.replace(key=key), key_collect)
    window = transitions
    if lookahead > 0:
        extra = peek(trainer, state, jax.random.fold_in(key_collect, PEEK_SALT), lookahead)
        window = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), transitions, extra)
    # train.learn, with the batch's advantages and returns taken from the window
    schedule = ppo.schedule_at(step, spec.max_steps, hp.learning_rate, hp.beta, hp.epsilon,
                               spec.learning_rate_schedule, spec.beta_schedule, spec.epsilon_schedule)
    agent = update_normalizers(state.agent, _flatten(transitions.obs)) if spec.network.normalize else state.agent
    values, advantages, returns = window_gae(agent, window, spec, hp, spec.rollout_steps)
    batch = ppo.Batch(obs=_flatten(transitions.obs), raw_action=_flatten(transitions.raw_action),
                      log_prob=_flatten(transitions.log_prob), value=_flatten(values),
                      advantage=ppo.normalize_advantages(_flatten(advantages)), returns=_flatten(returns))
    agent, opt_state, losses = update(agent, state.opt_state, batch, schedule, key_update, spec, trainer.mesh)
    finite = jnp.all(losses["loss_is_finite"]) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(agent.params)]))
    learned = Metrics.zeros().replace(
        updates=jnp.float32(1.0), loss_updates=jnp.float32(1.0), value_updates=jnp.float32(1.0),
        value_estimate=jnp.mean(batch.value), policy_loss=jnp.mean(losses["policy_loss"]),
        value_loss=jnp.mean(losses["value_loss"]), approx_kl=jnp.mean(losses["approx_kl"]),
        clip_fraction=jnp.mean(losses["clip_fraction"]), learning_rate=schedule.learning_rate, beta=schedule.beta,
        epsilon=schedule.epsilon, loss_is_finite=finite)
    metrics = episodes.replace(**{name: getattr(learned, name) for name in LEARNED_FIELDS})
    return state.replace(agent=agent, opt_state=opt_state), metrics


def gae_comparison(trainer: JaxTrainer, lookahead: int, state):
    """For the buffer the next iteration would collect from ``state``: cut and lookahead advantages and returns
    (``[T, N]``, with the normaliser updated on the buffer as ``learn`` does), and whether each step's trajectory
    was still open at the rollout end."""
    spec, hp = trainer.spec, Hyperparams.from_spec(trainer.spec)
    _, key_collect, _ = jax.random.split(state.key, 3)
    after, transitions, _ = collect(trainer.env, trainer.env_params, spec, state, key_collect)
    extra = peek(trainer, after, jax.random.fold_in(key_collect, PEEK_SALT), lookahead)
    window = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), transitions, extra)
    agent = update_normalizers(state.agent, _flatten(transitions.obs)) if spec.network.normalize else state.agent
    _, adv_cut, ret_cut = window_gae(agent, transitions, spec, hp, spec.rollout_steps)
    _, adv_look, ret_look = window_gae(agent, window, spec, hp, spec.rollout_steps)
    cut = transitions.terminated | transitions.truncated
    # open[t]: no episode end or time_horizon cut in steps t..T-1, i.e. the rollout end cut this step's trajectory
    open_at_end = jnp.flip(jnp.cumsum(jnp.flip(cut, 0), 0), 0) == 0
    return adv_cut, adv_look, ret_cut, ret_look, open_at_end


def compare_stats(adv_cut, adv_look, ret_cut, ret_look, open_at_end) -> dict:
    """How much the rollout-end cut changes the buffer's advantages and value targets."""
    adv_cut, adv_look, ret_cut, ret_look, open_at_end = (np.asarray(x, np.float64) for x in
                                                         (adv_cut, adv_look, ret_cut, ret_look, open_at_end))
    open_at_end = open_at_end.astype(bool)
    adv_std, ret_std = adv_cut.std(), ret_cut.std()
    d_adv, d_ret = np.abs(adv_look - adv_cut), np.abs(ret_look - ret_cut)

    def standardise(a):
        return (a - a.mean()) / (a.std() + ppo.ADVANTAGE_EPS)

    n_cut, n_look = standardise(adv_cut), standardise(adv_look)
    d_norm = np.abs(n_look - n_cut)
    by_position = (d_adv / adv_std).mean(axis=1)          # mean |dA|/std(A) at each rollout position t
    changed_by_position = (d_norm > 0.1).mean(axis=1)
    # the last k positions hold all the noticeable change: every position before T-k is below 0.01 std
    k = _last_noisy(by_position, 0.01)
    return {
        "adv_std": float(adv_std), "ret_std": float(ret_std),
        "mean_abs_dadv_over_std": float(d_adv.mean() / adv_std),
        "frac_norm_adv_change_gt_0.1": float((d_norm > 0.1).mean()),
        "max_norm_adv_change": float(d_norm.max()),
        "adv_std_ratio_look_over_cut": float(adv_look.std() / adv_std),
        "adv_corr": float(np.corrcoef(adv_cut.ravel(), adv_look.ravel())[0, 1]),
        "frac_norm_adv_sign_flip": float((np.sign(n_cut) != np.sign(n_look)).mean()),
        "frac_norm_adv_change_gt_0.1_open": float((d_norm[open_at_end] > 0.1).mean()) if open_at_end.any() else 0.0,
        "frac_norm_adv_change_gt_0.1_closed": float((d_norm[~open_at_end] > 0.1).mean()) if (~open_at_end).any()
        else 0.0,
        "mean_abs_dret_over_std": float(d_ret.mean() / ret_std),
        "frac_ret_change_gt_0.1_std": float((d_ret / ret_std > 0.1).mean()),
        "frac_open_at_rollout_end": float(open_at_end.mean()),
        "frac_changed_at_all": float((d_adv > 1e-5 * adv_std).mean()),
        "changed_outside_open": float((d_adv[~open_at_end] > 1e-4 * adv_std).mean()) if (~open_at_end).any() else 0.0,
        "last_positions_over_0.01_std": k,
        "by_position_mean_abs_dadv_over_std": by_position.tolist(),
        "by_position_frac_norm_change_gt_0.1": changed_by_position.tolist(),
        "by_position_frac_open": open_at_end.mean(axis=1).tolist(),
    }


def _last_noisy(by_position: np.ndarray, threshold: float) -> int:
    """How many final rollout positions reach ``threshold``: T - (first t after which all are below it)."""
    T = len(by_position)
    above = np.nonzero(by_position >= threshold)[0]
    return 0 if len(above) == 0 else int(T - above.min())


def episode_point(step: int, metrics) -> dict:
    scalars = summary_scalars(metrics)
    return {"step": int(step), "success_rate": scalars.get("Environment/Success Rate"),
            "mean_reward": scalars.get("Environment/Cumulative Reward"),
            "episode_length": scalars.get("Environment/Episode Length")}


def make_evaluate(trainer: JaxTrainer, episodes: int = EVAL_EPISODES, max_steps: int = EVAL_MAX_STEPS):
    """Jitted ``(agent, key) -> stats``: each of ``episodes`` fresh robots plays its first episode with sampled
    actions (``rlrobot-validate``'s evaluation, in the training scene)."""
    network = trainer.spec.network

    def evaluate(agent, key):
        def act(obs, key_act):
            mu, log_std = policy_distribution(agent.params, agent.actor_norm, obs, network)
            return env_action(sample_action(key_act, mu, log_std))
        stats = first_episodes(trainer.env, trainer.env_params, act, key, episodes, max_steps)
        return stats.success.mean(), stats.returns.mean(), stats.lengths.mean()
    return jax.jit(evaluate)


def train_curve(trainer: JaxTrainer, variant: str, seed: int, steps: int, lookahead: int,
                points: tuple[int, ...] = (), compare=None, evaluate=None, eval_every: int = 4) -> dict:
    """One run of ``variant`` ('baseline': the compiled standard program; 'lookahead') to ``steps`` agent steps, one
    summary per iteration and an evaluation every ``eval_every`` iterations and at the end (same evaluation keys for
    both variants). On the baseline, at each of ``points`` the cut/lookahead comparison of the next buffer."""
    state = trainer.init_state(seed)
    t0 = time.perf_counter()
    step_fn = compiled(trainer, variant, lookahead, state)
    compile_s = time.perf_counter() - t0
    per_iteration = trainer.spec.steps_per_iteration
    iterations = math.ceil(steps / per_iteration)
    curve, analysis, evaluations = [], [], []
    pending = sorted(points)
    eval_s = 0.0
    t0 = time.perf_counter()
    for i in range(iterations + 1):
        step = i * per_iteration
        if evaluate is not None and (i % eval_every == 0 or i == iterations):
            te = time.perf_counter()
            success, ret, length = (float(x) for x in jax.device_get(
                evaluate(state.agent, jax.random.PRNGKey(1_000_003 * (seed + 1) + i))))
            evaluations.append({"step": step, "success_rate": success, "mean_return": ret, "mean_length": length})
            eval_s += time.perf_counter() - te
        while pending and step >= pending[0]:
            stats = compare_stats(*jax.device_get(compare(state)))
            analysis.append({"requested_step": pending.pop(0), "step": step, **stats})
        if i == iterations:
            break
        state, metrics = step_fn(state)
        curve.append(episode_point(step + per_iteration, metrics))
        if not bool(metrics.loss_is_finite):
            break
    seconds = time.perf_counter() - t0 - eval_s
    return {"variant": variant, "seed": seed, "compile_s": compile_s, "train_s": seconds, "eval_s": eval_s,
            "curve": curve, "evaluations": evaluations, "analysis": analysis, **curve_summary(curve),
            **eval_summary(evaluations)}


def eval_summary(evaluations: list[dict]) -> dict:
    """Steps to the first evaluation at the success target, to the one from which all later ones are, and the last."""
    if not evaluations:
        return {}
    rates = [e["success_rate"] for e in evaluations]
    first = next((e["step"] for e in evaluations if e["success_rate"] >= SUCCESS_TARGET), None)
    stays = next((evaluations[i]["step"] for i in range(len(rates)) if min(rates[i:]) >= SUCCESS_TARGET), None)
    last = evaluations[-1]
    return {"eval_steps_to_target": first, "eval_steps_to_target_for_good": stays,
            "eval_final_success_rate": last["success_rate"], "eval_final_mean_return": last["mean_return"],
            "eval_final_mean_length": last["mean_length"]}


_COMPILED: dict = {}


def compiled(trainer: JaxTrainer, variant: str, lookahead: int, state):
    """One iteration ``state -> (state, Metrics)``, compiled once per trainer and variant: 'baseline' is the standard
    program (``trainer.compile``), 'lookahead' the jitted ``lookahead_iteration``."""
    key = (id(trainer), variant, lookahead)
    if key not in _COMPILED:
        if variant == "baseline":
            program = trainer.compile(state)
            _COMPILED[key] = lambda s: program(s, jnp.int32(1), None)
        else:
            _COMPILED[key] = jax.jit(partial(lookahead_iteration, trainer, lookahead)).lower(state).compile()
    return _COMPILED[key]


def curve_summary(curve: list[dict]) -> dict:
    """Steps to first reach the success target, to reach it for good, and the final reward and success rate."""
    success = [p["success_rate"] if p["success_rate"] is not None else 0.0 for p in curve]
    first = next((p["step"] for p, s in zip(curve, success) if s >= SUCCESS_TARGET), None)
    stays = None
    for i in range(len(curve)):
        if all(s >= SUCCESS_TARGET for s in success[i:]):
            stays = curve[i]["step"]
            break
    tail = [p["mean_reward"] for p in curve[-5:] if p["mean_reward"] is not None]
    return {"steps_to_target": first, "steps_to_target_for_good": stays,
            "final_mean_reward": curve[-1]["mean_reward"] if curve else None,
            "last5_mean_reward": float(np.mean(tail)) if tail else None,
            "final_success_rate": curve[-1]["success_rate"] if curve else None}


def check_zero_lookahead(trainer: JaxTrainer, seed: int = 0) -> float:
    """The lookahead iteration with L=0 against ``train.iteration`` (the compiled program): largest difference of
    any parameter after two iterations (0 up to float reassociation: the code paths must agree)."""
    state = trainer.init_state(seed)
    baseline = compiled(trainer, "baseline", 0, state)
    ours = jax.jit(partial(lookahead_iteration, trainer, 0))
    a = b = state
    for _ in range(2):
        a, _ = baseline(a)
        b, _ = ours(b)
    diffs = jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))) if jnp.issubdtype(x.dtype, jnp.floating)
                         else float(jnp.any(x != y)), a.agent, b.agent)
    return max(jax.tree.leaves(diffs))


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def run_config(name: str, spec: dict, seeds: list[int], out: dict, quick: bool) -> None:
    trainer = build(spec["config"], spec.get("network"), spec.get("hyperparameters"), spec.get("num_envs"),
                    **spec.get("trainer", {}))
    ts = trainer.spec
    lookahead = spec["lookahead"] or ts.time_horizon
    compare = jax.jit(partial(gae_comparison, trainer, lookahead))
    evaluate = make_evaluate(trainer, **spec.get("eval", {}))
    entry = {"config": spec["config"], "changes": {k: spec.get(k) for k in ("network", "hyperparameters", "trainer")
                                                   if spec.get(k)},
             "num_envs": ts.num_envs, "rollout_steps": ts.rollout_steps, "time_horizon": ts.time_horizon,
             "gamma": ts.gamma, "lambd": ts.lambd, "lookahead": lookahead,
             "residual_weight_gamma_lambda_pow_L": (ts.gamma * ts.lambd) ** lookahead,
             "hidden_units": ts.network.hidden_units, "num_layers": ts.network.num_layers,
             "steps_per_iteration": ts.steps_per_iteration, "runs": []}
    entry["zero_lookahead_max_param_diff"] = check_zero_lookahead(trainer)
    print(f"[{name}] {ts.num_envs} robots x {ts.rollout_steps} steps, time_horizon {ts.time_horizon}, "
          f"L={lookahead}; L=0 vs train.iteration max param diff {entry['zero_lookahead_max_param_diff']:.2e}",
          flush=True)
    for seed in seeds:
        for variant in ("baseline", "lookahead"):
            run = train_curve(trainer, variant, seed, spec["steps"], lookahead,
                              spec["points"] if variant == "baseline" else (), compare, evaluate,
                              spec.get("eval_every", 4))
            entry["runs"].append(run)
            print(f"[{name}] seed {seed} {variant:9s}: eval {SUCCESS_TARGET} at {run['eval_steps_to_target']} "
                  f"(for good {run['eval_steps_to_target_for_good']}), eval final success "
                  f"{_fmt(run['eval_final_success_rate'])} return {_fmt(run['eval_final_mean_return'])}; "
                  f"training log: final reward {_fmt(run['final_mean_reward'])}, last-5 "
                  f"{_fmt(run['last5_mean_reward'])}, log {SUCCESS_TARGET} for good at "
                  f"{run['steps_to_target_for_good']}; "
                  f"{run['train_s']:.1f} s train (+{run['compile_s']:.1f} s compile, {run['eval_s']:.1f} s eval)",
                  flush=True)
            for a in run["analysis"]:
                print(f"      at {a['step']:>8d}: mean|dA|/std {a['mean_abs_dadv_over_std']:.4f}, "
                      f"frac |d norm A|>0.1 {a['frac_norm_adv_change_gt_0.1']:.4f}, mean|dR|/std "
                      f"{a['mean_abs_dret_over_std']:.4f}, frac |dR|>0.1std {a['frac_ret_change_gt_0.1_std']:.4f}, "
                      f"open {a['frac_open_at_rollout_end']:.3f}, last {a['last_positions_over_0.01_std']} positions, "
                      f"std ratio {a['adv_std_ratio_look_over_cut']:.3f}, corr {a['adv_corr']:.4f}, "
                      f"sign flips {a['frac_norm_adv_sign_flip']:.4f}",
                      flush=True)
    out["configs"][name] = entry


def plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["configs"])
    rows = (("evaluations", "success_rate", "success rate (evaluation)"),
            ("evaluations", "mean_return", "mean return (evaluation)"),
            ("curve", "mean_reward", "mean episode return (training log)"))
    fig, axes = plt.subplots(len(rows), len(names), figsize=(6.5 * len(names), 10), squeeze=False)
    colors = {"baseline": "tab:blue", "lookahead": "tab:orange"}
    for col, name in enumerate(names):
        entry = results["configs"][name]
        for row, (series, key, ylabel) in enumerate(rows):
            ax = axes[row][col]
            for variant in ("baseline", "lookahead"):
                runs = [r for r in entry["runs"] if r["variant"] == variant]
                for j, run in enumerate(runs):
                    xs = [p["step"] for p in run[series]]
                    ys = [np.nan if p[key] is None else p[key] for p in run[series]]
                    label = (f"{variant} (rollout-end cut)" if variant == "baseline" else
                             f"lookahead L={entry['lookahead']} (whole trajectories)") if j == 0 else None
                    ax.plot(xs, ys, color=colors[variant], alpha=0.45, lw=0.9, label=label)
                if series == "evaluations" and key == "success_rate" and runs:
                    # mean over seeds (the evaluation points are the same for every run of a config)
                    xs = [p["step"] for p in runs[0][series]]
                    ys = np.mean([[p[key] for p in run[series]] for run in runs], axis=0)
                    ax.plot(xs, ys, color=colors[variant], lw=2.6, label=f"{variant}: mean of {len(runs)} seeds")
            if key == "success_rate":
                ax.axhline(SUCCESS_TARGET, color="grey", ls=":", lw=1)
                ax.set_ylim(-0.02, 1.02)
            else:
                ax.set_yscale("symlog", linthresh=10.0)  # a few robots stuck for 1000 steps dominate the mean
            ax.set_xlabel("agent steps")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{name}: {entry['num_envs']}x{entry['rollout_steps']} steps, time_horizon "
                         f"{entry['time_horizon']}, {entry['hidden_units']}x{entry['num_layers']}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_positions(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["configs"])
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 3.8), squeeze=False)
    for col, name in enumerate(names):
        ax = axes[0][col]
        entry = results["configs"][name]
        by_step: dict[int, list] = {}
        for run in entry["runs"]:
            for a in run["analysis"]:
                by_step.setdefault(a["requested_step"], []).append(a["by_position_mean_abs_dadv_over_std"])
        for step, profiles in sorted(by_step.items()):
            profile = np.mean(profiles, axis=0)
            ax.semilogy(np.arange(len(profile)), np.maximum(profile, 1e-8), label=f"after {step:,} steps")
        ax.set_xlabel("position t in the rollout (T-1 = last)")
        ax.set_ylabel("mean |A_lookahead - A_cut| / std(A)")
        ax.set_title(f"{name}: T={entry['rollout_steps']}, mean over seeds", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(paths: list[str]) -> dict:
    """Several ``results.json`` of the same configs (e.g. different seeds) as one: runs concatenated per config."""
    merged = None
    for path in paths:
        with open(os.path.join(path, "results.json") if os.path.isdir(path) else path) as f:
            results = json.load(f)
        if merged is None:
            merged = results
            merged["parts"] = [{"machine": results["machine"], "total_s": results.get("total_s")}]
            continue
        merged["parts"].append({"machine": results["machine"], "total_s": results.get("total_s")})
        for name, entry in results["configs"].items():
            if name in merged["configs"]:
                merged["configs"][name]["runs"].extend(entry["runs"])
            else:
                merged["configs"][name] = entry
    merged["total_s"] = sum(part["total_s"] or 0.0 for part in merged["parts"])
    return merged


def _steps(x) -> str:
    return "not reached" if x is None else f"{x / 1000:,.0f}k"


def _median_steps(values: list, limit: int) -> str:
    """Median with 'not reached' ranked after every reached value."""
    ranked = sorted(math.inf if v is None else v for v in values)
    n = len(ranked)
    mid = ranked[n // 2] if n % 2 else 0.5 * (ranked[n // 2 - 1] + ranked[n // 2])
    return f"> {limit / 1000:,.0f}k" if math.isinf(mid) else f"{mid / 1000:,.0f}k"


def _or_inf(steps):
    return math.inf if steps is None else steps


def _mean(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs if r[key] is not None]
    return f"{np.mean(values):.3f}" if values else "n/a"


def _solved(runs: list[dict]) -> int:
    return sum(r["eval_steps_to_target_for_good"] is not None for r in runs)


def _advantage_error_table(base: list[dict]) -> list[str]:
    """The advantage error at each analysis point, over the baseline runs' seeds (mean, min–max)."""
    points: dict[int, list] = {}
    for r in base:
        for a in r["analysis"]:
            points.setdefault(a["requested_step"], []).append(a)
    if not points:
        return []
    cols = [("mean_abs_dadv_over_std", "mean abs dA / std(A)"),
            ("frac_norm_adv_change_gt_0.1", "frac. normalised A changed > 0.1"),
            ("adv_corr", "corr(A_cut, A_look)"),
            ("adv_std_ratio_look_over_cut", "std(A_look) / std(A_cut)"),
            ("mean_abs_dret_over_std", "mean abs dR / std(R)"),
            ("frac_ret_change_gt_0.1_std", "frac. R changed > 0.1 std(R)"),
            ("frac_open_at_rollout_end", "frac. of buffer in trajectories open at rollout end"),
            ("last_positions_over_0.01_std", "last k positions with mean dA > 0.01 std")]
    lines = ["| after steps | " + " | ".join(c[1] for c in cols) + " |", "|---:" * (len(cols) + 1) + "|"]
    for step, items in sorted(points.items()):
        cells = []
        for k, _ in cols:
            values = [x[k] for x in items]
            fmt = "{:.0f}" if k == "last_positions_over_0.01_std" else "{:.3f}"
            cells.append(f"{fmt.format(np.mean(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})")
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    return lines + ["", f"Mean over {len(base)} seeds (min–max), one buffer each.", ""]


def summary_markdown(results: dict) -> str:
    """Tables: per seed, baseline against lookahead; then the advantage error at each analysis point."""
    lines = []
    for name, entry in results["configs"].items():
        runs = {(r["seed"], r["variant"]): r for r in entry["runs"]}
        seeds = sorted({r["seed"] for r in entry["runs"]})
        limit = max(p["step"] for r in entry["runs"] for p in r["curve"])
        lines += [f"### {name}: `{entry['config']}` {entry.get('changes') or ''}", "",
                  f"{entry['num_envs']} robots x {entry['rollout_steps']} steps = {entry['steps_per_iteration']} "
                  f"agent steps per update, time_horizon {entry['time_horizon']}, gamma {entry['gamma']}, lambd "
                  f"{entry['lambd']}, network {entry['num_layers']}x{entry['hidden_units']}, lookahead L = "
                  f"{entry['lookahead']} ((gamma*lambd)^L = {entry['residual_weight_gamma_lambda_pow_L']:.1e}); "
                  "L=0 against train.iteration: max parameter difference "
                  f"{entry['zero_lookahead_max_param_diff']:.1e}.",
                  "",
                  "| seed | eval >= 0.99 first (base / look) | eval >= 0.99 for good (base / look) | eval final "
                  "success (base / look) | eval final return (base / look) | training log, last 5 summaries' "
                  "return (base / look) |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for seed in seeds:
            b, a = runs.get((seed, "baseline")), runs.get((seed, "lookahead"))
            if b is None or a is None:
                continue
            lines.append(
                f"| {seed} | {_steps(b['eval_steps_to_target'])} / {_steps(a['eval_steps_to_target'])} | "
                f"{_steps(b['eval_steps_to_target_for_good'])} / {_steps(a['eval_steps_to_target_for_good'])} | "
                f"{_fmt(b['eval_final_success_rate'])} / {_fmt(a['eval_final_success_rate'])} | "
                f"{_fmt(b['eval_final_mean_return'])} / {_fmt(a['eval_final_mean_return'])} | "
                f"{_fmt(b['last5_mean_reward'])} / {_fmt(a['last5_mean_reward'])} |")
        base, look = ([r for r in entry["runs"] if r["variant"] == v] for v in ("baseline", "lookahead"))
        medians = [f"{_median_steps([r[k] for r in base], limit)} / {_median_steps([r[k] for r in look], limit)}"
                   for k in ("eval_steps_to_target", "eval_steps_to_target_for_good")]
        means = [f"{_mean(base, k)} / {_mean(look, k)}"
                 for k in ("eval_final_success_rate", "eval_final_mean_return", "last5_mean_reward")]
        lines.append("| **median / mean** | " + " | ".join(medians + means) + " |")
        paired = [(runs[(s, "baseline")]["eval_steps_to_target_for_good"],
                   runs[(s, "lookahead")]["eval_steps_to_target_for_good"]) for s in seeds
                  if (s, "baseline") in runs and (s, "lookahead") in runs]
        faster = sum(_or_inf(a) < _or_inf(b) for b, a in paired)
        slower = sum(_or_inf(a) > _or_inf(b) for b, a in paired)
        lines += ["", f"Solved for good within {limit / 1000:,.0f}k steps: baseline {_solved(base)}/{len(base)} "
                  f"seeds, lookahead {_solved(look)}/{len(look)}. Per seed (paired), lookahead solved for good "
                  f"sooner in {faster}, later in {slower}, tied in {len(paired) - faster - slower}.", ""]
        lines += _advantage_error_table(base)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (smoke test)")
    parser.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_OUT}, or .../quick)")
    parser.add_argument("--configs", nargs="+", default=["fast", "course"], choices=sorted(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--course-seeds", nargs="+", type=int, default=None, help="seeds for the course config")
    parser.add_argument("--steps", type=int, default=None, help="agent steps per run (default: each config's)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="no training: merge these runs' results.json (e.g. other seeds) into --out and re-plot")
    args = parser.parse_args(argv)
    out_dir = args.out or (os.path.join(DEFAULT_OUT, "quick") if args.quick else DEFAULT_OUT)
    os.makedirs(out_dir, exist_ok=True)
    if args.merge:
        results = merge(args.merge)
        write_outputs(results, out_dir)
        return results

    if args.quick:
        configs = {"fast": dict(config="configs/MobileRobot-fast.yaml", network=dict(hidden_units=16),
                                hyperparameters=dict(buffer_size=256, batch_size=128), num_envs=16, lookahead=None,
                                trainer=dict(time_horizon=24), steps=512, points=(0, 256), eval_every=1,
                                eval=dict(episodes=16, max_steps=50))}
        seeds = [0]
    else:
        configs = {name: dict(CONFIGS[name]) for name in args.configs}
        if args.steps:
            for spec in configs.values():
                spec["steps"] = args.steps
                spec["points"] = tuple(p for p in spec["points"] if p <= args.steps)
        seeds = args.seeds

    results = {"machine": machine_info(), "nproc": os.cpu_count(), "success_target": SUCCESS_TARGET,
               "quick": args.quick, "configs": {}}
    t0 = time.perf_counter()
    for name, spec in configs.items():
        run_config(name, spec, args.course_seeds if (name == "course" and args.course_seeds) else seeds, results,
                   args.quick)
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    results["total_s"] = time.perf_counter() - t0
    write_outputs(results, out_dir)
    return results


def write_outputs(results: dict, out_dir: str) -> None:
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    summary = summary_markdown(results)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary + "\n")
    plot(results, os.path.join(out_dir, "curves.png"))
    plot_positions(results, os.path.join(out_dir, "position.png"))
    print(summary)
    print(f"wrote {out_dir}/results.json, summary.md, curves.png, position.png ({results['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
