"""The Unity MobileRobot car shared by every scene: kinematics, solid body and its 18 distance sensors.

Coordinates are arena-relative Unity ground-plane (x, z); yaw in degrees, clockwise from +z.
See ``docs/mobile-robot.md`` for the measured numbers.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from envs import geometry
from envs.geometry import Box, Ray, Vec

NUM_RAYS = 18
RAY_SPACING_DEG = 20.0
# Unity's Car: BoxCollider 1.0 (x) × 1.5 (z) centred 0.25 m ahead of the pivot (nose 1.0 m ahead, tail 0.5 m behind).
BODY_HALF_EXTENTS = (0.5, 0.75)
BODY_CENTER_AHEAD = 0.25
# Sensor i points 20·i° clockwise of the heading (0 = straight ahead, 1..8 right, 9 back, 10..17 left): in the car's
# frame, constants, so the 18 world directions cost two multiply-adds each instead of 18 sines and cosines.
_RAY_ANGLES = np.deg2rad(np.arange(NUM_RAYS) * RAY_SPACING_DEG)
RAYS_IN_CAR_FRAME = Vec(np.sin(_RAY_ANGLES).astype(np.float32), np.cos(_RAY_ANGLES).astype(np.float32))

ACTION_MODES = ("unity", "wheels")


def as_vec(point: jnp.ndarray) -> Vec:
    """A ``[2]`` array (as kept in env states) as a :class:`Vec`."""
    return Vec(point[0], point[1])


def wall_boxes(walls: tuple) -> tuple[Box, ...]:
    """Walls given as ``((centre x, z), (half x, z))`` pairs as axis-aligned boxes of Python floats, so that they are
    compile-time constants to every test against them."""
    return tuple(Box(Vec(*center), half) for center, half in walls)


def body(pos: Vec, forward: Vec) -> Box:
    """The car's collider with its pivot at ``pos``, facing ``forward``."""
    center = Vec(pos.x + BODY_CENTER_AHEAD * forward.x, pos.z + BODY_CENTER_AHEAD * forward.z)
    return Box(center, BODY_HALF_EXTENTS, forward)


def body_is_free(pos: jnp.ndarray | Vec, yaw: jnp.ndarray, solids: Sequence[Box]) -> jnp.ndarray:
    """True when the car body at (pos, yaw) overlaps none of the solid boxes."""
    return body_is_free_facing(Vec(*pos), geometry.heading(yaw), solids)


def body_is_free_facing(pos: Vec, forward: Vec, solids: Sequence[Box]) -> jnp.ndarray:
    """:func:`body_is_free` for a car facing the unit vector ``forward`` (no sine or cosine to compute)."""
    collider = body(pos, forward)
    return ~functools.reduce(jnp.logical_or, [geometry.boxes_overlap(collider, solid) for solid in solids])


def motion(yaw: jnp.ndarray, action: jnp.ndarray, action_mode: str, forward_step: jnp.ndarray, turn_step: jnp.ndarray,
           wheel_speed: jnp.ndarray, wheel_base: jnp.ndarray, heading: Vec | None = None) -> tuple[Vec, jnp.ndarray]:
    """Displacement and yaw change (deg) for one decision with an action clipped to [-1, 1].

    ``unity``: Unity's ``Translate(0, 0, a0·step)`` then ``Rotate(0, a1·turn, 0)`` (a1 > 0 turns right).
    ``wheels``: a differential-drive base with left/right wheel speeds, v = (l + r)/2, ω = (r − l)/b,
    integrated exactly over the step (the unicycle arc); r > l turns left. ``heading``: the unit vector ``yaw``
    faces, where the caller has it stored (:func:`stored_heading`).
    """
    a = jnp.clip(action, -1.0, 1.0)
    if action_mode == "unity":
        direction = geometry.heading(yaw) if heading is None else heading
        distance, dyaw = forward_step * a[0], turn_step * a[1]
    elif action_mode == "wheels":
        left, right = a[0] * wheel_speed, a[1] * wheel_speed
        v = 0.5 * (left + right)
        omega = (right - left) / wheel_base  # rad per step, counter-clockwise
        distance = v * jnp.sinc(omega / (2.0 * jnp.pi))  # the chord: v·sin(ω/2)/(ω/2)
        dyaw = -jnp.rad2deg(omega)
        direction = geometry.heading(yaw + 0.5 * dyaw)
    else:
        raise ValueError(f"Unknown action_mode {action_mode!r}; expected one of {ACTION_MODES}")
    return Vec(distance * direction.x, distance * direction.z), dyaw


