import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from rlrobot.checkpoints import save_checkpoint
from rlrobot.export import build_policy_model, export_policy
from rlrobot.export import main as export_main
from rlrobot.networks import NetworkSpec, deterministic_action, init_agent, policy_distribution, update_normalizers
from rlrobot.onnx_policy import load_onnx_policy

ort = pytest.importorskip("onnxruntime")


def trained_like_agent(spec):
    """A fresh agent with a non-trivial normaliser and larger-than-init weights, so the check means something."""
    agent = init_agent(jax.random.PRNGKey(0), spec)
    agent = update_normalizers(agent, jax.random.normal(jax.random.PRNGKey(1), (500, spec.obs_size)) * 0.3 + 0.7)
    scaled = jax.tree.map(lambda p: p * 3.0, agent.params)
    return agent.replace(params=scaled)


@pytest.mark.parametrize("normalize", [True, False])
def test_onnxruntime_deterministic_output_equals_jax(tmp_path, normalize):
    spec = NetworkSpec(obs_size=19, action_size=2, hidden_units=32, num_layers=3, normalize=normalize)
    agent = trained_like_agent(spec)
    path = export_policy(agent, spec, tmp_path / "MobileRobot.onnx")
    obs = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (256, 19)), np.float32)
    session = ort.InferenceSession(str(path))
    onnx_det, onnx_sample = session.run(["deterministic_continuous_actions", "continuous_actions"], {"obs_0": obs})
    mu, _ = policy_distribution(agent.params, agent.actor_norm, jnp.asarray(obs), spec)
    expected = np.asarray(deterministic_action(mu))
    np.testing.assert_allclose(onnx_det, expected, atol=1e-5)
    assert np.abs(expected).max() > 0.05  # not a trivially zero policy
    assert onnx_sample.shape == (256, 2) and np.all(np.abs(onnx_sample) <= 1.0)
    assert np.std(onnx_sample - onnx_det) > 0.05  # sampled, with sigma = exp(log_std) = 1 → 1/3 after scaling
    # the loader reads our own export back (the current ML-Agents format)
    np.testing.assert_allclose(load_onnx_policy(path).act(obs), expected, atol=1e-5)


def test_names_shapes_and_constants_unity_checks(tmp_path):
    spec = NetworkSpec(obs_size=19, action_size=2, hidden_units=16, num_layers=2, normalize=True)
    path = export_policy(init_agent(jax.random.PRNGKey(0), spec), spec, tmp_path / "p.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [o.domain for o in model.opset_import] == [""] and model.opset_import[0].version == 9
    assert [i.name for i in model.graph.input] == ["obs_0"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 19]
    assert [o.name for o in model.graph.output] == ["version_number", "memory_size", "continuous_actions",
                                                   "continuous_action_output_shape", "deterministic_continuous_actions"]
    session = ort.InferenceSession(str(path))
    version, memory, shape = session.run(["version_number", "memory_size", "continuous_action_output_shape"],
                                         {"obs_0": np.zeros((1, 19), np.float32)})
    assert version.tolist() == [3.0] and memory.tolist() == [0.0] and shape.tolist() == [2.0]
    ops = {n.op_type for n in model.graph.node}
    assert ops <= {"Sub", "Div", "Clip", "Gemm", "Sigmoid", "Mul", "Add", "RandomNormalLike", "Identity"}
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert initializers["version_number_const"].tolist() == [3.0]


def test_split_inputs_give_the_same_actions_as_the_concatenated_observation(tmp_path):
    """A build with a 1- and an 18-float sensor: inputs obs_0 [batch, 1], obs_1 [batch, 18] joined by Concat."""
    spec = NetworkSpec(obs_size=19, action_size=2, hidden_units=32, num_layers=2, normalize=True)
    agent = trained_like_agent(spec)
    single = export_policy(agent, spec, tmp_path / "single.onnx")
    split = export_policy(agent, spec, tmp_path / "split.onnx", observation_sizes=(1, 18))
    model = onnx.load(str(split))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 9
    shapes = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input]
    assert shapes == [("obs_0", ["batch", 1]), ("obs_1", ["batch", 18])]
    (concat,) = [n for n in model.graph.node if n.op_type == "Concat"]
    assert list(concat.input) == ["obs_0", "obs_1"] and concat.attribute[0].i == 1
    obs = np.asarray(jax.random.uniform(jax.random.PRNGKey(3), (64, 19)), np.float32)
    (expected,) = ort.InferenceSession(str(single)).run(["deterministic_continuous_actions"], {"obs_0": obs})
    (actions,) = ort.InferenceSession(str(split)).run(["deterministic_continuous_actions"],
                                                       {"obs_0": obs[:, :1], "obs_1": obs[:, 1:]})
    np.testing.assert_allclose(actions, expected, atol=1e-6)
    policy = load_onnx_policy(split)  # the loader splits the concatenated observation by the inputs' sizes
    assert (policy.observation_size, policy.action_size) == (19, 2)
    np.testing.assert_allclose(policy.act(obs), expected, atol=1e-5)


def test_one_size_is_the_single_input_graph_and_wrong_sizes_are_refused():
    spec = NetworkSpec(obs_size=19, action_size=2, hidden_units=8, num_layers=1, normalize=True)
    agent = init_agent(jax.random.PRNGKey(0), spec)
    plain = build_policy_model(agent, spec).SerializeToString()
    assert build_policy_model(agent, spec, observation_sizes=(19,)).SerializeToString() == plain
    with pytest.raises(ValueError, match=r"observation sizes \(1, 17\) do not add up to the policy's 19"):
        build_policy_model(agent, spec, observation_sizes=(1, 17))


def test_export_command_uses_the_checkpoints_observation_sizes(tmp_path):
    spec = NetworkSpec(obs_size=19, action_size=2, hidden_units=8, num_layers=1, normalize=True)
    behavior = tmp_path / "run" / "MobileRobot"
    behavior.mkdir(parents=True)
    metadata = {"behavior": "MobileRobot", "network": dataclasses.asdict(spec), "observation_sizes": [1, 18]}
    save_checkpoint(behavior / "checkpoint.ckpt", {"agent": init_agent(jax.random.PRNGKey(0), spec)}, 1, metadata)
    assert export_main([str(tmp_path / "run")]) == 0
    model = onnx.load(str(behavior / "MobileRobot.onnx"))
    assert [i.name for i in model.graph.input] == ["obs_0", "obs_1"]
