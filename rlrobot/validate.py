"""``rlrobot-validate``: how well does a policy do? Success rate, return and episode length with 95% intervals.

POLICY is an ``.onnx`` file (rlrobot's export or an ML-Agents one, either format), an rlrobot checkpoint
(``.ckpt``) or a results run folder (its ``<Behavior>.onnx``, or, for a run that did not finish, its
``<Behavior>/checkpoint.ckpt``). Each of ``--episodes`` robots plays one episode, robot i in arena i mod 8 as in
the Unity scene, inside the JAX simulator (in batches of ``JAX_BATCH`` robots, so any number fits in memory).
With ``--env PATH`` the same policy also plays a Unity build through mlagents-envs: each agent plays the same number
of whole episodes (so short episodes are not over-counted), at least ``--episodes`` in all. The table puts the
worlds side by side and is written as JSON (atomically; a bad ``--json`` is refused before anything runs).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from rlrobot.summaries import setup_logging

logger = logging.getLogger("rlrobot")
Z95 = 1.959964
# Robots simulated at once; more episodes run in batches of this many, each with its own key. A multiple of the
# scene's 8 arenas, so robot i of every batch (robot offset + i overall) plays in arena i mod 8.
JAX_BATCH = 65536
MAX_STEPS_LIMIT = 2**31 - 1  # the simulator counts decisions in int32
SECONDS_PER_DECISION = 0.02  # Unity's default fixed step, one decision per step


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound near 0% and 100%, unlike the normal one)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95% normal-approximation interval."""
    if values.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(values.mean())
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(values.size) if values.size > 1 else math.nan
    return (mean, mean - half, mean + half)


def episode_summary(success: np.ndarray, returns: np.ndarray, lengths: np.ndarray) -> dict:
    n = int(success.size)
    rate_lo, rate_hi = wilson_interval(int(success.sum()), n)
    ret, ret_lo, ret_hi = mean_interval(returns)
    length, len_lo, len_hi = mean_interval(lengths)
    return {"episodes": n, "success_rate": float(success.mean()) if n else math.nan,
            "success_rate_ci95": [rate_lo, rate_hi],
            "mean_return": ret, "mean_return_ci95": [ret_lo, ret_hi],
            "std_return": float(returns.std()) if n else math.nan,
            "mean_length": length, "mean_length_ci95": [len_lo, len_hi]}


def _usable_file(path: Path) -> bool:
    """Not empty and readable; else warns (a full disk can leave an empty ``<Behavior>.onnx``)."""
    try:
        with open(path, "rb") as f:
            empty = not f.read(1)
    except OSError as error:
        logger.warning(f"{path}: skipped, it cannot be read ({error.strerror or error}).")
        return False
    if empty:
        logger.warning(f"{path}: skipped, the file is empty (an interrupted write?).")
    return not empty


def resolve_policy_file(policy: Path) -> Path:
    """The file to validate: POLICY itself (``.onnx`` / ``.ckpt``), or in a run folder its ``<Behavior>.onnx``,
    else (a run stopped before it wrote one, or an empty one) its ``<Behavior>/checkpoint.ckpt``; a behavior folder
    gives its ``checkpoint.ckpt``. Says which file it uses when it falls back."""
    if policy.is_file() and policy.suffix in (".onnx", ".ckpt"):
        return policy
    if policy.is_dir():
        for candidate in sorted(policy.glob("*.onnx")):
            if candidate.is_file() and _usable_file(candidate):
                return candidate
        latest = [p for p in [policy / "checkpoint.ckpt", *sorted(policy.glob("*/checkpoint.ckpt"))]
                  if p.is_file() and _usable_file(p)]
        if latest:
            logger.warning(f"{policy}: no usable <Behavior>.onnx (the run did not finish?); validating its latest "
                           f"checkpoint {latest[0]}")
            return latest[0]
        raise ValueError(f"{policy}: no <Behavior>.onnx or <Behavior>/checkpoint.ckpt in this folder "
                         "(was the run trained at all?)")
    if policy.is_file():
        raise ValueError(f"{policy}: not an .onnx or .ckpt file or a results run folder")
    raise ValueError(f"{policy}: no such file or folder")


