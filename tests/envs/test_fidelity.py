"""Unity's own trained policies, run in the JAX scenes: a faithful sim lets them reach the goal as in Unity."""
import jax
import numpy as np
import pytest

import envs
from envs.rollout import first_episodes
from rlrobot.onnx_policy import load_onnx_policy

# Normaliser means Unity recorded while training the 19-obs policy (in its ONNX): what its sensors saw.
UNITY_RAY_MEANS_19 = np.array([0.9497, 0.9611, 0.9640, 0.9695, 0.9676, 0.9621, 0.9627, 0.9689, 0.9709, 0.9729,
                               0.9750, 0.9758, 0.9733, 0.9717, 0.9687, 0.9577, 0.9410, 0.9184])


def run(name, policy_file, sampled, num_envs=256, max_steps=3000):
    env = envs.make(name)
    policy = load_onnx_policy(policy_file)
    act = (lambda o, k: policy.act(o, k)) if sampled else (lambda o, k: policy.act(o))
    episodes = jax.jit(lambda k: first_episodes(env, env.default_params, act, k, num_envs, max_steps))
    stats = episodes(jax.random.PRNGKey(0))
    return jax.device_get(stats)


@pytest.mark.parametrize("sampled", [False, True])
def test_unity_19obs_policy_reaches_the_goal_in_about_30_steps(shared_data, sampled):
    stats = run("MobileRobot", shared_data / "MobileRobot-19obs.onnx", sampled)
    assert stats.finished.all()
    assert stats.success.mean() >= 0.95
    assert 22 <= stats.lengths[stats.success].mean() <= 38
    mean = stats.obs_sum / stats.obs_count
    np.testing.assert_allclose(mean[1:], UNITY_RAY_MEANS_19, atol=0.05)


def test_a_mirrored_scene_slows_the_policy_down(shared_data):
    """Sanity of the check itself: flipping the turn direction must hurt the Unity policy."""
    env = envs.make("MobileRobot")
    params = env.default_params.replace(turn_step=-10.0)
    policy = load_onnx_policy(shared_data / "MobileRobot-19obs.onnx")
    stats = jax.device_get(jax.jit(lambda k: first_episodes(env, params, lambda o, _: policy.act(o), k, 256, 300))(
        jax.random.PRNGKey(0)))
    assert stats.success.mean() < 0.9 or stats.lengths[stats.success].mean() > 45


def test_unity_22obs_policy_reaches_the_goal_past_the_block(shared_data):
    stats = run("MobileRobotObstacles", shared_data / "MobileRobot-22obs-497100.onnx", sampled=True, num_envs=128)
    assert stats.success.mean() >= 0.95
    assert stats.returns.mean() > 80  # Unity's running average at the end of training: 88.2
