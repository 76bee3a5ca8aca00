"""The actor and the critic learning on a CPU device each (``rlrobot.network_split``): the one-device run, split.

The cases with two devices run in a fresh interpreter (``XLA_FLAGS`` is read once, when JAX starts).
"""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scale_helpers import REPO, assert_checkpoints_close, forced_device_env, run_python, tiny_config

from rlrobot import host_devices, network_split, ppo
from rlrobot.networks import NetworkSpec, init_agent
from rlrobot.train import make_optimizer

SPEC = NetworkSpec(obs_size=5, action_size=2, hidden_units=8, num_layers=2, normalize=True)


def test_the_loss_is_the_actors_part_plus_the_critics():
    agent = init_agent(jax.random.PRNGKey(0), SPEC)
    keys = jax.random.split(jax.random.PRNGKey(1), 6)
    batch = ppo.Batch(obs=jax.random.normal(keys[0], (32, 5)), raw_action=jax.random.normal(keys[1], (32, 2)),
                      log_prob=-jax.random.uniform(keys[2], (32, 2)), value=jax.random.normal(keys[3], (32,)),
                      advantage=jax.random.normal(keys[4], (32,)), returns=jax.random.normal(keys[5], (32,)))
    args = (agent.params, agent.actor_norm, agent.critic_norm, batch, 0.2, 0.01)
    loss, metrics = ppo.ppo_loss(*args, spec=SPEC)
    (actor, actor_metrics), (critic, critic_metrics) = (network_split.actor_only(*args, spec=SPEC),
                                                        network_split.critic_only(*args, spec=SPEC))
    np.testing.assert_allclose(actor + critic, loss, rtol=1e-6)
    assert actor_metrics.keys() == critic_metrics.keys() == metrics.keys()
    for name, value in metrics.items():  # each metric from the network that measures it, 0 from the other
        mine, other = ((actor_metrics, critic_metrics) if name in network_split.POLICY_METRICS
                       else (critic_metrics, actor_metrics))
        assert mine[name] == value and other[name] == 0.0
    # Each part's gradient reaches its own network only: the two updates are independent.
    actor_grad = jax.grad(lambda p: network_split.actor_only(p, *args[1:], spec=SPEC)[0])(agent.params)
    critic_grad = jax.grad(lambda p: network_split.critic_only(p, *args[1:], spec=SPEC)[0])(agent.params)
    assert all(jnp.all(g == 0) for g in jax.tree.leaves(actor_grad.critic))
    assert all(jnp.all(g == 0) for g in jax.tree.leaves(critic_grad.actor))
    assert any(jnp.any(g != 0) for g in jax.tree.leaves(actor_grad.actor))


def test_every_leaf_of_the_agent_and_of_adam_has_an_owner():
    agent = init_agent(jax.random.PRNGKey(0), SPEC)
    opt_state = make_optimizer().init(agent.params)
    owners = {jax.tree_util.keystr(path): network_split.owner(path)
              for tree in (agent, opt_state) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}
    critic = network_split.ROLES.index("critic")
    assert {name for name, owner in owners.items() if owner == critic} == {
        name for name in owners if ".critic" in name and "critic_norm" not in name}
    assert any(".mu.critic" in name for name in owners) and any(".nu.actor" in name for name in owners)


def test_one_cpu_device_or_a_request_keeps_the_one_device_run():
    assert network_split.choose_learners(None, 1, False, 64) is None  # this test process has one CPU device
    with pytest.raises(ValueError, match="learn on 2 devices, not 1"):
        network_split.make_mesh(jax.devices()[:1])


