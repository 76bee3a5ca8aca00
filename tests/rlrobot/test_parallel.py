"""Robots split across 4 forced CPU devices: the same run as on one device, to float tolerance.

Each case runs in a fresh interpreter (``XLA_FLAGS`` is read once, when JAX starts).
"""
import json

import numpy as np
from scale_helpers import run_python, tiny_config

ONE_AND_FOUR_DEVICES = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
import envs
from rlrobot import parallel
from rlrobot.checkpoints import load_checkpoint, save_checkpoint
from rlrobot.config import load_run_settings
from rlrobot.train import init_train_state, make_train_iterations, make_train_spec

config, out_dir = sys.argv[1:3]
trainer = load_run_settings(config).behavior("MobileRobot")
env = envs.make("MobileRobot")
spec = make_train_spec(trainer, env.observation_size, env.action_size, 16)
state = init_train_state(jax.random.PRNGKey(0), env, env.default_params, spec)
mesh = parallel.make_mesh(jax.devices())
runs = {n: make_train_iterations(env, env.default_params, spec, mesh=m)
        .lower(parallel.place(state, m), jnp.int32(1)).compile()
        for n, m in ((1, None), (4, mesh))}
after = {1: runs[1](state, jnp.int32(3)), 4: runs[4](parallel.place(state, mesh), jnp.int32(3))}
arrays = {}
def keep(name, tree):
    arrays.update({f"{name}/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(jax.device_get(tree)))})
keep("1", after[1]); keep("4", after[4])

# Checkpoints are written gathered and read into an unsharded template; continue on the other device count.
for written, read in ((4, 1), (1, 4)):
    path = f"{out_dir}/written-on-{written}.ckpt"
    save_checkpoint(path, parallel.gather(after[written][0]), 3, {})
    loaded, _, _ = load_checkpoint(path, state)
    expected = jax.tree.leaves(jax.device_get(after[written][0]))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded), expected))
    loaded = parallel.place(loaded, mesh if read == 4 else None)
    keep(f"{written}-then-{read}", runs[read](loaded, jnp.int32(1)))
    keep(f"{written}-then-{written}", runs[written](after[written][0], jnp.int32(1)))
np.savez(f"{out_dir}/leaves.npz", **arrays)
spec_of = lambda x: str(getattr(x.sharding, "spec", None))
print(json.dumps({"obs": spec_of(after[4][0].obs),
                  "params": spec_of(after[4][0].agent.params.actor["params"]["mu"]["kernel"]),
                  "all_reduces": {n: run.as_text().count(" all-reduce(") for n, run in runs.items()}}))
"""


def assert_same_leaves(leaves, a: str, b: str) -> None:
    count = len([name for name in leaves if name.startswith(f"{a}/")])
    assert count == len([name for name in leaves if name.startswith(f"{b}/")]) > 0
    for i in range(count):  # networks, optimiser, normalisers, robots, keys, step and summed metrics
        # Summing in another order moves small elements by a few ulps of the leaf's largest one, so the
        # tolerance is relative to that scale (measured worst: 4e-6 of it), not to each element.
        expected = leaves[f"{a}/{i}"]
        scale = float(np.abs(expected).max(initial=0.0)) if expected.dtype.kind == "f" else 0.0
        np.testing.assert_allclose(leaves[f"{b}/{i}"], expected, rtol=2e-5, atol=max(2e-5 * scale, 1e-6),
                                   err_msg=f"{a} vs {b}: {i}")


def test_sharded_iteration_equals_single_device_and_checkpoints_cross_device_counts(tmp_path):
    report = json.loads(run_python(ONE_AND_FOUR_DEVICES, 4, tiny_config(tmp_path, 4096), str(tmp_path)))
    assert report["obs"] == "P('robots',)" and report["params"] == "P()"
    assert report["all_reduces"]["1"] == 0 and report["all_reduces"]["4"] >= 2  # gradients, normaliser/metric sums
    leaves = np.load(tmp_path / "leaves.npz")
    assert_same_leaves(leaves, "1", "4")
    assert_same_leaves(leaves, "4-then-4", "4-then-1")  # written sharded, resumed on one device
    assert_same_leaves(leaves, "1-then-1", "1-then-4")  # written on one device, resumed sharded


DEVICE_ERRORS = """
import sys
from rlrobot.cli import main
print("codes", [main([sys.argv[1], "--run-id=odd", "--devices", "3", "--results-dir", sys.argv[2]]),
                main([sys.argv[1], "--run-id=many", "--devices", "9", "--results-dir", sys.argv[2]])])
"""


def test_devices_must_exist_and_divide_the_robots(tmp_path):
    out = run_python(DEVICE_ERRORS, 4, tiny_config(tmp_path, 1024), str(tmp_path / "results"))
    assert "codes [2, 2]" in out
    assert "[ERROR] --num-envs 16 does not split evenly across 3 devices; use a multiple of 3 or set --devices." in out
    assert "[ERROR] --devices 9: must be between 1 and the 4 cpu device(s) available." in out
