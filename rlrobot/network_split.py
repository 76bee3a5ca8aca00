"""The actor and the critic learn side by side, one on each of two devices, with no per-minibatch communication.

Without ``shared_critic`` ML-Agents' loss is a policy term that only the actor's parameters enter plus a value term
that only the critic's enter (``ppo.actor_loss``, ``ppo.critic_loss``), and Adam is elementwise: the two networks'
updates are independent computations over the same minibatches. On a CPU, XLA runs a small network's chain of
minibatch steps on one core, so with two host devices each device runs one network's whole update (the same shuffled
minibatches, from the same keys) and the results meet once per update. The run is the one-device run: the same
gradients, the same Adam steps.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from rlrobot import ppo

AXIS = "networks"
ROLES = ("actor", "critic")   # device i of the mesh learns ROLES[i]; host_devices.LEARNERS of them

POLICY_METRICS = ("policy_loss", "entropy", "approx_kl", "clip_fraction")

# ``(loss, agent, opt_state, batch, ready, key, schedule, learner=i) -> (agent, opt_state, metric sums)``: a whole
# update whose minibatch steps descend ``loss`` and keep the other network as it was (``train.update``'s).
UpdateWith = Callable[..., tuple[Any, Any, dict]]


def actor_only(*args: Any, **kwargs: Any) -> tuple[jnp.ndarray, dict]:
    """``ppo.actor_loss`` with the critic's metric as 0, so that both learners' updates return the same metrics."""
    loss, metrics = ppo.actor_loss(*args, **kwargs)
    return loss, {**metrics, "value_loss": jnp.zeros_like(loss)}


def critic_only(*args: Any, **kwargs: Any) -> tuple[jnp.ndarray, dict]:
    """``ppo.critic_loss`` with the actor's metrics as 0."""
    loss, metrics = ppo.critic_loss(*args, **kwargs)
    return loss, {**dict.fromkeys(POLICY_METRICS, jnp.zeros_like(loss)), **metrics}


LOSSES = (actor_only, critic_only)   # by role

# Widest hidden layers split: XLA's CPU backend spreads a wider network's matmuls over the cores itself, and the split
# then only duplicates the acting. Fast config, 2-core CPU, split / one device: 64 units 1.24×, 128 1.04×, 256
# 0.98×; the course config (3 × 512) 0.45× (benchmarks/RESULTS.md).
MAX_HIDDEN_UNITS = 128


def choose_learners(requested_devices: int | None, runs: int, shared_critic: bool,
                    hidden_units: int) -> Mesh | None:
    """The learners' mesh for a run on a CPU with two devices or more (``host_devices.provide_host_devices``), or None.

    Only for what the split computes exactly: one run (not vmapped seeds or sweeps) in one process, its robots on
    one device (``--devices`` left out: ``--devices 1`` turns the split off), with a critic of its own (with
    ``shared_critic`` the value loss also trains the actor's body); and only where it is faster: networks of at most
    ``MAX_HIDDEN_UNITS`` units per layer.
    """
    if requested_devices is not None or runs != 1 or shared_critic or jax.process_count() > 1:
        return None
    if hidden_units > MAX_HIDDEN_UNITS:
        return None
    if jax.default_backend() != "cpu" or len(jax.devices()) < len(ROLES):
        return None
    return make_mesh(jax.devices()[:len(ROLES)])


def make_mesh(devices: Sequence[jax.Device]) -> Mesh:
    """The learners' mesh: the first device learns the actor, the second the critic."""
    if len(devices) != len(ROLES):
        raise ValueError(f"the actor and the critic learn on {len(ROLES)} devices, not {len(devices)}")
    return Mesh(np.asarray(devices), (AXIS,))


def split_update(update_with: UpdateWith, mesh: Mesh, agent: Any, opt_state: Any, batch: ppo.Batch,
                 ready: jnp.ndarray | None, key: jnp.ndarray, schedule: ppo.Schedule) -> tuple[Any, Any, dict]:
    """``update_with`` once per device with that device's network's loss. Each network's parameters and Adam moments
    come from the device that learnt it, and so does each metric; the update is finite if both halves are."""
    def per_device(agent, opt_state, batch, ready, key, schedule):
        role = jax.lax.axis_index(AXIS)
        branches = [lambda *args, learner=learner: update_with(LOSSES[learner], *args, learner=learner)
                    for learner in range(len(ROLES))]
        agent, opt_state, sums = jax.lax.switch(role, branches, agent, opt_state, batch, ready, key, schedule)
        failed = (~sums.pop("loss_is_finite")).astype(jnp.int32)
        sums = {name: _mine(ROLES.index("critic" if name == "value_loss" else "actor"), value, role)
                for name, value in sums.items()}
        owned = partial(jax.tree_util.tree_map_with_path, lambda path, leaf: _mine(owner(path), leaf, role))
        agent, opt_state, sums, failed = _psum_packed((owned(agent), owned(opt_state), sums, failed))
        return agent, opt_state, {**sums, "loss_is_finite": failed == 0}

    return jax.shard_map(per_device, mesh=mesh, in_specs=PartitionSpec(), out_specs=PartitionSpec(),
                         check_vma=False)(agent, opt_state, batch, ready, key, schedule)


def learnt_by(learner: int, stepped: Any, before: Any) -> Any:
    """A minibatch step's parameters and Adam state on ``learner``'s device: ``stepped`` for its own network and the
    shared leaves (Adam's step count), ``before`` for the other network, whose copy comes from the other device at
    the end of the update. Chosen while tracing, so XLA computes no Adam step for the other network (its gradient
    is zero here, but Adam would still move it)."""
    other = ROLES[1 - learner]
    return jax.tree_util.tree_map_with_path(lambda path, new, old: old if other in _names(path) else new,
                                            stepped, before)


def owner(path: tuple) -> int:
    """Which learner a leaf of the agent or of the optimiser state belongs to: the critic's parameters and moments to
    the critic's; the rest (the actor's, the normalisers, Adam's step count: equal on both devices) to the actor's."""
    return ROLES.index("critic" if "critic" in _names(path) else "actor")


def _names(path: tuple) -> list:
    return [getattr(entry, "name", getattr(entry, "key", None)) for entry in path]


def _mine(source: int, leaf: jnp.ndarray, role: jnp.ndarray) -> jnp.ndarray:
    """``leaf`` on device ``source``, zeros on the other: summed over the devices, ``source``'s copy on both."""
    return jnp.where(role == source, leaf, jnp.zeros_like(leaf))


def _psum_packed(tree: Any) -> Any:
    """``psum`` of every leaf over the learners, the leaves of each dtype packed into one vector: XLA's CPU
    collectives meet the other device once per operand (measured: ~110 meetings per iteration of the fast config, and
    ~4 ms of its ~65), so one operand per dtype instead of one per leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    summed = list(leaves)
    for dtype in sorted({leaf.dtype for leaf in leaves}, key=str):
        group = [index for index, leaf in enumerate(leaves) if leaf.dtype == dtype]
        packed = jax.lax.psum(jnp.concatenate([jnp.ravel(leaves[index]) for index in group]), AXIS)
        start = 0
        for index in group:
            size = leaves[index].size
            summed[index] = packed[start:start + size].reshape(leaves[index].shape)
            start += size
    return jax.tree.unflatten(treedef, summed)