def stored_heading(yaw: jnp.ndarray) -> Vec:
    """The unit vector a yaw faces, computed once and stored (``geometry.computed_once``): a scene's step hands it to
    :func:`motion` and :func:`move`, so that no fused loop of theirs computes a sine and cosine of its own."""
    return Vec(*geometry.computed_once(*geometry.heading(yaw)))


def move(pos: Vec, yaw: jnp.ndarray, delta: Vec, dyaw: jnp.ndarray, solids: Sequence[Box],
         heading: Vec | None = None) -> tuple[Vec, jnp.ndarray, Vec]:
    """Apply a move with solid obstacles: translate (sliding along a wall if blocked), then rotate. Returns the new
    pivot, yaw and heading (the unit vector it faces).

    Unity's ``Rotate`` always turns the car and the physics engine then pushes it out of whatever it overlaps, so a
    car with its nose against a wall still turns (and slides off it): the turned body is pushed out of each solid in
    turn along the shortest way (:func:`geometry.push_out`). Only if that leaves it overlapping something (a corner
    pushing it into another solid) does the turn not happen.

    The heading is returned, computed once with the rest, so that the sensors need no sine and cosine of their own:
    XLA would otherwise recompute them in every fused loop over the 18 rays. For the same reason the heading before
    the turn and every body-against-solids test are stored once (:func:`computed_once_mask`) rather than repeated in
    each coordinate that selects on them. ``heading``: :func:`stored_heading` of ``yaw``, where the caller has it.
    """
    before = stored_heading(yaw) if heading is None else heading
    full = Vec(pos.x + delta.x, pos.z + delta.z)
    along_x, along_z = Vec(pos.x + delta.x, pos.z), Vec(pos.x, pos.z + delta.z)
    use_full, use_x, use_z = computed_once_mask(*(body_is_free_facing(p, before, solids)
                                                  for p in (full, along_x, along_z)))
    moved = Vec(jnp.where(use_full | use_x, full.x, pos.x), jnp.where(use_full | (~use_x & use_z), full.z, pos.z))
    turned = wrap_degrees(yaw + dyaw)
    moved_x, moved_z, forward_x, forward_z = geometry.computed_once(moved.x, moved.z, *geometry.heading(turned))
    moved, forward = Vec(moved_x, moved_z), Vec(forward_x, forward_z)
    pushed = moved
    for solid in solids:  # each push computed once: fused, the chain of pushes would grow exponentially
        push = geometry.push_out(body(pushed, forward), solid)
        pushed = Vec(*geometry.computed_once(pushed.x + push.x, pushed.z + push.z))
    (ok,) = computed_once_mask(body_is_free_facing(pushed, forward, solids))
    return (Vec(jnp.where(ok, pushed.x, moved.x), jnp.where(ok, pushed.z, moved.z)), jnp.where(ok, turned, yaw),
            Vec(jnp.where(ok, forward.x, before.x), jnp.where(ok, forward.z, before.z)))


