"""What stands in a robot's arena, and what each of its sensor rays hits, from the environment's own params and state.

Nothing here repeats a scene's numbers: the walls are ``params.walls``, the obstacle course's block and goal box
come from the scene's own ``_scene`` (the boxes its physics and rays use), and the reach-goal scene's goal is the
circle its rays see (``state.goal``, ``params.goal_ray_radius``). :func:`ray_hits` casts the car's 18 sensor rays
(``envs.car.sensor_rays``) at these solids with ``envs.geometry``'s tests, so the distances drawn are the distances
the robot observed (``tests/render`` holds them to the observation), and names what each ray hit first.

A scene rlrobot does not know yet is still drawn: its ``params.walls`` and, if its state has one, a goal point.
:func:`describes` registers how to describe a new one.
"""
from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import car, geometry
from envs.geometry import Box, Vec

NOTHING, WALL, BLOCK, GOAL = 0, 1, 2, 3
KIND_NAMES = ("nothing", "wall", "block", "goal")


@struct.dataclass
class Solid:
    """A box or a circle in arena coordinates (x, z): ``center`` [2]; ``size`` [2] = a box's half extents along its
    right and forward axes, or (radius, radius); ``forward`` [2] = the unit vector a box faces."""

    center: jnp.ndarray
    size: jnp.ndarray
    forward: jnp.ndarray
    kind: int = struct.field(pytree_node=False, default=WALL)
    circle: bool = struct.field(pytree_node=False, default=False)
    aligned: bool = struct.field(pytree_node=False, default=True)  # forward is (0, 1): the ray test skips a rotation


def _f32(values) -> jnp.ndarray:
    return jnp.asarray(values, jnp.float32)


def from_box(box: Box, kind: int) -> Solid:
    forward = (0.0, 1.0) if box.forward is None else (box.forward.x, box.forward.z)
    return Solid(center=jnp.stack([_f32(box.center.x), _f32(box.center.z)]), size=_f32(box.half),
                 forward=jnp.stack([_f32(forward[0]), _f32(forward[1])]), kind=kind, aligned=box.forward is None)


def walls(params) -> tuple[Solid, ...]:
    """The arena's static walls, ``((centre x, z), (half x, z))`` pairs in ``params.walls``."""
    return tuple(from_box(box, WALL) for box in car.wall_boxes(getattr(params, "walls", ())))


def _goal_circle(center: jnp.ndarray, radius) -> Solid:
    return Solid(center=_f32(center), size=jnp.full((2,), radius, jnp.float32), forward=_f32((0.0, 1.0)), kind=GOAL,
                 circle=True)


_SCENES: dict[str, Callable] = {}


def describes(class_name: str):
    """Register ``fn(env, params, state) -> tuple[Solid, ...]`` for the environment class named ``class_name`` (and
    its subclasses, unless they have their own)."""
    def register(fn: Callable) -> Callable:
        _SCENES[class_name] = fn
        return fn
    return register


@describes("MobileRobot")
def _reach_goal(env, params, state) -> tuple[Solid, ...]:
    return walls(params) + (_goal_circle(state.goal, params.goal_ray_radius),)


@describes("MobileRobotObstacles")
def _obstacle_course(env, params, state) -> tuple[Solid, ...]:
    boxes = env._scene(state.slot % len(params.arenas), params)  # what the car collides with: walls, blocks, goal
    blocks = boxes[len(params.walls):-1]
    return walls(params) + tuple(from_box(block, BLOCK) for block in blocks) + (from_box(boxes[-1], GOAL),)


def _generic(env, params, state) -> tuple[Solid, ...]:
    goal = getattr(state, "goal", None)
    radius = getattr(params, "goal_ray_radius", getattr(params, "goal_radius", 0.5))
    return walls(params) + (() if goal is None else (_goal_circle(goal, radius),))


def unwrap(env, params, state):
    """The scene inside a wrapper that draws params per robot (``envs.sampled.SampledParams``: ``env.env``,
    ``state.inner``, ``env.robot_params``), with this robot's params; any other scene as it is."""
    while hasattr(env, "robot_params") and hasattr(state, "inner") and hasattr(state, "values"):
        env, params, state = env.env, env.robot_params(params, state.values), state.inner
    return env, params, state


def solids(env, params, state) -> tuple[Solid, ...]:
    """What stands in the arena of the robot in ``state`` (one robot, no batch axis)."""
    env, params, state = unwrap(env, params, state)
    describe = next((_SCENES[c.__name__] for c in type(env).__mro__ if c.__name__ in _SCENES), _generic)
    return describe(env, params, state)


