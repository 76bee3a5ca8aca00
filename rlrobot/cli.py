"""``rlrobot-learn``: mlagents-learn's command line, training the built-in JAX robot (or a Unity build with --env).

Flags keep ML-Agents' names and meanings; only the flags a user actually types override the YAML.
Errors in the config or the run folder print one ``[ERROR]`` line and exit with code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys

from rlrobot.config import CheckpointSettings, ConfigError, RunSettings, is_builtin_scene, load_run_settings
from rlrobot.summaries import setup_logging

logger = logging.getLogger("rlrobot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlrobot-learn", description=__doc__.split("\n")[0],
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("trainer_config_path", help="ML-Agents trainer YAML (e.g. configs/MobileRobot.yaml)")
    parser.add_argument("--env", dest="env_path",
                        help="a built-in scene (MobileRobot, MobileRobotObstacles, MobileRobotTest2020, "
                             "MobileRobotTest2021) or the path of a Unity build to train on")
    parser.add_argument("--run-id", dest="run_id", help="results go to <results-dir>/<run-id> (default: ppo)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--force", action="store_true", help="overwrite an existing run with the same id")
    parser.add_argument("--initialize-from", dest="initialize_from", metavar="RUN_ID",
                        help="start from another run's networks (step starts at 0)")
    parser.add_argument("--seed", type=int, help="random seed (default -1: pick one)")
    parser.add_argument("--inference", action="store_true", help="run the policy without training")
    parser.add_argument("--deterministic", action="store_true", help="act with the distribution's mean")
    parser.add_argument("--num-envs", dest="num_envs", type=int,
                        help="parallel robots (JAX) or Unity instances (--env)")
    parser.add_argument("--results-dir", dest="results_dir", help="results root (default: results)")
    parser.add_argument("--num-areas", dest="num_areas", type=int,
                        help="training areas per environment (Unity: sent to the build; JAX: multiplies the robots)")
    parser.add_argument("--torch-device", dest="device", metavar="DEVICE",
                        help="accepted for ML-Agents compatibility; JAX picks the devices (see --devices)")
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    parser.add_argument("--no-compile-cache", dest="compile_cache", action="store_false", default=True,
                        help="compile afresh instead of loading a program compiled by an earlier run "
                             "(also RLROBOT_COMPILE_CACHE=0; the cache is in RLROBOT_CACHE_DIR or ~/.cache/rlrobot)")
    parser.add_argument("--no-replays", dest="replays", action="store_false", default=True,
                        help="write no replay GIF at checkpoints (also replay_settings: {enabled: false})")
    unity = parser.add_argument_group("Unity build (--env)")
    unity.add_argument("--base-port", dest="base_port", type=int, help="first port to listen on")
    unity.add_argument("--timeout-wait", dest="timeout_wait", type=int, help="seconds to wait for the player")
    unity.add_argument("--max-lifetime-restarts", dest="max_lifetime_restarts", type=int,
                       help="times one player may crash and be relaunched (-1: no limit; default 10)")
    unity.add_argument("--restarts-rate-limit-n", dest="restarts_rate_limit_n", type=int,
                       help="restarts of one player allowed per period (-1: no limit; default 1)")
    unity.add_argument("--restarts-rate-limit-period-s", dest="restarts_rate_limit_period_s", type=int,
                       help="the period of --restarts-rate-limit-n, in seconds (default 60)")
    unity.add_argument("--width", type=int, help="player window width (default 84)")
    unity.add_argument("--height", type=int, help="player window height (default 84)")
    unity.add_argument("--quality-level", dest="quality_level", type=int, help="Unity quality level (default 5)")
    unity.add_argument("--time-scale", dest="time_scale", type=float, help="engine time scale (default 20)")
    unity.add_argument("--target-frame-rate", dest="target_frame_rate", type=int, help="default -1: unlimited")
    unity.add_argument("--capture-frame-rate", dest="capture_frame_rate", type=int, help="default 60")
    unity.add_argument("--no-graphics", dest="no_graphics", action="store_true", help="run without rendering")
    unity.add_argument("--no-graphics-monitor", dest="no_graphics_monitor", action="store_true",
                       help="render only the first player (the others run with -nographics)")
    unity.add_argument("--listen-address", dest="listen_address", default="127.0.0.1", metavar="ADDRESS",
                       help="where the trainer listens for the player (default 127.0.0.1: a player on this machine; "
                            "0.0.0.0 or another interface's address for a player elsewhere, unauthenticated)")
    unity.add_argument("--env-args", dest="env_args", nargs=argparse.REMAINDER,
                       help="arguments passed on to the player (must come last)")
    scale = parser.add_argument_group("scale out (JAX robot)")
    scale.add_argument("--devices", type=int,
                       help="split the robots across this many devices (default: all; on a CPU with two cores, one, "
                            "the actor and the critic learning on a core each; 1: one device, no split)")
    scale.add_argument("--seeds", type=int, help="train this many seeds (seed, seed+1, ...) in one compiled program")
    scale.add_argument("--sweep", metavar="FILE",
                       help="YAML of hyperparameter lists, e.g. {learning_rate: [3e-4, 1e-3]}")
    scale.add_argument("--coordinator-address", dest="coordinator_address", metavar="HOST:PORT",
                       help="multi-host: process 0's address (with --num-processes and --process-id)")
    scale.add_argument("--num-processes", dest="num_processes", type=int, help="multi-host: processes in the job")
    scale.add_argument("--process-id", dest="process_id", type=int, help="multi-host: this process's index")
    return parser


SCALE_FLAGS = ("devices", "seeds", "sweep", "coordinator_address", "num_processes", "process_id")


def _scale_options(scale: dict) -> dict:
    """``run_training``'s keyword options from the scale-out flags (a one-line ConfigError on a bad value)."""
    from rlrobot.seeds import load_sweep

    seeds = scale.get("seeds", 1)
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: must be a positive integer.")
    sweep = load_sweep(scale["sweep"]) if "sweep" in scale else None
    return {"devices": scale.get("devices"), "seeds": seeds, "sweep": sweep}