def computed_once_mask(*masks: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """:func:`geometry.computed_once` for boolean arrays: a box test stored once rather than repeated in every
    select that reads it."""
    return tuple(value > 0.5 for value in geometry.computed_once(*(m.astype(jnp.float32) for m in masks)))


def wrap_degrees(angle: jnp.ndarray) -> jnp.ndarray:
    """The angle in [-180°, 180°): ``jnp.mod(angle + 180, 360) - 180``, bit for bit, for |angle| < 540°.

    Written with ``floor``: XLA's CPU ``remainder`` on floats is a call per element (10 µs for 4096 angles on a
    2-core Xeon, against 0.4 µs). Within that range the subtraction of 360·k is exact where the remainder is, and
    rounds as ``jnp.mod``'s own correction does where it is not.
    """
    shifted = angle + 180.0
    return shifted - 360.0 * jnp.floor(shifted * np.float32(1 / 360)) - 180.0


def sensor_rays(pos: Vec, forward: Vec, sensor_behind: jnp.ndarray) -> Ray:
    """The 18 sensor rays (directions ``[18]``) from ``sensor_behind`` m behind the pivot."""
    origin = Vec(pos.x - sensor_behind * forward.x, pos.z - sensor_behind * forward.z)
    return Ray(origin, geometry.rotate(RAYS_IN_CAR_FRAME, forward))


def nearest_wall(rays: Ray, walls: Sequence[Box]) -> jnp.ndarray:
    """Each ray's distance to the nearest of some static, axis-aligned walls (inf = none).

    The walls go in as one batch of constants (shape ``[W, 1]`` against the rays' ``[R]``) reduced by one ``min``:
    XLA computes that reduction once, whereas a chain of elementwise minimums gets re-fused (recomputed) into
    every consumer of the distances, and there are several (observation, reward, auto-reset).
    """
    def column(values: list[float]) -> np.ndarray:
        return np.asarray(values, np.float32)[:, None]

    assert all(wall.forward is None for wall in walls), "walls must be axis-aligned"
    stacked = Box(Vec(column([w.center.x for w in walls]), column([w.center.z for w in walls])),
                  (column([w.half[0] for w in walls]), column([w.half[1] for w in walls])))
    return geometry.fused_min(geometry.ray_box_distance(rays, stacked), axis=0)


def nearest_hit(obstacles: jnp.ndarray, target: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per ray, the nearer of the ``obstacles`` and ``target`` distances (inf = nothing), and whether it is the target.

    On a tie the obstacle wins, as with Unity's colliders listed before the target.
    """
    return geometry.smaller(obstacles, target), target < obstacles


_RAY_BITS = np.left_shift(1, np.arange(NUM_RAYS)).astype(np.int32)


def _or_pairs(a: tuple, b: tuple) -> tuple:
    """The reducer of :func:`episode_outcome`, at module level so that eager calls reuse its compiled reduction."""
    return a[0] | b[0], a[1] | b[1]


def episode_outcome(reached: jnp.ndarray, penalised: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Unity's reward loop over the rays in order: the first ray in ``reached`` ends the episode, and every ray in
    ``penalised`` before it costs a penalty. Returns (terminated, number of penalties).

    Both ray masks become bit sets in a single reduction (bit i = ray i), so the rays are evaluated once;
    the bits below the first reached ray are ``(r & -r) - 1`` (all of them when none is reached).
    """
    reached_bits, penalised_bits = jax.lax.reduce(
        (jnp.where(reached, _RAY_BITS, 0), jnp.where(penalised, _RAY_BITS, 0)), (np.int32(0), np.int32(0)),
        _or_pairs, (0,))
    before_first = (reached_bits & -reached_bits) - 1
    return reached_bits != 0, jax.lax.population_count(penalised_bits & before_first)


def facing_angle_deg(pos: Vec, forward: Vec, goal: Vec, height_difference: jnp.ndarray,
                     goal_first: bool) -> jnp.ndarray:
    """Unity's ``Vector3.SignedAngle`` between the car's forward and the 3-D direction to the goal centre.

    The goal centre is ``height_difference`` above the pivot, so the angle never reaches 0 when facing the goal
    (``docs/mobile-robot.md``, "The facing angle"). ``goal_first`` = ``SignedAngle(targetDir, forward)`` (scene s6:
    positive when the goal is to the left); otherwise ``SignedAngle(forward, targetDir)`` (scene s7: positive to the
    right). Unity's ``Mathf.Sign(0)`` is +1.
    """
    t = Vec(goal.x - pos.x, goal.z - pos.z)
    cross = t.z * forward.x - t.x * forward.z  # targetDir.z·forward.x − targetDir.x·forward.z
    # The 3-D angle as atan2(|t × f|, t · f): with f level and of unit length, |t × f|² = cross² + height².
    angle = jnp.rad2deg(geometry.atan2(jnp.sqrt(cross**2 + height_difference**2), geometry.dot(t, forward)))
    cross = cross if goal_first else -cross
    return jnp.where(cross >= 0.0, angle, -angle)
