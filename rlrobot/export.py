"""Export a policy to the ONNX that Unity ML-Agents runs (Behavior Parameters → Model).

The graph is built directly with ``onnx.helper`` in the layout ML-Agents' own exporter produces
(see ``docs/onnx.md``): opset 9, input ``obs_0`` [batch, obs] (or, for a build with several vector
sensors, ``obs_0 … obs_{k-1}`` [batch, size_i] joined by a ``Concat``), the observation normaliser
in-graph (clipped to ±5), the actor's Swish MLP, and outputs ``version_number`` (3),
``memory_size`` (0), ``continuous_actions`` (a sample: μ + σ·RandomNormalLike, clipped to ±3, ÷3),
``continuous_action_output_shape`` and ``deterministic_continuous_actions`` (clip(μ, ±3)/3).
Constants are initializers each feeding an ``Identity`` with the name Unity looks up.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rlrobot.networks import AgentState, NetworkSpec

OPSET = 9
IR_VERSION = 4
MODEL_EXPORT_VERSION = 3.0
ACTION_CLIP = 3.0


class _GraphBuilder:
    """Collects nodes and initializers with readable, unique names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(self.nodes)}", **attrs))
        return output


def _dense_layers(
    actor_params: dict,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray], np.ndarray]:
    """(hidden layers [(kernel, bias)], mu head (kernel, bias), log_std) from the flax actor parameters."""
    params = actor_params["params"]
    body = params["MLPBody_0"]
    hidden = [(np.asarray(body[f"Dense_{i}"]["kernel"]), np.asarray(body[f"Dense_{i}"]["bias"]))
              for i in range(len(body))]
    mu = (np.asarray(params["mu"]["kernel"]), np.asarray(params["mu"]["bias"]))
    return hidden, mu, np.asarray(params["log_std"])


def _observation_inputs(g: _GraphBuilder, spec: NetworkSpec,
                        observation_sizes: tuple[int, ...] | None) -> tuple[list, str]:
    """The graph inputs, one per vector sensor, and the name of the concatenated observation."""
    from onnx import TensorProto, helper

    sizes = tuple(observation_sizes or (spec.obs_size,))
    if sum(sizes) != spec.obs_size or min(sizes) < 1:
        raise ValueError(f"observation sizes {sizes} do not add up to the policy's {spec.obs_size} observations")
    names = [f"obs_{i}" for i in range(len(sizes))]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", size])
              for name, size in zip(names, sizes)]
    if len(sizes) == 1:
        return inputs, names[0]
    return inputs, g.node("Concat", names, "concatenated_obs", axis=1)


