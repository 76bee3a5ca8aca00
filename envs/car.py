"""The Unity MobileRobot car shared by every scene: kinematics, solid body and its 18 distance sensors.

Coordinates are arena-relative Unity ground-plane (x, z); yaw in degrees, clockwise from +z.
See ``../shared/reference/mobile-robot.md`` §1.1–1.2 and §5 for the measured numbers.
"""
from __future__ import annotations

import jax.numpy as jnp

from envs import geometry

NUM_RAYS = 18
RAY_SPACING_DEG = 20.0
# Unity's Car: BoxCollider 1.0 (x) × 1.5 (z) centred 0.25 m ahead of the pivot (nose 1.0 m ahead, tail 0.5 m behind).
BODY_HALF_EXTENTS = (0.5, 0.75)
BODY_CENTER_AHEAD = 0.25

ACTION_MODES = ("unity", "wheels")


def body_center(pos: jnp.ndarray, yaw: jnp.ndarray) -> jnp.ndarray:
    return pos + BODY_CENTER_AHEAD * geometry.heading(yaw)


def body_is_free(pos: jnp.ndarray, yaw: jnp.ndarray, solids: tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]) -> jnp.ndarray:
    """True when the car body at (pos, yaw) overlaps none of the solid boxes ``(centers, halves, yaws)``."""
    centers, halves, yaws = solids
    overlap = geometry.boxes_overlap(body_center(pos, yaw), jnp.asarray(BODY_HALF_EXTENTS), yaw, centers, halves, yaws)
    return ~jnp.any(overlap)


def motion(yaw: jnp.ndarray, action: jnp.ndarray, action_mode: str, forward_step: jnp.ndarray, turn_step: jnp.ndarray,
           wheel_speed: jnp.ndarray, wheel_base: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Displacement ``[2]`` and yaw change (deg) for one decision with an action clipped to [-1, 1].

    ``unity``: Unity's ``Translate(0, 0, a0·step)`` then ``Rotate(0, a1·turn, 0)`` (a1 > 0 turns right).
    ``wheels``: a differential-drive base with left/right wheel speeds, v = (l + r)/2, ω = (r − l)/b,
    integrated exactly over the step (the unicycle arc); r > l turns left.
    """
    a = jnp.clip(action, -1.0, 1.0)
    if action_mode == "unity":
        return forward_step * a[0] * geometry.heading(yaw), turn_step * a[1]
    if action_mode == "wheels":
        left, right = a[0] * wheel_speed, a[1] * wheel_speed
        v = 0.5 * (left + right)
        omega = (right - left) / wheel_base  # rad per step, counter-clockwise
        chord = v * jnp.sinc(omega / (2.0 * jnp.pi))  # v·sin(ω/2)/(ω/2)
        dyaw = -jnp.rad2deg(omega)
        return chord * geometry.heading(yaw + 0.5 * dyaw), dyaw
    raise ValueError(f"Unknown action_mode {action_mode!r}; expected one of {ACTION_MODES}")


def move(pos: jnp.ndarray, yaw: jnp.ndarray, delta: jnp.ndarray, dyaw: jnp.ndarray,
         solids: tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Apply a move with solid walls: translate (sliding along a wall if blocked), then rotate unless blocked."""
    full, along_x, along_z = pos + delta, pos + delta * jnp.array([1.0, 0.0]), pos + delta * jnp.array([0.0, 1.0])
    new_pos = jnp.where(body_is_free(full, yaw, solids), full,
                        jnp.where(body_is_free(along_x, yaw, solids), along_x,
                                  jnp.where(body_is_free(along_z, yaw, solids), along_z, pos)))
    turned = wrap_degrees(yaw + dyaw)
    new_yaw = jnp.where(body_is_free(new_pos, turned, solids), turned, yaw)
    return new_pos, new_yaw


def wrap_degrees(angle: jnp.ndarray) -> jnp.ndarray:
    return jnp.mod(angle + 180.0, 360.0) - 180.0


def ray_directions(yaw: jnp.ndarray) -> jnp.ndarray:
    """Unit directions of sensor i at yaw + 20·i° (0 = straight ahead, 1..8 right, 9 back, 10..17 left): ``[18, 2]``."""
    local = geometry.heading(jnp.arange(NUM_RAYS, dtype=jnp.float32) * RAY_SPACING_DEG)
    return geometry.rotate(local, yaw)


def cast_rays(pos: jnp.ndarray, yaw: jnp.ndarray, sensor_behind: jnp.ndarray,
              boxes: tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray], circles: tuple[jnp.ndarray, jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
    """First hit of each sensor ray: distances ``[18]`` (inf = nothing) and the index of the shape hit.

    Shapes are numbered boxes first, then circles.
    """
    origin = pos - sensor_behind * geometry.heading(yaw)
    dirs = ray_directions(yaw)[:, None, :]
    box_c, box_h, box_yaw = boxes
    circle_c, circle_r = circles
    to_boxes = geometry.ray_box_distance(origin, dirs, box_c, box_h, box_yaw)      # [18, B]
    to_circles = geometry.ray_circle_distance(origin, dirs, circle_c, circle_r)    # [18, C]
    distances = jnp.concatenate([to_boxes, to_circles], axis=-1)
    return jnp.min(distances, axis=-1), jnp.argmin(distances, axis=-1)


def first_index(mask: jnp.ndarray) -> jnp.ndarray:
    """Index of the first True in a ray mask, or NUM_RAYS when none."""
    return jnp.where(jnp.any(mask), jnp.argmax(mask), NUM_RAYS)


def facing_angle_deg(pos: jnp.ndarray, yaw: jnp.ndarray, goal: jnp.ndarray, height_difference: jnp.ndarray,
                     goal_first: bool) -> jnp.ndarray:
    """Unity's ``Vector3.SignedAngle`` between the car's forward and the 3-D direction to the goal centre.

    The goal centre is ``height_difference`` above the pivot, so the angle never reaches 0 when facing the goal
    (§5.1). ``goal_first`` = ``SignedAngle(targetDir, forward)`` (scene s6: positive when the goal is to the left);
    otherwise ``SignedAngle(forward, targetDir)`` (scene s7: positive to the right). Unity's ``Mathf.Sign(0)`` is +1.
    """
    t = goal - pos
    f = geometry.heading(yaw)
    norm3 = jnp.sqrt(jnp.sum(t * t) + height_difference**2)
    cos_angle = jnp.clip(jnp.sum(t * f) / jnp.maximum(norm3, 1e-12), -1.0, 1.0)
    angle = jnp.rad2deg(jnp.arccos(cos_angle))
    cross = t[1] * f[0] - t[0] * f[1]  # targetDir.z·forward.x − targetDir.x·forward.z
    cross = cross if goal_first else -cross
    return jnp.where(cross >= 0.0, angle, -angle)
