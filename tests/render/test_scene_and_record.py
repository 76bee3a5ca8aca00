"""The drawn world is the simulated one: ray hits equal the observation, the recorder plays validation's episodes,
and a frame puts the goal and the car where the state says."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import envs
from envs.rollout import first_episodes
from rlrobot.render import scene
from rlrobot.render.draw import INK, Painter
from rlrobot.render.record import make_recorder, to_recording


def random_policy(obs, key):
    return jax.random.uniform(key, (obs.shape[0], 2), minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("name", envs.registered())
def test_ray_hits_equal_the_observed_rays(name):
    env = envs.make(name)
    params = env.default_params

    @jax.jit
    def play(key):
        """32 robots, 25 random steps: each step's observation and the rays' hits from its state."""
        obs, state = env.reset_batch(key, params, 32)

        def step(carry, key):
            obs, state = carry
            distance, kind = jax.vmap(lambda s: scene.ray_hits(env, params, s))(state)
            key_act, key_step = jax.random.split(key)
            next_obs, state, *_ = env.step_batch(key_step, state, random_policy(obs, key_act), params)
            return (next_obs, state), (obs, distance, kind)

        return jax.lax.scan(step, (obs, state), jax.random.split(key, 25))[1]

    obs, distance, kind = (np.asarray(a) for a in play(jax.random.PRNGKey(0)))
    observed = obs[..., -18:] * params.ray_length  # every scene ends its observation with the 18 rays
    drawn = np.where(np.isfinite(distance), distance, params.ray_length)  # a miss reads as the full length
    np.testing.assert_allclose(drawn, observed, atol=2e-4)
    clear = np.abs(observed - params.ray_length) > 1e-3  # a hit at exactly 4 m reads like a miss
    assert np.all(((kind != scene.NOTHING) == (observed < params.ray_length))[clear])
    assert scene.WALL in np.unique(kind)


def test_recorder_plays_the_episodes_validation_counts():
    env = envs.make("MobileRobot")  # a scene whose step draws on its key: the keys must be split as validation's
    params = env.default_params.replace(max_episode_steps=40)
    key = jax.random.PRNGKey(3)
    stats = jax.device_get(jax.jit(lambda k: first_episodes(env, params, random_policy, k, 16, 50))(key))
    recorder = make_recorder(env, params, lambda _, obs, k: random_policy(obs, k), 16, 5, 50)
    recording = to_recording(recorder(None, key), env, params, "MobileRobot")
    np.testing.assert_allclose(recording.reward.sum(0), stats.returns[:5], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(recording.length, stats.lengths[:5])
    np.testing.assert_array_equal(recording.outcome == 0, stats.success[:5])
    assert recording.frames == recording.length.max() + 1
    assert recording.pos.shape == (recording.frames, 5, 2) and recording.ray_kind.shape == (recording.frames, 5, 18)


def _wall_box(image: np.ndarray, cell: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Pixel bounds (left, top, right, bottom) of the wall-coloured pixels in one cell."""
    left, top, right, bottom = cell
    ys, xs = np.nonzero(image[top:bottom, left:right] == INK["wall"])
    return left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1


def _centroid(image: np.ndarray, cell, inks) -> np.ndarray:
    left, top, right, bottom = cell
    ys, xs = np.nonzero(np.isin(image[top:bottom, left:right], inks))
    return np.array([left + xs.mean() + 0.5, top + ys.mean() + 0.5])


def test_a_frame_puts_goal_and_car_where_the_state_says(recording_19):
    """Pixel check, independent of the drawing's own transform: the walls' pixels and the walls' metres fix the
    scale and orientation; the goal's and the car's pixels must then sit over the state's goal and car body."""
    rec = recording_19
    walls = [s for s in rec.solids[0] if s.kind == scene.WALL]
    corners = np.concatenate([scene.box_corners(w.center, w.size, w.forward) for w in walls])
    (x_min, z_min), (x_max, z_max) = corners.min(0), corners.max(0)
    painter = Painter(rec, cell=240)
    layout = painter.layout
    for t in (0, 7):
        image = np.asarray(painter.frame(t))
        for k in range(rec.episodes):
            left, top = layout.corner(k)
            cell = (left, top, left + layout.cell, top + layout.header + layout.cell)
            px_left, px_top, px_right, px_bottom = _wall_box(image, cell)
            # pixels -> metres from the walls alone: x grows to the right, z upwards
            scale = np.array([(x_max - x_min) / (px_right - px_left), -(z_max - z_min) / (px_bottom - px_top)])
            origin = np.array([x_min - px_left * scale[0], z_max - px_top * scale[1]])

            def to_metres(p, origin=origin, scale=scale):
                return origin + np.asarray(p) * scale

            metre = scale[0]
            goal = next(s for s in rec.solids[k] if s.kind == scene.GOAL)
            seen_goal = to_metres(_centroid(image, cell, [INK["goal"], INK["goal_edge"]]))
            np.testing.assert_allclose(seen_goal, goal.center, atol=2 * metre)
            step = min(t, rec.length[k])
            forward = scene.heading(rec.yaw[step, k])
            body_centre = rec.pos[step, k] + 0.25 * forward
            seen_car = to_metres(_centroid(image, cell, [INK["car"], INK["car_edge"], INK["car_nose"]]))
            np.testing.assert_allclose(seen_car, body_centre, atol=2 * metre)
            # The heading arrow (white) lies ahead of the body's centre, along the car's heading.
            nose = to_metres(_centroid(image, cell, [INK["car_nose"]]))
            assert np.dot(nose - rec.pos[step, k], forward) > 0.3


def test_obstacle_course_draws_its_block_and_goal_box():
    env = envs.make("MobileRobotObstacles")
    params = env.default_params
    recorder = make_recorder(env, params, lambda _, obs, k: random_policy(obs, k), 8, 8, 3)
    rec = to_recording(recorder(None, jax.random.PRNGKey(0)), env, params, "MobileRobotObstacles")
    for k in range(8):
        kinds = [s.kind for s in rec.solids[k]]
        assert kinds.count(scene.BLOCK) == 1 and kinds.count(scene.GOAL) == 1
        block = next(s for s in rec.solids[k] if s.kind == scene.BLOCK)
        np.testing.assert_allclose(block.center, params.arenas[k][1], atol=1e-6)
    image = np.asarray(Painter(rec, cell=160).still())
    assert (image == INK["block"]).sum() > 8 * 50
