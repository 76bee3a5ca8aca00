"""How JAX's CPU backend is set up before it starts: the cores as devices, one per learner (``rlrobot.network_split``:
the actor and the critic), and how its compiler writes loops (the vectors' width, LLVM's optimisation level).

Kept apart from ``network_split`` so that ``rlrobot-learn`` can set these, which must happen before JAX's backend
starts, without loading the networks' modules (flax, optax, chex): a launch loads its cached programs on a worker
thread while those modules load (``program_cache.prefetch_launch``).
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path

import jax

LEARNERS = 2        # devices provided: one for the actor, one for the critic (network_split.ROLES)
_provided = False   # set by provide_host_devices
VECTOR_WIDTH_FLAG = "xla_cpu_prefer_vector_width"
CPU_INFO = Path("/proc/cpuinfo")
OPTIMIZATION_LEVEL_FLAG = "xla_backend_optimization_level"
#: LLVM's level for the CPU's programs: 2 compiles faster than XLA's 3 and ran as fast or faster (``lighter_llvm``).
CPU_OPTIMIZATION_LEVEL = 2
#: Modules through which JAX finds an accelerator (CUDA, ROCm, TPU): where one is installed, the level is left as is.
ACCELERATOR_MODULES = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                       "jax_rocm7_plugin", "libtpu")


def provide_host_devices(environ: Mapping[str, str] | None = None) -> None:
    """Give JAX's CPU backend one device per learner when this process may run on two cores or more; call before
    JAX starts (a started backend keeps its devices). An accelerator's devices are not touched, nor a count the user
    chose (``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, ``JAX_NUM_CPU_DEVICES``)."""
    environ = os.environ if environ is None else environ
    chosen = "xla_force_host_platform_device_count" in environ.get("XLA_FLAGS", "") or "JAX_NUM_CPU_DEVICES" in environ
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if chosen or cores < LEARNERS:
        return
    global _provided
    try:
        jax.config.update("jax_num_cpu_devices", LEARNERS)
        _provided = True
    except RuntimeError:  # the backend has started (a second run in one process): it keeps its devices
        pass


def provided_host_devices() -> bool:
    """Whether this process's CPU devices are ``provide_host_devices``'s: then they are the learners', and a run
    that does not split its networks keeps its robots on one device (the robots' split all-reduces every minibatch,
    which costs more than it saves on a CPU)."""
    return _provided


def tune_cpu_compiler(environ: MutableMapping[str, str] | None = None, cpu_info: Path = CPU_INFO) -> list[str]:
    """Set ``XLA_FLAGS`` as ``rlrobot-learn`` compiles (:func:`prefer_wide_vectors`, :func:`lighter_llvm`); call
    before JAX's backend starts. Returns the flags added."""
    environ = os.environ if environ is None else environ
    before = environ.get("XLA_FLAGS", "").split()
    prefer_wide_vectors(environ, cpu_info)
    lighter_llvm(environ)
    return [flag for flag in environ.get("XLA_FLAGS", "").split() if flag not in before]


def lighter_llvm(environ: MutableMapping[str, str] | None = None) -> bool:
    """Have LLVM optimise the CPU's programs at level 2 instead of XLA's 3, where JAX can only compile for the CPU
    (no accelerator plugin installed, or ``JAX_PLATFORMS=cpu``); a level the user chose is kept. Returns whether the
    flag was added.

    On a 2-core Xeon, alternated in separate processes (``benchmarks/RESULTS.md``), level 2 compiled the fast
    config's training program 0.5 s sooner and the env's 0.45 s; the programs ran as fast or a few percent faster
    (env-only 1.00-1.06x, training 0.99-1.07x over four runs). The programs compute the same functions: IEEE
    arithmetic is kept at every level (a few roundings differ, as between two CPUs).
    ``XLA_FLAGS=--xla_backend_optimization_level=3`` restores XLA's default.
    """
    environ = os.environ if environ is None else environ
    return _add_flag(environ, OPTIMIZATION_LEVEL_FLAG, CPU_OPTIMIZATION_LEVEL, lambda: _compiles_for_cpu_only(environ))


def light_program_options() -> dict[str, int]:
    """Compiler options for a program whose compile costs more than its runs (the initial state, made once; the
    checkpoint replays): on a CPU, LLVM at level 0. Measured on a 2-core Xeon: the fast config's initial state
    compiled in 0.65-0.72 s against 0.84-0.98 s, the replay program in 0.99-1.10 s against 1.17-1.33 s, and a
    replay's episodes then take 6-7 ms instead of 2-3 ms. Elsewhere: none."""
    return {OPTIMIZATION_LEVEL_FLAG: 0} if jax.default_backend() == "cpu" else {}


def _compiles_for_cpu_only(environ: Mapping[str, str]) -> bool:
    """Whether JAX will find no device but the CPU: ``JAX_PLATFORMS`` names only ``cpu``, or, unset, no accelerator
    plugin is installed (the flag is global: an accelerator's compiler would read it too)."""
    platforms = environ.get("JAX_PLATFORMS", "")
    if platforms:
        return {name.strip() for name in platforms.split(",")} <= {"cpu"}
    return not any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_MODULES)


def prefer_wide_vectors(environ: MutableMapping[str, str] | None = None, cpu_info: Path = CPU_INFO) -> bool:
    """Let XLA's CPU compiler write 512-bit vector loops where the CPU has AVX-512 (its default, 256 bits, fills
    half of each vector register); a width the user chose in ``XLA_FLAGS`` is kept. Call before JAX's backend starts.
    Returns whether the flag was added.

    The env's steps are loops over the robots, so they gain most: on a 2-core Xeon with AVX-512, alternated in
    separate processes (``benchmarks/RESULTS.md``), env-only steps ran 1.06x and training within its run-to-run
    spread. A CPU whose clock drops far under 512-bit work could lose;
    ``XLA_FLAGS=--xla_cpu_prefer_vector_width=256`` restores XLA's default.
    """
    return _add_flag(os.environ if environ is None else environ, VECTOR_WIDTH_FLAG, 512, lambda: _has_avx512(cpu_info))


def _add_flag(environ: MutableMapping[str, str], name: str, value: int, applies: Callable[[], bool]) -> bool:
    """Add ``--name=value`` to ``environ``'s ``XLA_FLAGS``, unless the user set ``name`` there or ``applies()`` says
    the flag does not fit this machine; returns whether it was added."""
    flags = environ.get("XLA_FLAGS", "")
    if name in flags or not applies():
        return False
    environ["XLA_FLAGS"] = f"{flags} --{name}={value}".strip()
    return True


def _has_avx512(cpu_info: Path) -> bool:
    """Whether the CPU lists AVX-512 Foundation among its flags (Linux's ``/proc/cpuinfo``; elsewhere: no)."""
    try:
        text = cpu_info.read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and "avx512f" in line.split() for line in text.splitlines())
