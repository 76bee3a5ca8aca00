"""Data parallelism over a 1-D device mesh: robots split across devices, networks and optimiser replicated.

The iteration in ``train`` is written for one device. Jitted over placed arrays and with a few sharding hints
(``constrain``), XLA's GSPMD partitioner splits the robots' axis (env state, rollout, minibatches) and inserts the
all-reduces the global maths needs: gradient means, normaliser sums, advantage statistics, metric sums. The program
keeps the single-device semantics (the global batch, every random draw — threefry is partitionable), so N devices
compute the same run as one, up to the order of float sums.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXIS = "robots"


def choose_devices(requested: int | None, num_envs: int) -> list[jax.Device]:
    """All devices (``--devices`` left out) or the first ``requested``; robots must split evenly across them.

    Raises ValueError with a one-line message naming the flag when the request cannot be met.
    """
    available = jax.devices()
    count = len(available) if requested is None else requested
    if count < 1 or count > len(available):
        raise ValueError(f"--devices {count}: must be between 1 and the {len(available)} "
                         f"{jax.default_backend()} device(s) available.")
    if jax.process_count() > 1 and count != len(available):
        raise ValueError(f"--devices {count}: a multi-process run uses all {len(available)} devices of its processes.")
    if num_envs % count:
        raise ValueError(f"--num-envs {num_envs} does not split evenly across {count} devices; "
                         f"use a multiple of {count} or set --devices.")
    return available[:count]


def make_mesh(devices: Sequence[jax.Device]) -> Mesh | None:
    """The robots' mesh, or None on one device (the plain single-device program, bit for bit)."""
    if len(devices) == 1:
        return None
    return Mesh(np.asarray(devices), (AXIS,), axis_types=(AxisType.Auto,))


def _split(mesh: Mesh, batch_dims: int) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_dims), AXIS))


def _replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(state: Any, mesh: Mesh, batch_dims: int = 0) -> Any:
    """A TrainState of shardings: robots' arrays split on their robot axis (the carried trajectory steps, time-major,
    on their second), everything else replicated.

    ``batch_dims`` counts leading axes before the robot axis (1 for vmapped seeds).
    """
    split, replicated = _split(mesh, batch_dims), _replicated(mesh)
    per_robot = {"env_state", "obs", "tracker"}
    time_major = {"carry"}   # [steps, robots, ...]: the robot axis comes after the time axis
    shardings = {}
    for name in state.__dataclass_fields__:
        sharding = (split if name in per_robot else _split(mesh, batch_dims + 1) if name in time_major
                    else replicated)
        shardings[name] = jax.tree.map(lambda _, sharding=sharding: sharding, getattr(state, name))
    return state.replace(**shardings)


def place(state: Any, mesh: Mesh | None, batch_dims: int = 0) -> Any:
    """Put a host-complete state (the same on every process) onto the mesh; each process fills its own shards."""
    if mesh is None:
        return state
    host = jax.device_get(state)
    return jax.tree.map(lambda x, sharding: jax.make_array_from_callback(np.shape(x), sharding,
                                                                         lambda index: np.asarray(x)[index]),
                        host, state_shardings(state, mesh, batch_dims))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Host values every device needs whole (swept hyperparameters), on every device of the mesh."""
    if mesh is None:
        return tree
    sharding = _replicated(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda index: np.asarray(x)[index]), tree)


def constrain(tree: Any, mesh: Mesh | None, axis: int = 0) -> Any:
    """Inside jit: split ``axis`` of every leaf over the robots' devices (a no-op without a mesh)."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, _split(mesh, axis))


def constrain_state(state: Any, mesh: Mesh | None) -> Any:
    """Inside jit: keep a TrainState laid out as ``state_shardings`` says (vmap adds its own leading axis)."""
    if mesh is None:
        return state
    return jax.lax.with_sharding_constraint(state, state_shardings(state, mesh))


def gather(tree: Any) -> Any:
    """The whole pytree as host numpy on every process (a collective when there are several processes)."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def broadcast_from_first(tree: Any) -> Any:
    """Process 0's copy of a host pytree on every process (it alone reads checkpoints)."""
    if jax.process_count() > 1:
        return multihost_utils.broadcast_one_to_all(tree)
    return tree
