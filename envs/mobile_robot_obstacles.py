"""MobileRobotObstacles: the Unity "s7 - avoid blocks" scene (22 observations) as a pure-JAX environment.

Faithful to ``Car_Agent_s7`` (``docs/mobile-robot.md``, the obstacle course): the same car and sensors as
MobileRobot, 0.4 m per unit a0, a rotated block between car and goal, and a box-shaped goal.

* observation ``[stage one-hot (3), facing, d0/4 … d17/4]``. Stage 3: the goal is more than 40° off the
  heading; stage 1: within 40° and a ray from the pivot to the goal centre reaches it; stage 2: within 40° but
  something is in the way — the block, or the car's own ``head`` capsule, which that ray crosses whenever the
  goal is within about ±29.5° of straight ahead (a quirk of the scene, kept). ``facing`` is the signed 3-D angle
  in raw degrees, positive to the right, reported only in stage 1 (0 otherwise), as the scene does.
* reward −0.005 × (stage before the move); +100 and the episode ends when a front ray (0°, ±20°, ±40°) sees the
  goal within 2 m; −0.5 for every other ray hit closer than 1 m; Unity's ``MaxStep`` 2500 truncates.
* fixed starts per arena (the scene's randomisation is commented out); robot ``slot`` uses arena ``slot mod 8``.
* domain randomisation for the real robot, off by default, as in MobileRobot (``envs.randomization``):
  ``action_noise``, ``actuation_scale``, ``observation_noise`` and ``ray_dropout`` (on the rays, and on the facing
  angle in s6's units of 180° while stage 1 reports it; the stage is the scene's own), ``sensor_range``. They change
  what the robot does and senses, never the reward or the stage.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import car, geometry, randomization
from envs.api import Environment
from envs.car import wall_boxes
from envs.geometry import Box, Vec

# s7 walls (thickness 0.543): centre (x, z), half extents (x, z).
S7_WALLS = (
    ((5.34, 0.064), (0.2715, 4.931)),
    ((-5.34, 0.064), (0.2715, 4.931)),
    ((-0.06, -5.016), (5.547, 0.2715)),
    ((-0.06, 5.014), (5.547, 0.2715)),
)
S7_BLOCK_HALF = (1.92, 0.3)
S7_GOAL_HALF = (0.655, 0.3)
# Per arena: car (x, z), block centre (x, z), block yaw (deg), goal centre (x, z).
S7_ARENAS = (
    ((2.72, -2.506), (-0.09, -0.056), 0.0, (-1.45, 2.604)),
    ((1.44, -3.006), (-0.09, 0.67), 30.0, (-0.02, 3.294)),
    ((-2.32, -2.856), (-0.09, 0.304), 60.0, (1.63, 2.974)),
    ((1.85, -2.546), (-0.30, 0.674), 90.0, (-2.96, 3.254)),
    ((-2.56, -1.936), (-0.09, 0.354), 0.0, (-1.45, 3.224)),
    ((0.89, -1.846), (-0.09, 0.67), -30.0, (-2.35, 2.784)),
    ((-2.27, -2.886), (-0.92, 0.974), -60.0, (2.21, 3.254)),
    ((-2.86, -2.926), (-0.09, 0.254), 91.0, (2.28, 3.014)),
)
FRONT_RAYS_S7 = (0, 1, 2, 16, 17)


@struct.dataclass
class MobileRobotObstaclesParams:
    """Every constant of the s7 scene; override with ``params.replace(...)``."""

    forward_step: float = 0.4
    turn_step: float = 10.0
    wheel_speed: float = 0.4
    wheel_base: float = 1.0
    ray_length: float = 4.0
    sensor_behind_pivot: float = 0.01
    pivot_height: float = 0.203
    goal_height: float = 0.625         # centre of the 1.25 m high goal box
    stage_angle: float = 40.0
    head_occlusion_angle: float = 29.5  # the pivot→goal ray crosses the car's head capsule inside this bearing
    stage_step_cost: float = -0.005
    goal_reward: float = 100.0
    goal_distance: float = 2.0
    near_penalty: float = -0.5
    near_distance: float = 1.0
    max_episode_steps: int = 2500      # Unity's MaxStep in this scene
    action_noise: float = 0.0          # domain randomisation, off by default (envs.mobile_robot has the meanings)
    actuation_scale: float = 1.0
    observation_noise: float = 0.0
    ray_dropout: float = 0.0
    sensor_range: float = 0.0
    action_mode: str = struct.field(pytree_node=False, default="unity")
    walls: tuple = struct.field(pytree_node=False, default=S7_WALLS)
    arenas: tuple = struct.field(pytree_node=False, default=S7_ARENAS)
    block_half: tuple = struct.field(pytree_node=False, default=S7_BLOCK_HALF)
    goal_half: tuple = struct.field(pytree_node=False, default=S7_GOAL_HALF)
    # Blocks standing in every arena besides its own: ((centre x, z), (half x, z), yaw deg) each (the s8 test scene).
    extra_blocks: tuple = struct.field(pytree_node=False, default=())
    front_rays: tuple = struct.field(pytree_node=False, default=FRONT_RAYS_S7)


@struct.dataclass
class MobileRobotObstaclesState:
    pos: jnp.ndarray
    yaw: jnp.ndarray
    slot: jnp.ndarray
    t: jnp.ndarray
    stage: jnp.ndarray  # stage (1, 2, 3) at the last observation; the next step's cost depends on it


def arena_table(params: MobileRobotObstaclesParams, column: int) -> jnp.ndarray:
    return jnp.asarray([a[column] for a in params.arenas], jnp.float32)


class MobileRobotObstacles(Environment[MobileRobotObstaclesState, MobileRobotObstaclesParams]):
    """The 22-observation avoid-the-block scene; see the module docstring."""

    observation_size = 3 + 1 + car.NUM_RAYS
    action_size = 2
    step_uses_key = False

    @property
    def default_params(self) -> MobileRobotObstaclesParams:
        return MobileRobotObstaclesParams()

    def step_needs_key(self, params: MobileRobotObstaclesParams) -> bool:
        """Only the noise of domain randomisation draws in a step."""
        return randomization.draws_noise(params)

    def solids(self, arena, params) -> tuple[tuple[Box, ...], tuple[Box, ...], Box]:
        """One arena's solid boxes: the walls, the blocks (the arena's own first) and the goal box."""
        def column(i: int) -> jnp.ndarray:
            return arena_table(params, i)[arena]

        block = Box(car.as_vec(column(1)), params.block_half, geometry.heading(column(2)))
        extra = tuple(Box(Vec(*center), half, geometry.heading(yaw)) for center, half, yaw in params.extra_blocks)
        return wall_boxes(params.walls), (block, *extra), Box(car.as_vec(column(3)), params.goal_half)

    def _scene(self, arena, params) -> tuple[Box, ...]:
        """Solid boxes of one arena as the car collides with them: the walls, the blocks and the goal box last."""
        walls, blocks, goal = self.solids(arena, params)
        return walls + blocks + (goal,)

    def reset_env(self, key, params, slot, prev_state):
        arena = jnp.where(slot < 0, jax.random.randint(key, (), 0, len(params.arenas)), slot % len(params.arenas))
        state = MobileRobotObstaclesState(pos=arena_table(params, 0)[arena], yaw=jnp.float32(0.0),
                                          slot=jnp.where(slot < 0, arena, slot).astype(jnp.int32), t=jnp.int32(0),
                                          stage=jnp.int32(0))
        obs, stage, _, _ = self._observe(state, params, randomization.stream(key, "reset"))
        return obs, state.replace(stage=stage)

    def step_env(self, key, state, action, params):
        arena = state.slot % len(params.arenas)
        action = randomization.noisy_action(key, action, params)
        forward_step, turn_step, wheel_speed = randomization.actuation(params)
        heading = car.stored_heading(state.yaw)
        delta, dyaw = car.motion(state.yaw, action, params.action_mode, forward_step, turn_step, wheel_speed,
                                 params.wheel_base, heading)
        pos, yaw, forward = car.move(car.as_vec(state.pos), state.yaw, delta, dyaw, self._scene(arena, params), heading)
        moved = state.replace(pos=jnp.stack(pos), yaw=yaw, t=state.t + 1)
        obs, stage, distances, hit_goal = self._observe(moved, params, key, forward)
        front = np.isin(np.arange(car.NUM_RAYS), params.front_rays)
        reached = (distances <= params.goal_distance) & hit_goal & front
        terminated, penalties = car.episode_outcome(reached, (distances < params.near_distance) & ~reached)
        # Unity adds −0.005·new and −0.005·(old − new): the cost of a step is set by the stage before it.
        reward = (params.stage_step_cost * state.stage + params.goal_reward * terminated
                  + params.near_penalty * penalties).astype(jnp.float32)
        truncated = (moved.t >= params.max_episode_steps) & ~terminated
        return obs, moved.replace(stage=stage), reward, terminated, truncated

    def _observe(self, state, params, key=None, forward: Vec | None = None):
        """The observation as the robot senses it (``key`` draws its noise, if any), the stage, and the scene's own
        ray distances and goal hits, which the reward uses. ``forward``: the heading, where the caller has it."""
        walls, blocks, goal = self.solids(state.slot % len(params.arenas), params)
        pos = car.as_vec(state.pos)
        forward = geometry.heading(state.yaw) if forward is None else forward
        rays = car.sensor_rays(pos, forward, params.sensor_behind_pivot)
        obstacles = functools.reduce(geometry.smaller, [geometry.ray_box_distance(rays, block) for block in blocks],
                                     car.nearest_wall(rays, walls))
        distances, hit_goal = car.nearest_hit(obstacles, geometry.ray_box_distance(rays, goal))
        distances = jnp.where(distances <= params.ray_length, distances, jnp.inf)
        facing = car.facing_angle_deg(pos, forward, goal.center, params.goal_height - params.pivot_height,
                                      goal_first=False)
        stage = self._stage(pos, forward, facing, blocks, goal, params)
        one_hot = jax.nn.one_hot(stage - 1, 3)
        sensed = randomization.sensed_distances(distances, params)
        readings = jnp.where(jnp.isfinite(sensed), sensed / params.ray_length, 1.0)
        facing, readings = self._noisy(key, facing, readings, params)
        obs = jnp.concatenate([one_hot, jnp.where(stage == 1, facing, 0.0)[None], readings]).astype(jnp.float32)
        return obs, stage, distances, hit_goal

    @staticmethod
    def _noisy(key, facing, readings, params):
        """Observation noise and ray dropout exactly as MobileRobot draws them, on its view ``[facing/180, rays]``
        (none without a ``key``: the scene's own observation, as renderers and tests ask for it)."""
        if key is None or (randomization.is_off(params.observation_noise, 0.0)
                           and randomization.is_off(params.ray_dropout, 0.0)):
            return facing, readings
        view = randomization.noisy_observation(key, jnp.concatenate([(facing / 180.0)[None], readings]), 1, params)
        return view[0] * 180.0, view[1:]

    def _stage(self, pos: Vec, forward: Vec, facing, blocks: tuple[Box, ...], goal: Box, params) -> jnp.ndarray:
        to_goal = Vec(goal.center.x - pos.x, goal.center.z - pos.z)
        length = geometry.larger(jnp.sqrt(geometry.dot(to_goal, to_goal)), 1e-6)
        pivot_ray = geometry.Ray(pos, Vec(to_goal.x / length, to_goal.z / length))
        to_block = functools.reduce(geometry.smaller, [geometry.ray_box_distance(pivot_ray, block) for block in blocks])
        to_goal_box = geometry.ray_box_distance(pivot_ray, goal)
        bearing = jnp.rad2deg(geometry.atan2(geometry.dot(to_goal, geometry.right_of(forward)),
                                             geometry.dot(to_goal, forward)))
        blocked = (to_block < to_goal_box) | (jnp.abs(bearing) < params.head_occlusion_angle)
        in_view = jnp.abs(facing) <= params.stage_angle
        return jnp.where(in_view, jnp.where(blocked, 2, 1), 3).astype(jnp.int32)
