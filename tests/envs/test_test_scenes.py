"""The course's test scenes (s8) and ``rlrobot-validate --trajectory-csv``."""
import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.mobile_robot_obstacles import MobileRobotObstaclesState
from rlrobot.validate import main as validate_main


def state_at(x: float, z: float, yaw: float = 0.0) -> MobileRobotObstaclesState:
    return MobileRobotObstaclesState(pos=jnp.array([x, z], jnp.float32), yaw=jnp.float32(yaw), slot=jnp.int32(0),
                                     t=jnp.int32(0), stage=jnp.int32(3))


def test_2020_scene_starts_at_its_spot_and_moves_0_2_m_per_step():
    env = envs.make("MobileRobotTest2020")
    obs, state = env.reset(jax.random.PRNGKey(0), slot=5)  # one arena: every slot starts there
    assert obs.shape == (22,)
    np.testing.assert_allclose(state.pos, [0.93, -2.61])
    _, moved, *_ = env.step_env(None, state, jnp.array([1.0, 0.0]), env.default_params)
    np.testing.assert_allclose(moved.pos, [0.93, -2.41], atol=1e-6)


def test_2021_scene_has_both_blocks_in_the_rays_way():
    """Straight ahead of (1.77, −3.0) stands the second block (near face at z = −0.71 − 0.2975); of (−2.41, −2.0)
    the first (near face at z = 0.65 − 0.2975). Ray 0 starts 0.01 m behind the pivot."""
    env = envs.make("MobileRobotTest2021")
    params = env.default_params
    for x, z, face in ((1.77, -3.0, -0.71 - 0.2975), (-2.41, -2.0, 0.65 - 0.2975)):
        obs, *_ = env._observe(state_at(x, z), params)
        expected = face - z + 0.01
        assert expected < params.ray_length
        assert obs[4] * params.ray_length == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("scene", ["MobileRobotTest2020", "MobileRobotTest2021"])
def test_the_car_cannot_drive_through_a_block(scene):
    env = envs.make(scene)
    params = env.default_params
    _, state = env.reset(jax.random.PRNGKey(0))
    for _ in range(60):
        _, state, *_ = env.step_env(None, state, jnp.array([1.0, 0.0]), params)
    walls, blocks, goal = env.solids(jnp.int32(0), params)
    block = blocks[-1] if scene.endswith("2021") else blocks[0]  # the block straight ahead of the start
    nose = float(state.pos[1]) + 1.0
    assert nose <= float(block.center.z) - block.half[1] + 1e-4


def test_trajectory_csv_has_time_x_z_reward_per_decision(shared_data, tmp_path):
    """Unity's own s7 policy in the 2020 test scene: two episodes, each ending on the goal's +100."""
    out = tmp_path / "trajectory.csv"
    code = validate_main([str(shared_data / "MobileRobot-22obs-497100.onnx"), "--scene", "MobileRobotTest2020",
                          "--episodes", "16", "--deterministic", "--json", str(tmp_path / "v.json"),
                          "--trajectory-csv", str(out)])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["time", "x", "z", "reward", "episode"]
    for episode in ("0", "1"):
        steps = [r for r in rows if r["episode"] == episode]
        times = [float(r["time"]) for r in steps]
        np.testing.assert_allclose(times, 0.02 * np.arange(1, len(steps) + 1), atol=1e-6)
        assert float(steps[-1]["reward"]) > 99.0 and all(float(r["reward"]) < 0 for r in steps[:-1])
        first = steps[0]
        assert abs(float(first["x"]) - 0.93) < 0.25 and abs(float(first["z"]) + 2.61) < 0.25


@pytest.mark.parametrize("scene", ["MobileRobot", "MobileRobotTest2021"])
def test_an_eager_step_compiles_nothing_the_second_time(scene):
    """Stepping without jit (a notebook, a test) reuses what the first step compiled: the env's reductions have
    module-level reducers, which JAX caches by function (a lambda would be compiled again on every call, ~1 s)."""
    env = envs.make(scene)
    params = env.default_params
    _, state = env.reset(jax.random.PRNGKey(0))
    action = jnp.array([1.0, 0.5])
    _, state, *_ = env.step_env(None, state, action, params)
    compiles = []

    def count(event: str, seconds: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        env.step_env(None, state, action, params)
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert compiles == []