def launch_description(settings: RunSettings, options: dict) -> tuple:
    """What decides a JAX run's compiled programs, less what changes between launches of one config: its run
    folder, how it starts (``--force``, ``--resume``, ``--initialize-from``), its seed and ``--debug``."""
    kept = CheckpointSettings(inference=settings.checkpoint_settings.inference)
    same = dataclasses.replace(settings, checkpoint_settings=kept, debug=False,
                               env_settings=dataclasses.replace(settings.env_settings, seed=-1))
    return "rlrobot-learn", repr(same), repr(options)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("trainer_config_path")
    scale = {name: args.pop(name) for name in SCALE_FLAGS if name in args}
    listen_address = args.pop("listen_address")
    compile_cache = args.pop("compile_cache")
    replays = args.pop("replays")
    setup_logging(bool(args.get("debug", False)))
    try:
        settings = load_run_settings(config_path, args)
        if not replays:
            settings = dataclasses.replace(
                settings, replay_settings=dataclasses.replace(settings.replay_settings, enabled=False))
        options = _scale_options(scale)
    except ConfigError as error:
        logger.error(str(error))
        return 2
    if settings.env_settings.env_path is not None and not is_builtin_scene(settings.env_settings.env_path) and scale:
        logger.error(f"--{next(iter(scale)).replace('_', '-')}: scaling out applies to the JAX robot; with --env, "
                     f"use --num-envs to run several Unity players.")
        return 2
    from rlrobot.distributed import DistributedSettings, initialize
    from rlrobot.host_devices import provide_host_devices, tune_cpu_compiler  # jax loads once the arguments are good

    tune_cpu_compiler()  # 512-bit vector loops on a CPU with AVX-512; LLVM at level 2 where only the CPU compiles
    if scale.get("num_processes") is None:
        provide_host_devices()  # a CPU's cores as two devices, for the actor and the critic to learn side by side
    try:
        fields = ("coordinator_address", "num_processes", "process_id")
        initialize(DistributedSettings(**{k: scale.get(k) for k in fields}))
    except ValueError as error:
        logger.error(str(error))
        return 2
    from rlrobot import program_cache
    from rlrobot.compile_cache import cache_directory, enable_compile_cache

    enable_compile_cache(cache_directory() if compile_cache else None)
    unity = settings.env_settings.env_path is not None and not is_builtin_scene(settings.env_settings.env_path)
    if not unity and scale.get("num_processes") is None:
        program_cache.prefetch_launch(launch_description(settings, options))  # loads while the trainer loads
    from rlrobot.run import RunError
    from rlrobot.runner import run_training

    try:
        if unity:
            from rlrobot.unity_runner import run_unity_training  # mlagents-envs loads only for a Unity build
            return run_unity_training(settings, ["rlrobot-learn", *argv], listen_address=listen_address)
        return run_training(settings, ["rlrobot-learn", *argv], **options)
    except RunError as error:
        logger.error(str(error))
        return 2
    except KeyboardInterrupt:
        logger.info("Interrupted before training started; nothing was saved.")
        return 130


def entry() -> None:
    """The ``rlrobot-learn`` command: ``main``, then an exit that a late Ctrl+C or SIGTERM cannot turn into a
    traceback from JAX's shutdown (everything is saved by then)."""
    code = main()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    entry()
