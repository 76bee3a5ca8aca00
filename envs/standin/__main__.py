"""``python -m envs.standin build DIR`` | ``python -m envs.standin play [Unity player arguments]``."""
from __future__ import annotations

import argparse
import logging
import sys

DEFAULT_SCENE = "MobileRobot"

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(message)s"


def play_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="envs.standin play", allow_abbrev=False,
        description="Serve the MobileRobot stand-in to a trainer over ML-Agents' protocol.")
    parser.add_argument("--mlagents-port", type=int, required=True, help="the trainer's port (base_port + worker_id)")
    parser.add_argument("-logFile", "-logfile", dest="log_file", help="write the log here (default: stderr)")
    parser.add_argument("-nographics", action="store_true", help="accepted and ignored, as Unity's flag")
    parser.add_argument("-batchmode", action="store_true", help="accepted and ignored, as Unity's flag")
    parser.add_argument("--agents", type=int, default=8, help="robots per area (default 8: the scene's arenas)")
    parser.add_argument("--decision-period", type=int, default=1, help="Academy steps per decision")
    parser.add_argument("--shuffle-order", action="store_true", help="permute the agents' order in every message")
    parser.add_argument("--seed", type=int, help="reset randomness (default: the seed the trainer sends)")
    parser.add_argument("--crash-after", type=int, help="SIGKILL itself after answering this many STEP commands")
    parser.add_argument("--crash-once", metavar="FILE", help="with --crash-after: crash only if FILE does not exist "
                        "yet, creating it (so a relaunched player does not crash again)")
    parser.add_argument("--hang-after", type=int, help="stop answering after this many STEP commands")
    parser.add_argument("--connect-timeout", type=float, default=60.0, help="seconds to wait for the trainer")
    parser.add_argument("--sensors", type=_sizes, default=(), metavar="N,N,...",
                        help="send the observation as several vector sensors of these sizes (adding up to the "
                             "scene's observation size)")
    parser.add_argument("--scene", default=DEFAULT_SCENE,
                        help=f"the built-in scene to serve (default {DEFAULT_SCENE}); its behavior is always called "
                             "MobileRobot, as in the course's Unity builds")
    return parser


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of sizes: {text!r}") from None


def play(argv: list[str]) -> int:
    args, unknown = play_parser().parse_known_args(argv)  # a Unity player ignores arguments it does not know
    problem = _check_options(args)
    if problem:
        print(f"standin: {problem}", file=sys.stderr)
        return 2
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers[0].setLevel(logging.ERROR)  # the log file gets everything, stderr the reason for a non-zero exit
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, handlers=handlers)
    log = logging.getLogger("envs.standin")
    log.setLevel(logging.INFO)
    log.info(f"MobileRobot protocol stand-in, argv {argv}")
    if unknown:
        log.warning(f"ignoring unknown arguments {unknown}")
    from envs.standin.player import Player, PlayerOptions

    return Player(PlayerOptions(port=args.mlagents_port, agents=args.agents, decision_period=args.decision_period,
                                shuffle_order=args.shuffle_order, seed=args.seed, crash_after=args.crash_after,
                                crash_once=args.crash_once, hang_after=args.hang_after,
                                connect_timeout=args.connect_timeout, sensors=args.sensors,
                                scene=args.scene)).run()


def _check_options(args: argparse.Namespace) -> str | None:
    """What is wrong with the player options, if anything."""
    import envs

    if args.scene not in envs.registered():
        return f"--scene {args.scene}: not a built-in scene; known: {', '.join(envs.registered())}"
    if args.agents < 1 or args.decision_period < 1:
        return "--agents and --decision-period must be at least 1"
    if args.crash_once is not None and args.crash_after is None:
        return "--crash-once needs --crash-after"
    size = envs.make(args.scene).observation_size
    if args.sensors and (sum(args.sensors) != size or min(args.sensors) < 1):
        return f"--sensors {','.join(map(str, args.sensors))}: the sizes must be positive and add up to {size}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["play"]:
        return play(argv[1:])
    parser = argparse.ArgumentParser(prog="rlrobot-standin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write DIR/MobileRobot.x86_64, a launcher mlagents-envs can start")
    build.add_argument("directory")
    build.add_argument("--scene", default=DEFAULT_SCENE, help="the built-in scene the launcher serves")
    sub.add_parser("play", help="run the player (mlagents-envs does this with Unity's arguments)")
    args = parser.parse_args(argv)
    from envs.standin.build import write_launcher

    try:
        print(write_launcher(args.directory, scene=args.scene))
    except (OSError, ValueError) as error:
        print(f"rlrobot-standin: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
