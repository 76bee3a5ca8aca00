"""Replays at every checkpoint: a few short episodes of the policy being trained, as a GIF beside the checkpoint
(``<Behavior>/replays/<Behavior>-<step>.gif``) and as TensorBoard's ``Replay`` image (TensorBoard plays the GIF).

The cost is kept off the training loop: the recording program is compiled once, on a worker thread, while the
training program compiles; at a checkpoint the loop only hands the worker the networks it already gathered for the
checkpoint. The worker plays the episodes, draws them and encodes the GIF (tens of milliseconds of CPU time); the loop
writes finished ones at its next wake-up. Every checkpoint replays the same episodes (the
same starts and, for a sampled policy, the same noise), so replays show the policy changing, not the luck of the draw.
Without Pillow the replays are skipped with one warning.
"""
from __future__ import annotations

import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax

logger = logging.getLogger("rlrobot")

CELL_PIXELS = 160        # per arena: small, so that drawing and encoding stay cheap
MAX_FRAMES = 40          # longer episodes are drawn every few steps
STEPS_PER_SECOND = 10.0  # playback speed, in decisions per second


def render_gif(recording, cell: int = CELL_PIXELS, max_frames: int = MAX_FRAMES) -> tuple[bytes, tuple[int, int]]:
    """A recording as GIF bytes (at most ``max_frames`` frames) and its (width, height)."""
    from rlrobot.render import media
    from rlrobot.render.draw import Painter

    painter = Painter(recording, cell)
    stride = max(1, math.ceil(recording.frames / max_frames))
    frames = painter.frames(stride)
    return media.gif_bytes(frames, STEPS_PER_SECOND / stride), frames[0].size


class CheckpointReplays:
    """Replays of one JAX training job's runs (see the module docstring); ``submit`` at a checkpoint, ``collect``
    at every wake-up of the loop, ``close`` at the end."""

    def __init__(self, trainer, episodes: int, steps: int, deterministic: bool, seed: int, agent_example: Any) -> None:
        from rlrobot.networks import env_action, policy_distribution, sample_action
        from rlrobot.render.record import make_recorder

        network = trainer.spec.network

        def act(agent, obs, key):
            mu, log_std = policy_distribution(agent.params, agent.actor_norm, obs, network)
            return env_action(mu if deterministic else sample_action(key, mu, log_std))

        self.env, self.params = trainer.env, trainer.env_params
        self.scene = getattr(trainer, "scene", trainer.behavior)
        self.seed = seed
        self.pending: list[tuple[Any, int, Future]] = []
        self.failed = False
        self.drawn, self.cpu_seconds, self.compile_cpu_seconds = 0, 0.0, 0.0
        recorder = make_recorder(self.env, self.params, act, episodes, episodes, steps)
        example = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), agent_example)
        # What the program is built from, for rlrobot.program_cache (None: compile it every time).
        describe = getattr(trainer, "describe", None)
        description = None if describe is None else describe(
            {"episodes": episodes, "steps": steps, "deterministic": deterministic})
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="rlrobot-replay")
        self.program = self.executor.submit(self._compile, recorder, example, description)

    def _compile(self, recorder, example, description=None):
        from rlrobot import program_cache
        from rlrobot.host_devices import light_program_options
        from rlrobot.trainer import seed_key

        started = time.thread_time()
        self.key = jax.random.fold_in(seed_key(self.seed), 0x52504C59)  # "RPLY": the same episodes every time
        options = light_program_options()  # a few episodes per checkpoint: the compile costs more than the runs
        if description is None:
            program = recorder.lower(example, self.key).compile(compiler_options=options or None)
        else:
            program = program_cache.compile_cached("replay", (description, program_cache.abstract(example)),
                                                   lambda: recorder.lower(example, self.key), options)
        self.compile_cpu_seconds = time.thread_time() - started
        return program

    def wait_until_compiled(self) -> None:
        """Block until the recording program is compiled (a failure shows at the first replay)."""
        self.program.exception()

    @classmethod
    def start(cls, trainer, replay_settings, deterministic: bool, seed: int, agent_example: Any):
        """The replays of a run, or None when they are turned off or Pillow is missing (one warning)."""
        if not replay_settings.enabled:
            return None
        try:
            import PIL  # noqa: F401
        except ImportError:
            logger.warning("Checkpoint replays are skipped: drawing them needs Pillow (pip install Pillow); "
                           "replay_settings.enabled: false or --no-replays silences this.")
            return None
        return cls(trainer, replay_settings.episodes, replay_settings.steps, deterministic, seed, agent_example)

    def _render(self, agent: Any) -> tuple[bytes, tuple[int, int]]:
        from rlrobot.render.record import to_recording

        program = self.program.result()
        started = time.thread_time()
        gif = render_gif(to_recording(program(agent, self.key), self.env, self.params, self.scene))
        self.cpu_seconds += time.thread_time() - started
        self.drawn += 1
        return gif

    def submit(self, run, agent: Any, step: int) -> None:
        """Replay the networks ``agent`` (host arrays) of ``run`` at ``step``, in the background."""
        if not self.failed:
            self.pending.append((run, step, self.executor.submit(self._render, agent)))

    def collect(self, wait: bool = False) -> None:
        """Write the replays that are ready (``wait``: all of them) through their runs."""
        still = []
        for run, step, future in self.pending:
            if not (wait or future.done()):
                still.append((run, step, future))
                continue
            try:
                gif, size = future.result()
            except Exception as error:  # a replay must never stop training
                if not self.failed:
                    logger.warning(f"Checkpoint replays are off from step {step}: drawing one failed "
                                   f"({type(error).__name__}: {error}).")
                self.failed = True
                continue
            run.save_replay(step, gif, size)
        self.pending = still

    def close(self, wait: bool = True) -> None:
        """Write what is left (``wait``), or drop what has not started (a stopped run), and end the worker."""
        if not wait:
            for _, _, future in self.pending:
                future.cancel()
            self.pending = [p for p in self.pending if not p[2].cancelled()]
        self.collect(wait=True)
        self.executor.shutdown(wait=True)
        logger.debug(f"Checkpoint replays: {self.drawn} drawn in {self.cpu_seconds:.3f} s of CPU time on their thread "
                     f"(their program compiled in {self.compile_cpu_seconds:.3f} s of CPU time).")
