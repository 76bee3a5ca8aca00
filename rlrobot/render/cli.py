"""``rlrobot-render``: watch a policy drive. POLICY plays N episodes in the JAX simulator, drawn to OUT.

POLICY is a results run folder, an rlrobot checkpoint (``.ckpt``) or an ``.onnx`` file (rlrobot's export or an
ML-Agents one, e.g. Unity's own). OUT's extension picks the output: ``.gif``, ``.mp4`` (needs imageio-ffmpeg),
``.png`` (a still grid of the whole trajectories) or ``.html`` (a self-contained viewer). Robot i plays in arena
i mod 8, as in the Unity scene and in ``rlrobot-validate`` (the same seed plays the same episodes). Bad input is one
``[ERROR]`` line and exit code 2, with nothing written.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from rlrobot.summaries import setup_logging

logger = logging.getLogger("rlrobot")
FORMATS = (".gif", ".mp4", ".png", ".html")
MAX_EPISODES = 64
MAX_STEPS = 10_000


def output_problem(path: Path) -> str | None:
    """Why OUT cannot be written (format, encoder, folder), or None; checked before any work."""
    from rlrobot.checkpoints import output_problem as file_problem

    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        return f"unsupported format {suffix or '(no extension)'}; use {', '.join(FORMATS)}"
    if suffix in (".gif", ".mp4", ".png"):
        try:
            import PIL  # noqa: F401
        except ImportError:
            return f"writing {suffix} needs Pillow; install it with: pip install Pillow"
    if suffix == ".mp4":
        from rlrobot.render.media import mp4_problem

        problem = mp4_problem()
        if problem:
            return problem
    return file_problem(path)


def _checkpoint_names(policy_file: Path) -> list[str]:
    """The scene and behavior a checkpoint records: the ``.ckpt`` itself, or for a run's ``<Behavior>.onnx`` (or
    ``<Behavior>-<step>.onnx``) the run's latest checkpoint beside it."""
    from rlrobot.checkpoints import CheckpointError, read_metadata

    candidates = [policy_file] if policy_file.suffix == ".ckpt" else [
        policy_file.parent / policy_file.stem / "checkpoint.ckpt", policy_file.parent / "checkpoint.ckpt"]
    for checkpoint in candidates:
        if checkpoint.is_file():
            try:
                metadata = read_metadata(checkpoint)[1]
            except CheckpointError:
                continue
            return [name for name in (metadata.get("scene"), metadata.get("behavior")) if isinstance(name, str)]
    return []


def default_scene(policy_file: Path, observation_size: int) -> str:
    """The scene a policy was trained in: the one its checkpoint records, its file's behavior name, else the
    training scene of its observation size (``envs.TRAINING_SCENES``), else the first scene that fits."""
    import envs

    names = envs.registered()
    named = [*_checkpoint_names(policy_file), policy_file.stem.split("-")[0],
             getattr(envs, "TRAINING_SCENES", {}).get(observation_size)]
    for name in named:
        if name in names and envs.make(name).observation_size == observation_size:
            return name
    matching = [name for name in names if envs.make(name).observation_size == observation_size]
    if not matching:
        raise ValueError(f"{policy_file}: {observation_size} observations match no built-in scene "
                         f"({', '.join(names)}); pass --scene")
    return matching[0]


def scene_and_policy(policy_file: Path, scene_name: str | None):
    """``(scene name, env, OnnxPolicy)``, the scene checked against the policy's sizes (ValueError: one line)."""
    import envs
    from rlrobot.validate import load_policy

    if scene_name is not None and scene_name not in envs.registered():
        raise ValueError(f"--scene {scene_name}: unknown scene; known: {', '.join(envs.registered())}")
    policy = load_policy(policy_file)
    scene_name = scene_name or default_scene(policy_file, policy.observation_size)
    env = envs.make(scene_name)
    if (env.observation_size, env.action_size) != (policy.observation_size, policy.action_size):
        raise ValueError(f"{policy_file}: the policy takes {policy.observation_size} observations and gives "
                         f"{policy.action_size} actions, but {scene_name} has {env.observation_size} and "
                         f"{env.action_size}")
    return scene_name, env, policy


def record(policy_file: Path, scene_name: str | None, episodes: int, deterministic: bool, seed: int,
           max_steps: int, num_envs: int | None = None, key=None, env_parameters: dict | None = None):
    """Play the first ``episodes`` of ``num_envs`` robots (default: as many), as ``rlrobot-validate`` plays them
    (``env_parameters``: ML-Agents' ``environment_parameters``, samplers drawn per robot, curricula at their last
    lesson, as ``rlrobot-validate --env-parameters``)."""
    import jax

    from rlrobot.curriculum import make_scene
    from rlrobot.render.record import record_policy

    scene_name, env, policy = scene_and_policy(policy_file, scene_name)
    env, params = make_scene(env, env_parameters, last_lesson=True)
    act = (lambda _, obs, k: policy.act(obs)) if deterministic else (lambda _, obs, k: policy.act(obs, k))
    key = jax.random.PRNGKey(seed) if key is None else key
    return record_policy(env, params, scene_name, act, None, key, episodes, max_steps, num_envs)


def load_env_parameters(path: str | None) -> dict | None:
    """``--env-parameters FILE``: a trainer YAML's (or a bare mapping's) ``environment_parameters`` (ValueError)."""
    if path is None:
        return None
    from rlrobot.config import ConfigError
    from rlrobot.curriculum import load_environment_parameters

    try:
        return load_environment_parameters(path)
    except ConfigError as error:
        raise ValueError(str(error)) from None


