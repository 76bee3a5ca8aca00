"""A persistent XLA compilation cache, on by default, so a second run of a config loads its compiled program.

Compiling the training program takes seconds on every launch; JAX can keep compiled programs on disk, keyed by the
program, the JAX version and the device. The cache lives in ``$RLROBOT_CACHE_DIR`` (default: the user's cache folder,
``$XDG_CACHE_HOME/rlrobot`` or ``~/.cache/rlrobot``), under ``jax/``. ``--no-compile-cache`` or
``RLROBOT_COMPILE_CACHE=0`` turns it off (and ``rlrobot.program_cache``'s ``programs/`` beside it). A cache that
cannot be read or written only costs a compile: JAX warns and compiles as usual.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

OFF_VALUES = ("0", "false", "no", "off")


def cache_directory(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where compiled programs are kept, or None when the cache is turned off."""
    if environ.get("RLROBOT_COMPILE_CACHE", "1").strip().lower() in OFF_VALUES:
        return None
    root = environ.get("RLROBOT_CACHE_DIR") or Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlrobot"
    return Path(root) / "jax"


def enable_compile_cache(directory: Path | None) -> None:
    """Point JAX's persistent cache at ``directory`` (None: leave it off); call before anything compiles.

    Every program is cached, however quick its compile: the training program is the one that matters, and the small
    ones cost a few kilobytes. The programs rlrobot builds itself (the training step, the initial state, the replay
    recorder) are also kept whole beside it, in ``programs/`` (``rlrobot.program_cache``), so that a second run
    does not even trace them.
    """
    from rlrobot import program_cache

    program_cache.enable(None if directory is None else Path(directory).parent / "programs")
    if directory is None:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
