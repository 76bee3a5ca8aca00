"""The CPU's cores as JAX devices, one per learner (``rlrobot.network_split``: the actor and the critic).

Kept apart from ``network_split`` so that ``rlrobot-learn`` can set the device count, which must happen before JAX's
backend starts, without loading the networks' modules (flax, optax, chex): a launch loads its cached programs on a
worker thread while those modules load (``program_cache.prefetch_launch``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import jax

LEARNERS = 2        # devices provided: one for the actor, one for the critic (network_split.ROLES)
_provided = False   # set by provide_host_devices


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