def load_policy(policy_file: Path):
    """An ``OnnxPolicy`` (``act(obs, key | None)`` in env units) from an ONNX file or an rlrobot checkpoint."""
    from rlrobot.onnx_policy import OnnxPolicy, load_onnx_policy

    if policy_file.suffix != ".ckpt":
        return load_onnx_policy(policy_file)
    from rlrobot.checkpoints import CheckpointError
    from rlrobot.export import load_agent
    from rlrobot.networks import deterministic_action, env_action, policy_distribution, sample_action

    try:
        agent, spec, _ = load_agent(policy_file)
    except CheckpointError as error:
        raise ValueError(str(error)) from None

    def act(obs, key=None):
        mu, log_std = policy_distribution(agent.params, agent.actor_norm, obs, spec)
        return deterministic_action(mu) if key is None else env_action(sample_action(key, mu, log_std))

    return OnnxPolicy(path=policy_file, observation_size=spec.obs_size, action_size=spec.action_size, act=act)


def policy_in_scene(policy_file: Path, scene: str | None, deterministic: bool):
    """The policy, the scene it plays in (``scene``, else the training scene of its observation size), the scene's
    env and ``act(obs, key)``; a policy that does not fit the scene is a one-line ValueError."""
    import envs

    policy = load_policy(policy_file)
    scene = scene or envs.TRAINING_SCENES.get(policy.observation_size)
    if scene is None:
        raise ValueError(f"{policy_file}: {policy.observation_size} observations match no built-in scene; "
                         "pass --scene")
    if scene not in envs.registered():
        raise ValueError(f"--scene {scene}: not a built-in scene; known: {', '.join(envs.registered())}")
    env = envs.make(scene)
    if env.observation_size != policy.observation_size or env.action_size != policy.action_size:
        raise ValueError(f"{policy_file}: the policy takes {policy.observation_size} observations and gives "
                         f"{policy.action_size} actions, but {scene} has {env.observation_size} and "
                         f"{env.action_size}")
    act = (lambda obs, key: policy.act(obs)) if deterministic else (lambda obs, key: policy.act(obs, key))
    return policy, scene, env, act


def write_trajectory_csv(path: Path, policy_file: Path, scene: str | None, episodes: int, deterministic: bool,
                         seed: int, max_steps: int) -> None:
    """``time, x, z, reward`` after every decision of the first ``episodes`` episodes (robot i in arena i), as
    ``Car_Agent_s8`` logs its test runs; ``time`` is simulated seconds at Unity's 0.02 s per decision, and an
    ``episode`` column tells the episodes apart."""
    import jax

    from envs.rollout import first_episode_steps
    from rlrobot.checkpoints import atomic_write_bytes

    _, _, env, act = policy_in_scene(policy_file, scene, deterministic)
    run = jax.jit(lambda key: first_episode_steps(env, env.default_params, act, key, episodes, max_steps))
    steps = jax.device_get(run(jax.random.PRNGKey(seed)))
    lines = ["time,x,z,reward,episode"]
    for episode in range(episodes):
        for t in np.flatnonzero(steps.active[:, episode]):
            x, z = steps.state.pos[t, episode]
            lines.append(f"{(t + 1) * SECONDS_PER_DECISION:.2f},{x:.4f},{z:.4f},{steps.reward[t, episode]:.4f},"
                         f"{episode}")
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def validate_in_jax(policy_file: Path, behavior: str | None, episodes: int, deterministic: bool, seed: int,
                    max_steps: int, env_parameters: dict | None = None) -> tuple[str, dict]:
    """``env_parameters``: ML-Agents' ``environment_parameters`` for the scene (each robot draws its samplers'
    values; a curriculum plays its last lesson)."""
    import jax

    from envs.rollout import first_episodes
    from rlrobot.curriculum import make_scene

    policy, behavior, env, act = policy_in_scene(policy_file, behavior, deterministic)
    env, params = make_scene(env, env_parameters, last_lesson=True)
    run = jax.jit(lambda key, n: first_episodes(env, params, act, key, n, max_steps), static_argnums=1)
    key = jax.random.PRNGKey(seed)
    if episodes <= JAX_BATCH:  # one batch: the key as given
        stats = jax.device_get(run(key, episodes))
        finished = stats.finished
        summary = episode_summary(stats.success[finished], stats.returns[finished], stats.lengths[finished])
        summary["unfinished"] = int((~finished).sum())
        return behavior, summary
    totals = EpisodeTotals()
    for index, start in enumerate(range(0, episodes, JAX_BATCH)):
        stats = jax.device_get(run(jax.random.fold_in(key, index), min(JAX_BATCH, episodes - start)))
        totals.add(stats.success, stats.returns, stats.lengths, stats.finished)
        logger.info(f"Validated {totals.played} of {episodes} episodes.")
    return behavior, totals.summary()


