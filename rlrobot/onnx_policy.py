"""Run an ML-Agents ``.onnx`` policy as a pure-JAX function, so it can act inside the jitted simulator.

Both ML-Agents output formats are understood: the current one (input ``obs_0``, or ``obs_0 … obs_{k-1}`` for a
build with several vector sensors, outputs ``continuous_actions`` / ``deterministic_continuous_actions``, version 3)
and the older one of the shipped Unity policies (input ``vector_observation``, output ``action`` [batch, n, 1],
version 2). The policy takes the sensors concatenated in input order and splits them by the inputs' sizes.
The graph is interpreted op by op with ``jax.numpy``; ``RandomNormalLike`` draws from a JAX key,
or gives zeros for the deterministic action (the distribution mean μ, clipped to ±3 and divided by 3).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

LEGACY_OBS_INPUT = "vector_observation"


@dataclass(frozen=True)
class OnnxPolicy:
    """A loaded policy: ``act(obs[B, n], key | None) -> actions[B, k]`` in the env's [-1, 1] units."""

    path: Path
    observation_size: int
    action_size: int
    act: Callable[[jnp.ndarray, jax.Array | None], jnp.ndarray]


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _interpret(nodes, values: dict, key: jax.Array | None) -> dict:
    from onnx import numpy_helper

    for index, node in enumerate(nodes):
        attrs = _attributes(node)
        x = [values[name] for name in node.input if name]
        op = node.op_type
        if op == "Gemm":
            a, b = x[0], x[1]
            a = a.T if attrs.get("transA", 0) else a
            b = b.T if attrs.get("transB", 0) else b
            out = attrs.get("alpha", 1.0) * a @ b
            if len(x) > 2:
                out = out + attrs.get("beta", 1.0) * x[2]
        elif op == "MatMul":
            out = x[0] @ x[1]
        elif op in ("Add", "Sub", "Mul", "Div"):
            out = {"Add": jnp.add, "Sub": jnp.subtract, "Mul": jnp.multiply, "Div": jnp.divide}[op](x[0], x[1])
        elif op == "Clip":
            lo = x[1] if len(x) > 1 else attrs.get("min", -jnp.inf)
            hi = x[2] if len(x) > 2 else attrs.get("max", jnp.inf)
            out = jnp.clip(x[0], lo, hi)
        elif op == "Sigmoid":
            out = jax.nn.sigmoid(x[0])
        elif op in ("Exp", "Sqrt", "Tanh", "Neg"):
            out = {"Exp": jnp.exp, "Sqrt": jnp.sqrt, "Tanh": jnp.tanh, "Neg": jnp.negative}[op](x[0])
        elif op == "Concat":
            out = jnp.concatenate(x, axis=attrs["axis"])
        elif op == "Unsqueeze":
            axes = attrs["axes"] if "axes" in attrs else [int(v) for v in np.asarray(x[1])]
            out = jnp.expand_dims(x[0], tuple(axes))
        elif op == "Squeeze":
            axes = attrs.get("axes") or ([int(v) for v in np.asarray(x[1])] if len(x) > 1 else None)
            out = jnp.squeeze(x[0], tuple(axes) if axes else None)
        elif op == "Identity":
            out = x[0]
        elif op == "Constant":
            out = jnp.asarray(numpy_helper.to_array(attrs["value"]))
        elif op == "RandomNormalLike":
            shape = x[0].shape
            noise = jnp.zeros(shape) if key is None else jax.random.normal(jax.random.fold_in(key, index), shape)
            out = attrs.get("mean", 0.0) + attrs.get("scale", 1.0) * noise
        else:
            raise ValueError(f"ONNX op {op} (node {node.name or index}) is not supported by the policy loader")
        values[node.output[0]] = out
    return values


