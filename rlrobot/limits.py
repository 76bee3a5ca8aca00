"""Resource limits: refuse a training size that cannot fit the device, or would compile or run for ever, at start-up.

Every value here passes ``rlrobot.config`` (each is a valid int32), yet some combinations need terabytes of device
memory or millions of Adam steps per update. :func:`check_training_size` estimates one iteration's device memory
from a :class:`rlrobot.train.TrainSpec` and refuses, with one line naming the YAML key or flag most responsible,
before anything is compiled. Nothing runs on the device: JAX is imported only to ask the device for its memory.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from rlrobot.config import INT32_MAX

if TYPE_CHECKING:
    from rlrobot.train import TrainSpec

# The MLP is unrolled layer by layer in the compiled program, so compile time grows with depth: 64 layers already
# take ~1.5 min to compile on a 2-core CPU (2 layers: ~10 s); ML-Agents' configs use 1-4.
MAX_NUM_LAYERS = 64
# One hidden layer of 65536 units is 4.3e9 weights (17 GB of float32) per network; wider is never trainable here.
MAX_HIDDEN_UNITS = 65536
# num_epoch × minibatches per update run as sequential Adam steps inside one device call; 1e6 of them (batch_size 1
# on a large buffer) take hours per update and look like a hang.
MAX_ADAM_STEPS_PER_UPDATE = 1_000_000
# Runs vmapped in one program (--seeds × sweep points): each has its own folder and keeps two files open (TensorBoard
# events, metrics.jsonl), which must stay under the common 1024 open-files limit.
MAX_RUNS = 256
# Steps in one update's buffer (robots × window): its flat index and the minibatch permutation are int32.
MAX_STEPS_PER_UPDATE = INT32_MAX

FLOAT_BYTES = 4  # everything on the device is float32 (flags and counters are counted as 4 bytes too)


class ResourceError(ValueError):
    """A training size the device cannot run; the message is one line naming the key or flag to change."""


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``: binary units, two significant figures or more."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _mlp_params(inputs: int, outputs: int, hidden: int, layers: int) -> int:
    """Weights and biases of ML-Agents' LinearEncoder (at least one layer) plus a head."""
    layers = max(layers, 1)
    return inputs * hidden + hidden + (layers - 1) * (hidden * hidden + hidden) + hidden * outputs + outputs


def buffer_window(spec: TrainSpec) -> int:
    """Time steps per robot in the buffer one update sees: the rollout, plus the steps of unfinished trajectories
    carried over from the last one (``rlrobot.train.window_steps``: up to ``time_horizon - 1``) where the trainer
    carries them."""
    try:
        from rlrobot.train import window_steps
    except ImportError:  # a trainer that learns from the rollout alone
        return spec.rollout_steps
    return int(window_steps(spec))


def memory_parts(spec: TrainSpec) -> dict[str, int]:
    """One run's device memory by part, in bytes (see :func:`estimate_training_bytes` for how they add up).

    * ``parameters``: actor and critic weights, their gradients, Adam's two moments and the update (5 copies), and
      the observation normalisers: live all the time;
    * ``buffer``: the ``[buffer_window, num_envs]`` steps of obs, next obs, actions, log-probs, rewards, flags and
      episode ends; GAE's values, next values, advantages and returns; the flattened batch and its permuted copy
      (one per epoch): live through the update;
    * ``value_pass``: the critic over the whole buffer (about three hidden-layer activations per step live);
    * ``minibatch``: forward and backward activations of actor and critic on ``batch_size`` samples;
    * ``rollout``: one decision of all robots (policy activations, env state);
    * ``losses``: the losses and statistics of every Adam step of the update (``num_epoch`` × minibatches).

    ``value_pass``, ``minibatch`` and ``rollout`` are phases of the iteration, not live at the same time.
    """
    net = spec.network
    obs, act, hidden, layers = net.obs_size, net.action_size, net.hidden_units, max(net.num_layers, 1)
    steps = spec.num_envs * buffer_window(spec)
    actor = _mlp_params(obs, act, hidden, layers) + act  # + the state-independent log-std
    critic = hidden + 1 if net.shared_critic else _mlp_params(obs, 1, hidden, layers)
    normalizers = 2 * (2 * obs + 1)
    transition = 2 * obs + act + 1 + 1 + 2 + 3  # obs, next_obs, raw_action, log_prob, reward, 2 flags, episode ends
    gae = 4  # values, next values, advantages, returns
    batch = obs + act + 4  # obs, action, log-prob, value, advantage, returns
    updates = spec.num_epoch * spec.num_minibatches
    return {
        "parameters": FLOAT_BYTES * (5 * (actor + critic) + normalizers),
        "buffer": FLOAT_BYTES * steps * (transition + gae + 2 * batch),
        "value_pass": FLOAT_BYTES * steps * 3 * hidden,
        "minibatch": FLOAT_BYTES * spec.batch_size * 2 * layers * hidden * 4,
        "rollout": FLOAT_BYTES * spec.num_envs * (2 * layers * hidden + 2 * obs + 32),
        "losses": FLOAT_BYTES * updates * 8,
    }


PHASES = ("value_pass", "minibatch", "rollout")


def estimate_training_bytes(spec: TrainSpec, runs: int = 1) -> int:
    """Device memory of ``runs`` vmapped runs of one PPO iteration: parameters + buffer + the largest phase, each.

    An estimate from the shapes (within about 0.85x-1.2x of XLA's own buffer assignment on the CPU for buffers of
    2k-66k steps, time horizons of 1-1000 and 64-1024 hidden units), not XLA's allocation: a size just under it can
    still fail, one well over it will not fit.
    """
    parts = memory_parts(spec)
    return runs * (parts["parameters"] + parts["buffer"] + parts["losses"] + max(parts[phase] for phase in PHASES))