def test_host_devices_are_provided_only_where_nobody_chose_a_count():
    before = jax.config.jax_num_cpu_devices
    host_devices.provide_host_devices({"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    host_devices.provide_host_devices({"JAX_NUM_CPU_DEVICES": "3"})
    assert jax.config.jax_num_cpu_devices == before
    host_devices.provide_host_devices({})  # this process's backend has started: it keeps its devices
    assert len(jax.devices("cpu")) == 1


SPLIT_AND_SINGLE = """
import json, re, sys
import jax, jax.numpy as jnp, numpy as np
from rlrobot.config import load_run_settings
from rlrobot.trainer import build_jax_trainer

settings = load_run_settings(sys.argv[1])
split, single = build_jax_trainer(settings), build_jax_trainer(settings, devices=1)
from rlrobot import network_split
refused = [network_split.choose_learners(*args) for args in
           ((None, 1, False, network_split.MAX_HIDDEN_UNITS + 1), (None, 1, True, 16), (None, 2, False, 16),
            (1, 1, False, 16), (2, 1, False, 16))]
assert refused == [None] * 5 and network_split.choose_learners(None, 1, False, 16) is not None
state = single.init_state(0)
after, devices = {}, {}
for name, trainer in (("split", split), ("single", single)):
    placed = trainer.place([state], False)
    devices[name] = len(placed.agent.params.actor["params"]["mu"]["kernel"].sharding.device_set)
    program = trainer.compile(placed)
    after[name] = jax.device_get(program(placed, jnp.int32(3), None))
    if name == "split":  # the operands of the learners' all-reduces, per all-reduce
        operands = [call.count("%") for call in re.findall(r" all-reduce(?:-start)?[(]([^)]*)[)]", program.as_text())]
leaves = {name: [np.asarray(x) for x in jax.tree.leaves(value)] for name, value in after.items()}
worst = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)) / (np.abs(a).max(initial=0.0) + 1e-6)))
            for a, b in zip(leaves["split"], leaves["single"]))
print(json.dumps({"learners": split.learners.axis_names, "single": single.learners, "devices": devices,
                  "all_reduce_operands": operands,
                  "worst": worst, "leaves": len(leaves["split"]), "updates": float(after["split"][1].updates),
                  "value_loss": float(after["split"][1].value_loss),
                  "policy_loss": [float(after[n][1].policy_loss) for n in ("split", "single")]}))
"""


def test_the_split_run_is_the_one_device_run(tmp_path):
    report = json.loads(run_python(SPLIT_AND_SINGLE, 2, tiny_config(tmp_path, 4096)).splitlines()[-1])
    assert report["learners"] == ["networks"] and report["single"] is None
    assert report["devices"] == {"split": 2, "single": 1}  # the split state is whole on both devices
    assert report["updates"] == 3.0 and report["value_loss"] > 0.0
    # The learners meet once per update and dtype, not once per leaf (network_split._psum_packed).
    assert report["all_reduce_operands"] == [1, 1], report["all_reduce_operands"]
    # Networks, Adam moments, normalisers, robots, keys and summed metrics after three iterations, to rounding.
    assert report["leaves"] > 40 and report["worst"] < 1e-4, report
    np.testing.assert_allclose(*report["policy_loss"], rtol=1e-4)


CLI_TWICE = """
import sys
from rlrobot.cli import main
config, results = sys.argv[1:3]
print("codes", [main([config, f"--run-id={name}", "--seed", "5", "--results-dir", results]) for name in "ab"])
"""


def test_a_cli_run_on_two_cpu_devices_splits_and_a_warm_launch_loads_the_same_programs(tmp_path):
    import subprocess
    import sys

    env = {**forced_device_env(2), "RLROBOT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", CLI_TWICE, tiny_config(tmp_path, 2048), str(tmp_path / "results")],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert "codes [0, 0]" in out, out[-4000:]
    assert out.count("the actor and the critic learn on a CPU device each") == 2
    assert len(list((tmp_path / "cache" / "programs").glob("train-*.jaxprogram"))) == 1  # b loaded a's program
    run_a, run_b = (tmp_path / "results" / name / "MobileRobot" for name in "ab")
    assert_checkpoints_close(run_a / "checkpoint.ckpt", run_b / "checkpoint.ckpt", rtol=0.0, atol=0.0)
    assert (run_a.parent / "MobileRobot.onnx").is_file()


PROVIDED = """
import os, sys
from rlrobot.host_devices import provide_host_devices, provided_host_devices
provide_host_devices()
import jax
from rlrobot.config import load_run_settings
from rlrobot.trainer import build_jax_trainer
small = build_jax_trainer(load_run_settings(sys.argv[1]))
wide = build_jax_trainer(load_run_settings(sys.argv[2]))
print(provided_host_devices(), len(jax.devices()), small.learners is not None, wide.learners, wide.num_devices)
"""


def test_provided_host_devices_are_the_learners_and_otherwise_the_robots_stay_on_one(tmp_path):
    import os
    import subprocess
    import sys

    env = {key: value for key, value in forced_device_env(1).items() if key != "XLA_FLAGS"}
    small = tiny_config(tmp_path, 1024)
    wide = tmp_path / "wide.yaml"
    wide.write_text(Path(small).read_text().replace("hidden_units: 16", "hidden_units: 256"))
    proc = subprocess.run([sys.executable, "-c", PROVIDED, small, str(wide)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if len(os.sched_getaffinity(0)) < 2:
        assert proc.stdout.split() == ["False", "1", "False", "None", "1"]
    else:  # a network too wide to split does not fall back to splitting its robots over the provided devices
        assert proc.stdout.split() == ["True", "2", "True", "None", "1"]
