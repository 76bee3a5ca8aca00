import jax
import jax.numpy as jnp
import numpy as np

from envs import geometry
from envs.geometry import Box, Ray, Vec

UP = Vec(jnp.float32(0.0), jnp.float32(1.0))
ORIGIN = Vec(jnp.float32(0.0), jnp.float32(0.0))


def test_heading_is_clockwise_from_forward():
    np.testing.assert_allclose(geometry.heading(jnp.float32(0.0)), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(geometry.heading(jnp.float32(90.0)), [1.0, 0.0], atol=1e-6)  # right
    np.testing.assert_allclose(geometry.right_of(Vec(0.0, 1.0)), [1.0, 0.0])


def test_ray_hits_axis_aligned_and_rotated_box():
    box = Box(Vec(0.0, 5.0), (2.0, 0.5))
    np.testing.assert_allclose(geometry.ray_box_distance(Ray(ORIGIN, UP), box), 4.5, rtol=1e-6)
    # Turned by 90° the box is 4 long in z: its near face is at z = 3.
    turned = box._replace(forward=geometry.heading(90.0))
    np.testing.assert_allclose(geometry.ray_box_distance(Ray(ORIGIN, UP), turned), 3.0, rtol=1e-5)
    # Misses: pointing away, or starting inside (Unity's Raycast does not see a collider it starts in).
    assert jnp.isinf(geometry.ray_box_distance(Ray(ORIGIN, Vec(0.0, -1.0)), box))
    assert jnp.isinf(geometry.ray_box_distance(Ray(box.center, UP), box))


def test_ray_circle_distance():
    center = Vec(0.0, 3.0)
    np.testing.assert_allclose(geometry.ray_circle_distance(Ray(ORIGIN, UP), center, 0.5), 2.5, rtol=1e-6)
    # grazing offset: hits at z = 3 - sqrt(0.25 - 0.09)
    d = geometry.ray_circle_distance(Ray(Vec(0.3, 0.0), UP), center, 0.5)
    np.testing.assert_allclose(d, 3.0 - np.sqrt(0.16), rtol=1e-5)
    assert jnp.isinf(geometry.ray_circle_distance(Ray(Vec(0.6, 0.0), UP), center, 0.5))


def test_boxes_overlap_separating_axes():
    def square(x: float, yaw: float | None = None) -> Box:
        return Box(Vec(x, 0.0), (0.5, 0.5), None if yaw is None else geometry.heading(yaw))

    assert geometry.boxes_overlap(square(0.0, 0.0), square(0.9))
    assert not geometry.boxes_overlap(square(0.0, 0.0), square(1.1))
    # A square turned 45° reaches 0.707 along x: overlaps at 1.15, not at 1.25.
    assert geometry.boxes_overlap(square(0.0, 45.0), square(1.15))
    assert not geometry.boxes_overlap(square(0.0, 45.0), square(1.25))
    # The same with the turned square second, and with both turned: the test is symmetric.
    assert geometry.boxes_overlap(square(1.15), square(0.0, 45.0))
    assert not geometry.boxes_overlap(square(1.25, 0.0), square(0.0, 45.0))
    assert geometry.boxes_overlap(square(0.0, 45.0), square(1.15, 90.0))


def test_rays_broadcast_against_a_box():
    directions = Vec(jnp.array([0.0, 1.0, 0.0]), jnp.array([1.0, 0.0, -1.0]))
    d = geometry.ray_box_distance(Ray(ORIGIN, directions), Box(Vec(0.0, 5.0), (2.0, 0.5)))
    np.testing.assert_allclose(d, [4.5, np.inf, np.inf], rtol=1e-6)


def test_push_out_takes_the_shortest_way_out():
    wall = Box(Vec(0.0, 0.0), (1.0, 1.0))
    inside = Box(Vec(1.4, 0.2), (0.5, 0.5))  # 0.1 m deep along x, 0.3 m along z
    push = geometry.push_out(inside, wall)
    np.testing.assert_allclose([push.x, push.z], [0.1 + geometry.PUSH_MARGIN, 0.0], atol=1e-6)
    moved = Box(Vec(1.4 + push.x, 0.2 + push.z), (0.5, 0.5))
    assert not geometry.boxes_overlap(moved, wall)
    apart = geometry.push_out(Box(Vec(3.0, 0.0), (0.5, 0.5)), wall)
    assert float(apart.x) == 0.0 and float(apart.z) == 0.0
    rotated = Box(Vec(0.0, 1.6), (0.5, 0.75), geometry.heading(30.0))
    push = geometry.push_out(rotated, wall)
    assert not geometry.boxes_overlap(Box(Vec(push.x, 1.6 + push.z), (0.5, 0.75), geometry.heading(30.0)), wall)


def test_atan2_matches_the_exact_angle_in_every_octant_and_on_the_axes():
    """Compiled as the product compiles (``tests/conftest.py``: 512-bit vectors where the CPU has them), where XLA's
    own ``atan`` is wrong."""
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(size=100_000), rng.uniform(-1e-3, 1e-3, 1000)]).astype(np.float32)
    x = np.concatenate([rng.normal(size=100_000), rng.uniform(-1e-3, 1e-3, 1000)]).astype(np.float32)
    exact = np.arctan2(y.astype(np.float64), x.astype(np.float64))
    angle = np.asarray(jax.jit(geometry.atan2)(y, x))
    assert np.all(np.abs(angle - exact) <= 3.5 * np.spacing(np.abs(exact).astype(np.float32)))
    axes_y = np.float32([0, 0, 0, 1, -1, 2.5, -2.5])
    axes_x = np.float32([0, 1, -1, 0, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(jax.jit(geometry.atan2)(axes_y, axes_x)),
                                  np.arctan2(axes_y, axes_x).astype(np.float32))


def test_heading_is_exact_at_right_angles_and_close_everywhere():
    yaw = np.linspace(-720.0, 720.0, 200_001).astype(np.float32)
    forward = jax.jit(geometry.heading)(yaw)
    radians = np.deg2rad(yaw.astype(np.float64))
    np.testing.assert_allclose(np.asarray(forward.x), np.sin(radians), rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(forward.z), np.cos(radians), rtol=0, atol=1e-7)
    right = jax.jit(geometry.heading)(np.float32([0, 90, 180, -90, 270, -180, 360]))
    np.testing.assert_array_equal(np.asarray(right.x), [0, 1, 0, -1, -1, 0, 0])
    np.testing.assert_array_equal(np.asarray(right.z), [1, 0, -1, 0, 0, -1, 1])


def test_smaller_and_larger_are_minimum_and_maximum_without_nans():
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.normal(size=1000), [np.inf, -np.inf, 1.0, np.inf]]).astype(np.float32)
    b = np.concatenate([rng.normal(size=1000), [1.0, np.inf, 1.0, np.inf]]).astype(np.float32)
    np.testing.assert_array_equal(jax.jit(geometry.smaller)(a, b), np.minimum(a, b))
    np.testing.assert_array_equal(jax.jit(geometry.larger)(a, b), np.maximum(a, b))