def device_memory_bytes() -> tuple[int | None, str]:
    """The first JAX device's memory limit (``memory_stats()['bytes_limit']``) or else the host's physical memory,
    with the words that name it (``"this device"``, ``"this host"``); ``(None, ...)`` when neither is known."""
    try:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"]), "this device"
    except Exception:  # no backend, or a platform without memory stats: fall back to the host
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES")), "this host"
    except (AttributeError, OSError, ValueError):
        return None, "this host"


def _buffer_key(spec: TrainSpec) -> str:
    """The key that the buffer's size (robots × window steps) grows with."""
    carried = buffer_window(spec) - spec.rollout_steps
    if carried > spec.rollout_steps:
        return (f"time_horizon ({spec.time_horizon}: up to {carried} carried steps per robot) with "
                f"env_settings.num_envs {spec.num_envs}")
    if spec.rollout_steps == 1:
        return f"env_settings.num_envs ({spec.num_envs} robots)"
    return (f"hyperparameters.buffer_size ({spec.num_envs * spec.rollout_steps} agent-steps per update) with "
            f"env_settings.num_envs {spec.num_envs}")


def _most_responsible(spec: TrainSpec, parts: dict[str, int]) -> str:
    """The YAML key (with its value and the values it combines with) that the largest part grows with."""
    net = spec.network
    grows = {"buffer": parts["buffer"] + parts["value_pass"], "minibatch": parts["minibatch"],
             "parameters": parts["parameters"], "rollout": parts["rollout"], "losses": parts["losses"]}
    part = max(grows, key=grows.__getitem__)
    if part == "minibatch":
        return (f"hyperparameters.batch_size ({spec.batch_size}) with network_settings.hidden_units "
                f"{net.hidden_units} x num_layers {net.num_layers}")
    if part == "parameters":
        return f"network_settings.hidden_units ({net.hidden_units}) with num_layers {net.num_layers}"
    if part == "losses":
        return (f"hyperparameters.num_epoch ({spec.num_epoch}) with batch_size {spec.batch_size} "
                f"({spec.num_minibatches} minibatches per epoch)")
    if part == "rollout":
        return f"env_settings.num_envs ({spec.num_envs} robots)"
    return _buffer_key(spec)


def check_training_size(spec: TrainSpec, runs: int = 1, memory_bytes: int | None = None) -> None:
    """Refuse, with a one-line :class:`ResourceError`, a run the device cannot hold or that would not finish.

    ``runs``: runs vmapped in one program (``--seeds`` × sweep points), each with the whole iteration's memory.
    ``memory_bytes``: the budget (default: :func:`device_memory_bytes`; ``None`` there skips the memory check).
    """
    net = spec.network
    if net.num_layers > MAX_NUM_LAYERS:
        raise ResourceError(f"network_settings.num_layers ({net.num_layers}) is over {MAX_NUM_LAYERS}: a network "
                            f"that deep takes many minutes to compile (ML-Agents' configs use 1 to 4).")
    if net.hidden_units > MAX_HIDDEN_UNITS:
        raise ResourceError(f"network_settings.hidden_units ({net.hidden_units}) is over {MAX_HIDDEN_UNITS}: one "
                            f"layer would hold {net.hidden_units ** 2:.1e} weights.")
    steps = spec.num_envs * buffer_window(spec)
    if steps > MAX_STEPS_PER_UPDATE:
        raise ResourceError(f"{_buffer_key(spec)} makes a {steps}-step buffer ({spec.num_envs} robots x "
                            f"{buffer_window(spec)} steps), over {MAX_STEPS_PER_UPDATE} (2**31-1), the most one update "
                            f"can index on the device.")
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise ResourceError(f"--seeds: {runs!r} runs; expected a positive integer.")
    if runs > MAX_RUNS:
        raise ResourceError(f"--seeds/--sweep: {runs} runs in one program; at most {MAX_RUNS} (each run keeps its "
                            f"own folder and open files).")
    _check_memory(spec, runs, memory_bytes)
    adam_steps = spec.num_epoch * spec.num_minibatches
    if adam_steps > MAX_ADAM_STEPS_PER_UPDATE:
        raise ResourceError(f"hyperparameters.batch_size ({spec.batch_size}) with num_epoch {spec.num_epoch} makes "
                            f"{adam_steps} Adam steps per update ({spec.num_minibatches} minibatches x "
                            f"{spec.num_epoch} epochs); at most {MAX_ADAM_STEPS_PER_UPDATE:.0e} finish in reasonable "
                            f"time: raise batch_size or lower num_epoch.")


def _check_memory(spec: TrainSpec, runs: int, memory_bytes: int | None) -> None:
    where = "this device"
    if memory_bytes is None:
        memory_bytes, where = device_memory_bytes()
        if memory_bytes is None:
            return
    one = estimate_training_bytes(spec)
    if one > memory_bytes:
        raise ResourceError(f"{_most_responsible(spec, memory_parts(spec))} needs ~{format_bytes(one)} of device "
                            f"memory{' per run' if runs > 1 else ''}; {where} has {format_bytes(memory_bytes)}.")
    if one * runs > memory_bytes:
        fit = max(1, math.floor(memory_bytes / one))
        raise ResourceError(f"--seeds/--sweep: {runs} runs need ~{format_bytes(one * runs)} of device memory "
                            f"(~{format_bytes(one)} each); {where} has {format_bytes(memory_bytes)}, enough for "
                            f"about {fit}.")
