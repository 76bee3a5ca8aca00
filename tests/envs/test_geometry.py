import jax.numpy as jnp
import numpy as np

from envs import geometry


def test_heading_is_clockwise_from_forward():
    np.testing.assert_allclose(geometry.heading(jnp.float32(0.0)), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(geometry.heading(jnp.float32(90.0)), [1.0, 0.0], atol=1e-6)  # right
    np.testing.assert_allclose(geometry.right_of(jnp.array([0.0, 1.0])), [1.0, 0.0])


def test_ray_hits_axis_aligned_and_rotated_box():
    box_c, box_h = jnp.array([0.0, 5.0]), jnp.array([2.0, 0.5])
    d = geometry.ray_box_distance(jnp.zeros(2), jnp.array([0.0, 1.0]), box_c, box_h)
    np.testing.assert_allclose(d, 4.5, rtol=1e-6)
    # Turned by 90° the box is 4 long in z: its near face is at z = 3.
    d = geometry.ray_box_distance(jnp.zeros(2), jnp.array([0.0, 1.0]), box_c, box_h, 90.0)
    np.testing.assert_allclose(d, 3.0, rtol=1e-5)
    # Misses: pointing away, or starting inside (Unity's Raycast does not see a collider it starts in).
    assert jnp.isinf(geometry.ray_box_distance(jnp.zeros(2), jnp.array([0.0, -1.0]), box_c, box_h))
    assert jnp.isinf(geometry.ray_box_distance(box_c, jnp.array([0.0, 1.0]), box_c, box_h))


def test_ray_circle_distance():
    d = geometry.ray_circle_distance(jnp.zeros(2), jnp.array([0.0, 1.0]), jnp.array([0.0, 3.0]), 0.5)
    np.testing.assert_allclose(d, 2.5, rtol=1e-6)
    # grazing offset: hits at z = 3 - sqrt(0.25 - 0.09)
    d = geometry.ray_circle_distance(jnp.array([0.3, 0.0]), jnp.array([0.0, 1.0]), jnp.array([0.0, 3.0]), 0.5)
    np.testing.assert_allclose(d, 3.0 - np.sqrt(0.16), rtol=1e-5)
    assert jnp.isinf(geometry.ray_circle_distance(jnp.array([0.6, 0.0]), jnp.array([0.0, 1.0]), jnp.array([0.0, 3.0]), 0.5))


def test_boxes_overlap_separating_axes():
    half = jnp.array([0.5, 0.5])
    assert geometry.boxes_overlap(jnp.zeros(2), half, 0.0, jnp.array([0.9, 0.0]), half, 0.0)
    assert not geometry.boxes_overlap(jnp.zeros(2), half, 0.0, jnp.array([1.1, 0.0]), half, 0.0)
    # A square turned 45° reaches 0.707 along x: overlaps at 1.15, not at 1.25.
    assert geometry.boxes_overlap(jnp.zeros(2), half, 45.0, jnp.array([1.15, 0.0]), half, 0.0)
    assert not geometry.boxes_overlap(jnp.zeros(2), half, 45.0, jnp.array([1.25, 0.0]), half, 0.0)