def build_policy_model(agent: AgentState, spec: NetworkSpec, producer: str = "rlrobot",
                       observation_sizes: tuple[int, ...] | None = None):
    """The ONNX ``ModelProto`` of the agent's actor, normaliser included when ``spec.normalize``.

    ``observation_sizes`` (the build's vector sensors, adding up to ``spec.obs_size``) makes one input per sensor."""
    from onnx import TensorProto, ValueInfoProto, helper

    g = _GraphBuilder()
    inputs, x = _observation_inputs(g, spec, observation_sizes)
    if spec.normalize:
        norm = agent.actor_norm
        mean = np.asarray(norm.mean, np.float32)
        std = np.sqrt(np.asarray(norm.var, np.float32) / np.asarray(norm.steps, np.float32))
        x = g.node("Sub", [x, g.constant("normalizer.running_mean", mean)], "normalized_centered")
        x = g.node("Div", [x, g.constant("normalizer.running_std", std)], "normalized_scaled")
        x = g.node("Clip", [x], "normalized_obs", min=-5.0, max=5.0)
    hidden, (mu_kernel, mu_bias), log_std = _dense_layers(agent.params.actor)
    for i, (kernel, bias) in enumerate(hidden):
        pre = g.node("Gemm", [x, g.constant(f"body.{i}.weight", kernel), g.constant(f"body.{i}.bias", bias)],
                     f"body.{i}.pre")
        gate = g.node("Sigmoid", [pre], f"body.{i}.sigmoid")
        x = g.node("Mul", [pre, gate], f"body.{i}.swish")
    mu = g.node("Gemm", [x, g.constant("mu.weight", mu_kernel), g.constant("mu.bias", mu_bias)], "mu")
    scale = g.constant("action_clip", np.float32(ACTION_CLIP))

    noise = g.node("RandomNormalLike", [mu], "noise", dtype=TensorProto.FLOAT)
    scaled = g.node("Mul", [noise, g.constant("sigma", np.exp(log_std)[None, :])], "scaled_noise")
    sample = g.node("Add", [mu, scaled], "sampled_action")
    clipped = g.node("Clip", [sample], "clipped_action", min=-ACTION_CLIP, max=ACTION_CLIP)
    g.node("Div", [clipped, scale], "continuous_actions")
    clipped_mu = g.node("Clip", [mu], "clipped_mu", min=-ACTION_CLIP, max=ACTION_CLIP)
    g.node("Div", [clipped_mu, scale], "deterministic_continuous_actions")
    for name, value in (("version_number", MODEL_EXPORT_VERSION), ("memory_size", 0.0),
                        ("continuous_action_output_shape", float(spec.action_size))):
        g.node("Identity", [g.constant(f"{name}_const", np.array([value]))], name)

    def batch_out(name: str) -> ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", spec.action_size])

    def scalar_out(name: str) -> ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])

    graph = helper.make_graph(
        g.nodes, "rlrobot_policy", inputs,
        [scalar_out("version_number"), scalar_out("memory_size"), batch_out("continuous_actions"),
         scalar_out("continuous_action_output_shape"), batch_out("deterministic_continuous_actions")],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, producer_name=producer, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def export_policy(agent: AgentState, spec: NetworkSpec, path: Path,
                  observation_sizes: tuple[int, ...] | None = None) -> Path:
    """Write the policy's ONNX (one input per size in ``observation_sizes``, see :func:`build_policy_model`) to
    ``path`` atomically (``<path>.tmp`` + fsync + rename; no ``.tmp`` is left on failure) and return it.
    A write failure is the ``OSError``; a bad ``observation_sizes`` a ``ValueError``."""
    import onnx

    from rlrobot.checkpoints import atomic_write_bytes

    path = Path(path)
    model = build_policy_model(agent, spec, observation_sizes=observation_sizes)
    onnx.checker.check_model(model)
    return atomic_write_bytes(path, model.SerializeToString())


_MAX_PARAMETERS = 2**28  # a network description asking for more is a damaged file, not a policy to allocate


def _network_spec(checkpoint: Path, metadata: dict) -> NetworkSpec:
    """The checkpoint's ``NetworkSpec``, checked field by field (a damaged file must not crash or allocate GBs)."""
    from rlrobot.checkpoints import CheckpointError

    network = metadata.get("network")
    if not isinstance(network, dict):
        raise CheckpointError(f"{checkpoint}: no network description in the checkpoint metadata.")
    fields = {f.name: f for f in dataclasses.fields(NetworkSpec)}
    unknown = sorted(set(network) - set(fields))
    missing = sorted(name for name, f in fields.items()
                     if name not in network and f.default is dataclasses.MISSING)
    wrong = sorted(name for name, value in network.items() if name in fields and not (
        isinstance(value, bool) if fields[name].type in ("bool", bool) else
        isinstance(value, int) and not isinstance(value, bool) and value >= 1))
    if unknown or missing or wrong:
        what = "; ".join(part for part in (f"unknown {', '.join(unknown)}" if unknown else "",
                                           f"missing {', '.join(missing)}" if missing else "",
                                           f"bad values for {', '.join(wrong)}" if wrong else "") if part)
        raise CheckpointError(f"{checkpoint}: the network description in the checkpoint metadata is damaged ({what}).")
    spec = NetworkSpec(**network)
    units = spec.hidden_units
    if units * (2 * spec.obs_size + 2 * spec.num_layers * units + spec.action_size) > _MAX_PARAMETERS:
        raise CheckpointError(f"{checkpoint}: the network description in the checkpoint metadata is implausibly "
                              "large (damaged?).")
    return spec


def observation_sizes_of(checkpoint: Path, metadata: dict, spec: NetworkSpec) -> tuple[int, ...] | None:
    """The build's vector sensor sizes stored in the metadata (None: one input), checked to add up."""
    from rlrobot.checkpoints import CheckpointError

    sizes = metadata.get("observation_sizes")
    if sizes is None:
        return None
    if not isinstance(sizes, list) or not sizes or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes) or sum(sizes) != spec.obs_size:
        raise CheckpointError(f"{checkpoint}: observation_sizes in the checkpoint metadata are not positive sizes "
                              f"adding up to the policy's {spec.obs_size} observations.")
    return tuple(sizes)