def sensor_rays(params, state) -> geometry.Ray:
    """The car's 18 sensor rays, as the scenes cast them."""
    pos = car.as_vec(state.pos)
    return car.sensor_rays(pos, geometry.heading(state.yaw), getattr(params, "sensor_behind_pivot", 0.0))


def _distance(rays: geometry.Ray, solid: Solid) -> jnp.ndarray:
    center = Vec(solid.center[0], solid.center[1])
    if solid.circle:
        return geometry.ray_circle_distance(rays, center, solid.size[0])
    forward = None if solid.aligned else Vec(solid.forward[0], solid.forward[1])
    return geometry.ray_box_distance(rays, Box(center, (solid.size[0], solid.size[1]), forward))


def ray_hits(env, params, state, arena: tuple[Solid, ...] | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Each sensor ray's distance to what it hits first (inf: nothing within ``params.ray_length``) and that thing's
    kind (NOTHING, WALL, BLOCK, GOAL). Walls and blocks are tested before the goal, so on a tie the obstacle wins,
    as in the scenes."""
    arena = solids(env, params, state) if arena is None else arena
    env, params, state = unwrap(env, params, state)
    rays = sensor_rays(params, state)
    best = jnp.full((car.NUM_RAYS,), jnp.inf, jnp.float32)
    kind = jnp.zeros((car.NUM_RAYS,), jnp.int32)
    for kind_value in (WALL, BLOCK, GOAL):
        members = [_distance(rays, solid) for solid in arena if solid.kind == kind_value]
        if not members:
            continue
        nearest = members[0]
        for other in members[1:]:
            nearest = jnp.minimum(nearest, other)
        closer = nearest < best
        best = jnp.where(closer, nearest, best)
        kind = jnp.where(closer, kind_value, kind)
    seen = best <= getattr(params, "ray_length", np.inf)
    return jnp.where(seen, best, jnp.inf), jnp.where(seen, kind, NOTHING)


# --- host-side shapes for drawing ------------------------------------------------------------------------------


def box_corners(center: np.ndarray, half: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """The four corners ``[..., 4, 2]`` of boxes given by centre, half extents and forward unit vector ``[..., 2]``."""
    center, half, forward = (np.asarray(a, np.float64) for a in (center, half, forward))
    right = np.stack([forward[..., 1], -forward[..., 0]], -1)
    signs = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float64)  # (right, forward) multiples, in order
    return (center[..., None, :] + signs[:, 0, None] * half[..., None, 0:1] * right[..., None, :]
            + signs[:, 1, None] * half[..., None, 1:2] * forward[..., None, :])


def car_body(pos: np.ndarray, yaw_deg: np.ndarray) -> np.ndarray:
    """Corners ``[..., 4, 2]`` of the car's collider (``envs.car.body``) at pivot ``pos`` and ``yaw``."""
    forward = heading(yaw_deg)
    center = np.asarray(pos, np.float64) + car.BODY_CENTER_AHEAD * forward
    half = np.broadcast_to(np.asarray(car.BODY_HALF_EXTENTS, np.float64), center.shape)
    return box_corners(center, half, forward)


def heading(yaw_deg: np.ndarray) -> np.ndarray:
    """Unit vectors ``[..., 2]`` a yaw faces (clockwise degrees from +z), as ``envs.geometry.heading``."""
    rad = np.deg2rad(np.asarray(yaw_deg, np.float64))
    return np.stack([np.sin(rad), np.cos(rad)], -1)


def ray_segments(pos: np.ndarray, yaw_deg: np.ndarray, distance: np.ndarray, sensor_behind: float,
                 ray_length: float) -> tuple[np.ndarray, np.ndarray]:
    """Ray origins ``[..., 2]`` and end points ``[..., 18, 2]``: the hit point, or the ray's full length where it
    hit nothing (``distance`` inf)."""
    forward = heading(yaw_deg)
    origin = np.asarray(pos, np.float64) - sensor_behind * forward
    local = np.stack([np.asarray(car.RAYS_IN_CAR_FRAME.x, np.float64), np.asarray(car.RAYS_IN_CAR_FRAME.z,
                                                                                   np.float64)], -1)  # [18, 2]
    fx, fz = forward[..., None, 0], forward[..., None, 1]
    direction = np.stack([local[:, 0] * fz + local[:, 1] * fx, local[:, 1] * fz - local[:, 0] * fx], -1)
    length = np.where(np.isfinite(distance), distance, ray_length)
    return origin, origin[..., None, :] + direction * length[..., None]