def write_recording(recording, out: Path, fps: float, cell: int, title: str) -> Path:
    """Draw ``recording`` into OUT by its extension."""
    if out.suffix.lower() == ".html":
        from rlrobot.render.viewer import write_viewer

        return write_viewer(recording, out, fps=fps, title=title)
    from rlrobot.render import media
    from rlrobot.render.draw import Painter

    painter = Painter(recording, cell)
    picture = painter.still() if out.suffix.lower() == ".png" else painter.frames()
    return media.write(picture, out, fps)


def validation_render_problem(args: argparse.Namespace) -> str | None:
    """``rlrobot-validate --render OUT --render-episodes N``: what is wrong with them, checked before validating."""
    if args.render is None:
        return None
    if not 1 <= args.render_episodes <= MAX_EPISODES:
        return f"--render-episodes {args.render_episodes}: must be between 1 and {MAX_EPISODES}"
    problem = output_problem(args.render)
    return problem and f"--render {args.render}: {problem}"


def render_validation(args: argparse.Namespace, policy_file: Path, scene_name: str,
                      env_parameters: dict | None = None) -> Path:
    """Draw the first ``--render-episodes`` of the episodes ``rlrobot-validate`` just played in the JAX sim: the same
    robots, keys, scene parameters and actions (its first batch of robots; see ``rlrobot.validate.JAX_BATCH``)."""
    import jax

    from rlrobot.validate import JAX_BATCH

    robots = min(args.episodes, JAX_BATCH)
    key = jax.random.PRNGKey(args.seed)
    key = key if args.episodes <= JAX_BATCH else jax.random.fold_in(key, 0)
    recording = record(policy_file, scene_name, min(args.render_episodes, robots), args.deterministic, args.seed,
                       args.max_steps, num_envs=robots, key=key, env_parameters=env_parameters)
    mode = "deterministic" if args.deterministic else "sampled"
    title = f"{policy_file.name} in {scene_name}: validation episodes ({mode} actions, seed {args.seed})"
    path = write_recording(recording, args.render, 10.0, 240, title)
    logger.info(f"Wrote {path}: the first {recording.episodes} validation episodes.")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlrobot-render", description=__doc__.split("\n")[0])
    parser.add_argument("policy", type=Path, help="results run folder, .ckpt or .onnx")
    parser.add_argument("-o", "--output", type=Path, required=True, help="OUT: .gif, .mp4, .png or .html")
    parser.add_argument("--scene", help="scene to drive in (default: the one the policy was trained in)")
    parser.add_argument("--episodes", type=int, default=4, help=f"episodes to draw, in a grid (1-{MAX_EPISODES})")
    parser.add_argument("--deterministic", action="store_true", help="act with the mean action (μ), not a sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-parameters", metavar="FILE",
                        help="environment_parameters for the scene, from a YAML (a trainer config or a bare mapping); "
                             "samplers drawn per robot, curricula at their last lesson")
    parser.add_argument("--max-steps", type=int, default=500, help="stop drawing an episode after this many steps")
    parser.add_argument("--fps", type=float, default=10.0, help="steps per second of the animation")
    parser.add_argument("--size", type=int, default=240, help="pixels per arena")
    return parser


def argument_problem(args: argparse.Namespace) -> str | None:
    if not 1 <= args.episodes <= MAX_EPISODES:
        return f"--episodes {args.episodes}: must be between 1 and {MAX_EPISODES}"
    if not 1 <= args.max_steps <= MAX_STEPS:
        return f"--max-steps {args.max_steps}: must be between 1 and {MAX_STEPS}"
    if not 0.1 <= args.fps <= 100:
        return f"--fps {args.fps}: must be between 0.1 and 100"
    if not 64 <= args.size <= 2048:
        return f"--size {args.size}: must be between 64 and 2048 pixels"
    if not -(2**63) <= args.seed < 2**63:
        return f"--seed {args.seed}: must fit in 64 bits"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(False)
    problem = argument_problem(args)
    out_problem = output_problem(args.output)
    if problem or out_problem:
        logger.error(problem or f"-o {args.output}: {out_problem}")
        return 2
    from rlrobot.compile_cache import cache_directory, enable_compile_cache
    from rlrobot.validate import resolve_policy_file

    started = time.perf_counter()
    try:
        policy_file = resolve_policy_file(args.policy)
        enable_compile_cache(cache_directory())
        recording = record(policy_file, args.scene, args.episodes, args.deterministic, args.seed, args.max_steps,
                           env_parameters=load_env_parameters(args.env_parameters))
    except ValueError as error:
        logger.error(str(error))
        return 2
    mode = "deterministic" if args.deterministic else "sampled"
    title = f"{policy_file.name} in {recording.scene} ({mode} actions, seed {args.seed})"
    try:
        write_recording(recording, args.output, args.fps, args.size, title)
    except OSError as error:
        logger.error(f"-o {args.output}: cannot write it ({error.strerror or error})")
        return 2
    outcomes = ", ".join(f"{recording.outcome_name(k)} in {int(n)}" for k, n in enumerate(recording.length))
    logger.info(f"Wrote {args.output}: {recording.episodes} episodes of {recording.scene} ({outcomes}) in "
                f"{time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