def load_agent(checkpoint: Path) -> tuple[AgentState, NetworkSpec, dict]:
    """The networks and normalisers of an rlrobot checkpoint, with the network shape from its metadata.

    Any problem with the file is a ``CheckpointError`` naming it."""
    import jax

    from rlrobot.checkpoints import load_checkpoint, read_metadata
    from rlrobot.networks import init_agent

    _, metadata = read_metadata(checkpoint)
    spec = _network_spec(checkpoint, metadata)
    agent, _, _ = load_checkpoint(checkpoint, init_agent(jax.random.PRNGKey(0), spec), field="agent")
    return agent, spec, metadata


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, a behavior folder (its ``checkpoint.ckpt``) or a run folder (its only behavior's)."""
    if path.is_file():
        return path
    if (path / "checkpoint.ckpt").is_file():
        return path / "checkpoint.ckpt"
    found = sorted(path.glob("*/checkpoint.ckpt")) if path.is_dir() else []
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ValueError(f"{path}: several behaviors here ({', '.join(p.parent.name for p in found)}); "
                         "name the behavior folder or its .ckpt file")
    raise ValueError(f"{path}: no checkpoint here (expected a .ckpt file, a behavior folder or a run folder)")


def _default_name(metadata: dict) -> str:
    """``<Behavior>.onnx`` from the metadata, if the name is a plain file name."""
    behavior = metadata.get("behavior")
    plain = isinstance(behavior, str) and behavior and not behavior.startswith(".") and \
        not any(c in behavior for c in "/\\\0")
    return f"{behavior if plain else 'policy'}.onnx"


def main(argv: list[str] | None = None) -> int:
    """``rlrobot-export RUN_OR_CHECKPOINT [-o FILE]``: write the Unity ONNX of a checkpoint.

    Every problem (a missing or damaged checkpoint, an output that can't be written) is one ``[ERROR]`` line
    naming the file, exit code 2; the ONNX is written atomically, so nothing half-written is left."""
    import argparse
    import logging
    import sys

    from rlrobot.checkpoints import CheckpointError, output_problem
    from rlrobot.summaries import setup_logging

    parser = argparse.ArgumentParser(prog="rlrobot-export", description="Export an rlrobot checkpoint to Unity's ONNX.")
    parser.add_argument("source", type=Path, help="results/<run-id>, results/<run-id>/<Behavior> or a .ckpt file")
    parser.add_argument("-o", "--output", type=Path, help="ONNX file to write (default: <Behavior>.onnx beside it)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(False)
    logger = logging.getLogger("rlrobot")
    flag = f"-o {args.output}" if args.output else None
    if args.output is not None:
        problem = output_problem(args.output)  # before reading anything: a bad -o costs nothing
        if problem:
            logger.error(f"{flag}: {problem}")
            return 2
    try:
        checkpoint = resolve_checkpoint(args.source)
        agent, spec, metadata = load_agent(checkpoint)
        sizes = observation_sizes_of(checkpoint, metadata, spec)
    except (ValueError, CheckpointError) as error:
        logger.error(str(error))
        return 2
    output = args.output or checkpoint.parent / _default_name(metadata)
    flag = flag or str(output)
    problem = output_problem(output) if args.output is None else None
    if problem:
        logger.error(f"{flag}: {problem}")
        return 2
    try:
        logger.info(f"Exported {export_policy(agent, spec, output, sizes)}")
    except OSError as error:
        logger.error(f"{flag}: cannot write the ONNX ({error.strerror or error})")
        return 2
    except ValueError as error:
        logger.error(f"{checkpoint}: {error}")
        return 2
    return 0