class EpisodeTotals:
    """:func:`episode_summary` of batches of episodes without keeping them: counts, and each of return and length
    as (count, mean, sum of squared deviations), merged batch by batch (Chan et al.) in float64."""

    def __init__(self) -> None:
        self.played = self.unfinished = self.successes = 0
        self.returns = (0, 0.0, 0.0)
        self.lengths = (0, 0.0, 0.0)

    @staticmethod
    def _merge(a: tuple[int, float, float], values: np.ndarray) -> tuple[int, float, float]:
        nb = values.size
        if nb == 0:
            return a
        values = values.astype(np.float64)
        mb = float(values.mean())
        m2b = float(((values - mb) ** 2).sum())
        na, ma, m2a = a
        n = na + nb
        delta = mb - ma
        return n, ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n

    def add(self, success: np.ndarray, returns: np.ndarray, lengths: np.ndarray, finished: np.ndarray) -> None:
        finished = np.asarray(finished, bool)
        self.played += int(finished.size)
        self.unfinished += int((~finished).sum())
        self.successes += int(np.asarray(success)[finished].sum())
        self.returns = self._merge(self.returns, np.asarray(returns)[finished])
        self.lengths = self._merge(self.lengths, np.asarray(lengths)[finished])

    def summary(self) -> dict:
        def mean_ci(moments: tuple[int, float, float]) -> tuple[float, float, float]:
            n, mean, m2 = moments
            if n == 0:
                return (math.nan, math.nan, math.nan)
            half = Z95 * math.sqrt(m2 / (n - 1)) / math.sqrt(n) if n > 1 else math.nan
            return (mean, mean - half, mean + half)

        n = self.returns[0]
        rate_lo, rate_hi = wilson_interval(self.successes, n)
        ret, ret_lo, ret_hi = mean_ci(self.returns)
        length, len_lo, len_hi = mean_ci(self.lengths)
        return {"episodes": n, "success_rate": self.successes / n if n else math.nan,
                "success_rate_ci95": [rate_lo, rate_hi],
                "mean_return": ret, "mean_return_ci95": [ret_lo, ret_hi],
                "std_return": math.sqrt(self.returns[2] / n) if n else math.nan,
                "mean_length": length, "mean_length_ci95": [len_lo, len_hi], "unfinished": self.unfinished}


def validate_in_unity(policy_file: Path, env_path: str, episodes: int, deterministic: bool, seed: int,
                      max_steps: int, **unity_options) -> tuple[str, dict]:
    """Play the policy on a Unity build: every agent plays ``ceil(episodes / agents)`` whole episodes.

    An episode still running after ``max_steps`` decisions is given up on and reported as unfinished, as on the
    JAX side. ``unity_options`` go to :class:`envs.unity.UnityBatchEnv` (ports, time-out, time scale).
    """
    import jax

    from envs.unity import UnityBatchEnv, check_policy_sizes

    policy = load_policy(policy_file)
    act = jax.jit(lambda obs, key: policy.act(obs, None if deterministic else key))
    with UnityBatchEnv(env_path, seed=seed, **unity_options) as env:
        check_policy_sizes(env, policy.observation_size, policy.action_size, str(policy_file))
        n = env.num_agents
        quota = math.ceil(episodes / n)
        played = np.zeros(n, np.int64)
        returns, lengths = np.zeros(n), np.zeros(n, np.int64)
        success, episode_returns, episode_lengths = [], [], []
        unfinished = 0
        key = jax.random.PRNGKey(seed)
        obs = env.reset()
        while np.any(played < quota):
            key, key_act = jax.random.split(key)
            out = env.step(np.asarray(act(obs, key_act)))
            counting = played < quota
            returns += out.reward
            lengths += 1
            ended = (out.terminated | out.truncated) & counting
            given_up = ~ended & counting & (lengths >= max_steps)
            for i in np.flatnonzero(ended):
                success.append(bool(out.terminated[i]))
                episode_returns.append(returns[i])
                episode_lengths.append(lengths[i])
            unfinished += int(given_up.sum())
            restart = out.terminated | out.truncated | given_up
            played += ended | given_up
            returns[restart], lengths[restart] = 0.0, 0
            obs = out.obs
        name = env.behavior_name
    summary = episode_summary(np.array(success, bool), np.array(episode_returns), np.array(episode_lengths, float))
    summary["unfinished"] = unfinished
    return name, summary