def _observation_inputs(path: Path, graph) -> tuple[list[str], list[int]]:
    """The observation inputs (``obs_0``, ``obs_1``, … in that order, or ``vector_observation``) and their sizes."""
    inputs = {i.name: i for i in graph.input}
    names = list(itertools.takewhile(inputs.__contains__, (f"obs_{i}" for i in range(len(inputs)))))
    if not names and LEGACY_OBS_INPUT in inputs:
        names = [LEGACY_OBS_INPUT]
    if not names:
        raise ValueError(f"{path}: no ML-Agents observation input (expected obs_0 or {LEGACY_OBS_INPUT}); found "
                         f"{sorted(inputs)}")
    shapes = {name: inputs[name].type.tensor_type.shape.dim for name in names}
    odd = next((name for name, dims in shapes.items() if len(dims) != 2 or dims[1].dim_value < 1), None)
    if odd is not None:
        raise ValueError(f"{path}: observation input {odd} is not a vector [batch, size]; only vector observations "
                         f"are supported")
    return names, [shapes[name][1].dim_value for name in names]


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_onnx_policy(path: str | Path) -> OnnxPolicy:
    """Load an ML-Agents policy file; raise ``ValueError`` (one line naming the file) when it is not one: missing,
    empty, unreadable, not ONNX, or a graph this loader can't run on ``[batch, size]`` observations."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such ONNX file")
    try:
        return _load(path)
    except ValueError as error:
        message = " ".join(str(error).split())
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except Exception as error:  # protobuf's DecodeError, an odd graph's IndexError/KeyError/TypeError, ...
        raise ValueError(f"{path}: not a usable ML-Agents ONNX policy ({_one_line(error)})") from None


def _load(path: Path) -> OnnxPolicy:
    import onnx
    from onnx import numpy_helper

    try:
        empty = path.stat().st_size == 0
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or _one_line(error)})") from None
    if empty:
        raise ValueError(f"{path}: the ONNX file is empty (an interrupted write?)")
    try:
        model = onnx.load(str(path))
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or _one_line(error)})") from None
    except Exception as error:
        raise ValueError(f"{path}: not an ONNX file ({_one_line(error)})") from None
    graph = model.graph
    obs_names, sizes = _observation_inputs(path, graph)
    observation_size = sum(sizes)
    outputs = {o.name for o in graph.output}
    if "deterministic_continuous_actions" in outputs:
        deterministic_out, sampled_out = "deterministic_continuous_actions", "continuous_actions"
    elif "action" in outputs:
        deterministic_out = sampled_out = "action"
    else:
        raise ValueError(f"{path}: no continuous action output (continuous_actions or action); found {sorted(outputs)}")
    constants = {i.name: jnp.asarray(numpy_helper.to_array(i)) for i in graph.initializer}
    nodes = list(graph.node)
    splits = np.cumsum(sizes)[:-1].tolist()

    def act(obs: jnp.ndarray, key: jax.Array | None = None) -> jnp.ndarray:
        values = dict(constants)
        values.update(zip(obs_names, jnp.split(jnp.asarray(obs, jnp.float32), splits, axis=1)))
        out = _interpret(nodes, values, key)[deterministic_out if key is None else sampled_out]
        return out.reshape(out.shape[0], -1)

    # Trace both actions once on a batch of 2, so a graph that can't run fails here, naming the file.
    obs = jax.ShapeDtypeStruct((2, observation_size), jnp.float32)
    try:
        deterministic = jax.eval_shape(act, obs)
        sampled = jax.eval_shape(act, obs, jax.random.PRNGKey(0))
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(f"{path}: the graph does not run on [batch, {observation_size}] observations "
                         f"({_one_line(error)})") from None
    if deterministic.shape != sampled.shape or deterministic.shape[0] != 2 or deterministic.shape[1] < 1:
        raise ValueError(f"{path}: the action outputs have shapes {list(deterministic.shape)} and "
                         f"{list(sampled.shape)} for a batch of 2, not [batch, actions]")
    return OnnxPolicy(path=path, observation_size=observation_size, action_size=deterministic.shape[-1], act=act)