def format_table(columns: dict[str, dict]) -> str:
    def cell(summary: dict, key: str, fmt: str) -> str:
        lo, hi = summary[f"{key}_ci95"]
        return f"{summary[key]:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"

    rows = [("episodes", lambda s: str(s["episodes"])),
            ("success rate [95% CI]", lambda s: cell(s, "success_rate", ".3f")),
            ("mean return [95% CI]", lambda s: cell(s, "mean_return", ".3f")),
            ("std of return", lambda s: f"{s['std_return']:.3f}"),
            ("mean episode length [95% CI]", lambda s: cell(s, "mean_length", ".1f"))]
    names = list(columns)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(fn(columns[n]) for n in names) + " |" for label, fn in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlrobot-validate", description=__doc__.split("\n")[0])
    parser.add_argument("policy", type=Path, help=".onnx file or results run folder")
    parser.add_argument("--episodes", type=int, default=512)
    parser.add_argument("--deterministic", action="store_true", help="act with the mean action (μ), not a sample")
    parser.add_argument("--scene", "--behavior", dest="behavior",
                        help="built-in scene to run in (default: the training scene of the policy's observation size)")
    parser.add_argument("--env", dest="env_path", help="also validate on this Unity build (or a stand-in player)")
    parser.add_argument("--base-port", type=int, default=5005, help="Unity: port mlagents-envs listens on")
    parser.add_argument("--timeout-wait", type=int, default=60, help="Unity: seconds to wait for the player")
    parser.add_argument("--time-scale", type=float, default=20.0, help="Unity: engine time scale")
    parser.add_argument("--no-graphics", action="store_true", help="Unity: run the player without rendering")
    parser.add_argument("--env-args", nargs=argparse.REMAINDER, default=[],
                        help="Unity: arguments passed on to the player (must come last)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=3000, help="give up on an episode after this many decisions")
    parser.add_argument("--json", type=Path, help="where to write the table as JSON (default: beside the policy)")
    parser.add_argument("--env-parameters", metavar="FILE",
                        help="environment_parameters for the JAX scene, from a YAML (a trainer config such as the "
                             "run's configuration.yaml, or a bare mapping); a curriculum plays its last lesson")
    parser.add_argument("--trajectory-csv", type=Path, metavar="PATH",
                        help="also write time, x, z, reward per decision of the first --trajectory-episodes episodes")
    parser.add_argument("--trajectory-episodes", type=int, default=2, metavar="N",
                        help="episodes in --trajectory-csv (default 2, as the course's test scene runs)")
    parser.add_argument("--render", type=Path, metavar="OUT",
                        help="also draw the first --render-episodes episodes (.gif, .mp4, .png, .html: rlrobot-render)")
    parser.add_argument("--render-episodes", type=int, default=8, metavar="N",
                        help="episodes --render draws (default 8)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(False)
    from rlrobot.checkpoints import output_problem

    problem = _argument_problem(args)
    if problem:
        logger.error(problem)
        return 2
    try:
        policy_file = resolve_policy_file(args.policy)
    except ValueError as error:
        logger.error(str(error))
        return 2
    out = args.json or policy_file.with_name(policy_file.stem + ".validation.json")
    flag = f"--json {out}" if args.json else str(out)
    problem = output_problem(out)  # before the work, so a bad --json costs nothing
    if problem:
        logger.error(f"{flag}: {problem}")
        return 2
    problem = args.trajectory_csv and output_problem(args.trajectory_csv)
    if problem:
        logger.error(f"--trajectory-csv {args.trajectory_csv}: {problem}")
        return 2
    from rlrobot.render.cli import validation_render_problem

    problem = validation_render_problem(args)
    if problem:
        logger.error(problem)
        return 2
    try:
        env_parameters = _env_parameters(args.env_parameters)
        behavior, summary = validate_in_jax(policy_file, args.behavior, args.episodes, args.deterministic, args.seed,
                                            args.max_steps, env_parameters)
    except ValueError as error:
        logger.error(str(error))
        return 2
    columns, behaviors = {"JAX sim": summary}, [behavior]
    if args.trajectory_csv:
        write_trajectory_csv(args.trajectory_csv, policy_file, behavior, args.trajectory_episodes,
                             args.deterministic, args.seed, args.max_steps)
        logger.info(f"Wrote {args.trajectory_csv}")
    if args.render:
        from rlrobot.render.cli import render_validation

        render_validation(args, policy_file, behavior, env_parameters)
    if args.env_path:
        code = _unity_column(args, policy_file, columns, behaviors)
        if code:
            return code
    return _report(args, policy_file, behaviors, columns, out, flag)


def _unity_column(args: argparse.Namespace, policy_file: Path, columns: dict, behaviors: list[str]) -> int:
    """Add the build's column (and its behavior name); returns an exit code, 0 when it worked."""
    try:
        from envs.unity import UnityError
    except ImportError as error:
        logger.error(f"--env needs mlagents-envs ({error}); install it with: pip install 'rlrobot[unity]'")
        return 2
    try:
        behavior, columns[f"Unity: {Path(args.env_path).name}"] = validate_in_unity(
            policy_file, args.env_path, args.episodes, args.deterministic, args.seed, args.max_steps,
            behavior=args.behavior, base_port=args.base_port, timeout_wait=args.timeout_wait,
            time_scale=args.time_scale, no_graphics=args.no_graphics, additional_args=tuple(args.env_args))
    except UnityError as error:
        logger.error(str(error))
        return 1
    behaviors.append(behavior)
    return 0


def _report(args: argparse.Namespace, policy_file: Path, behaviors: list[str], columns: dict, out: Path,
            flag: str) -> int:
    """Print the table and write it as JSON (atomically)."""
    from rlrobot.checkpoints import atomic_write_bytes

    mode = "deterministic" if args.deterministic else "sampled"
    print(f"{policy_file} on {' and '.join(behaviors)} ({mode} actions)")
    print(format_table(columns))
    text = json.dumps({"policy": str(policy_file), "behavior": behaviors[0], "actions": mode, "columns": columns},
                      indent=2)
    try:
        atomic_write_bytes(out, (text + "\n").encode("utf-8"))
    except OSError as error:
        logger.error(f"{flag}: cannot write the table ({error.strerror or error})")
        return 2
    logger.info(f"Wrote {out}")
    return 0


def _env_parameters(path: str | None) -> dict | None:
    """``--env-parameters FILE`` read and checked (a problem is a one-line ValueError)."""
    if path is None:
        return None
    from rlrobot.config import ConfigError
    from rlrobot.curriculum import load_environment_parameters

    try:
        parameters = load_environment_parameters(path)
    except ConfigError as error:
        raise ValueError(str(error)) from None
    logger.info(f"Environment parameters from {path}: {', '.join(parameters) or 'none'} (curricula at their last "
                f"lesson).")
    return parameters


def _argument_problem(args: argparse.Namespace) -> str | None:
    if args.episodes < 1:
        return f"--episodes {args.episodes}: must be at least 1"
    if not 1 <= args.trajectory_episodes <= 64:
        return f"--trajectory-episodes {args.trajectory_episodes}: must be between 1 and 64"
    if not 1 <= args.max_steps <= MAX_STEPS_LIMIT:
        return f"--max-steps {args.max_steps}: must be between 1 and {MAX_STEPS_LIMIT}"
    if not -(2**63) <= args.seed < 2**63:
        return f"--seed {args.seed}: must fit in 64 bits"
    return None


if __name__ == "__main__":
    sys.exit(main())
