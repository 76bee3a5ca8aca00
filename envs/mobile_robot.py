"""MobileRobot: the Unity ML-Agents reach-goal scene (s6, 19 observations) as a pure-JAX environment.

Faithful to ``Car_Agent_s6`` in the scene "s6 - Multiple agents PPO training" (numbers in
``docs/mobile-robot.md``):

* action ``[a0, a1]`` clipped to [-1, 1]: translate ``0.2·a0`` m along the heading, then turn ``10·a1``°
  (a1 > 0 turns right). Walls are solid: the 1.0 × 1.5 m body slides along them or stops.
* observation ``[facing/180, d0/4, …, d17/4]``: the signed 3-D angle to the goal centre (positive when the goal
  is to the left) and 18 rays every 20° clockwise from straight ahead, 4 m long, from 0.01 m behind the pivot,
  stopping at the four walls or the goal sphere (a 0.44 m circle at sensor height); 1.0 when nothing is hit.
* reward −0.005 per step; +10 and the episode ends when a front ray (0°, ±20°, ±40°, ±60°) sees the goal closer
  than 2 m; −5 for every other ray hit closer than 2 m (cast before the goal ray, as Unity's loop does).
* each episode starts at the arena's car and goal spots with ±0.5 m uniform jitter, car yaw 0; robot ``slot``
  uses arena ``slot mod 8``, exactly as the scene's 8 TrainingWorlds.

The only deliberate difference: ``max_episode_steps`` (default 1000) truncates an episode; Unity's scene has no
time limit. Not modelled (``docs/mobile-robot.md``, "Deliberately not modelled"): the 0.34 m drop onto the floor
after a reset (the sensors are at the settled height) and penalties cast from the new spawn after ``EndEpisode``
in the same Unity step.

Beyond the scene (off by default): ``random_spawn`` places car and goal anywhere in the arena,
``random_heading`` starts at any yaw, ``action_mode="wheels"`` reads the action as left/right wheel speeds.
``spawn_randomness`` and ``heading_randomness`` are the same as numbers (a probability of a random spawn, a fraction
of the ±180° yaw range), so that a curriculum or a sampler can move them without a recompile. Domain randomisation
for the real robot (``envs.randomization``): ``action_noise``, ``actuation_scale``, ``observation_noise``,
``ray_dropout`` and ``sensor_range``; they change what the robot does and senses, never how the reward is counted.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import car, geometry, randomization
from envs.api import Environment
from envs.car import wall_boxes
from envs.geometry import Vec

# Walls of one arena as axis-aligned boxes (centre x, z; half extents x, z), from the scene's 9.8616 × 1 walls.
S6_WALLS = (
    ((0.0, 5.45), (4.9308, 0.5)),
    ((0.0, -5.35), (4.9308, 0.5)),
    ((5.34, 0.30), (0.5, 4.9308)),
    ((-5.52, 0.30), (0.5, 4.9308)),
)
S6_CAR_SPAWNS = ((0.89, -1.626), (0.89, 2.544), (2.19, -0.226), (-2.27, 0.994),
                 (0.89, 2.224), (-2.74, -1.406), (0.89, 1.214), (0.89, -2.116))
S6_GOAL_SPAWNS = ((-3.17, 1.394), (-1.21, -1.436), (-1.21, -0.306), (1.24, -1.436),
                  (-1.21, -2.226), (3.05, 2.514), (-0.17, -2.476), (-1.92, 1.884))
FRONT_RAYS_S6 = (0, 1, 2, 3, 15, 16, 17)
# The free floor inside the walls (x_min, z_min, x_max, z_max), for random spawns.
S6_FREE_AREA = (-5.02, -4.85, 4.84, 4.95)


@struct.dataclass
class MobileRobotParams:
    """Every constant of the scene; override with ``params.replace(...)``."""

    forward_step: float = 0.2          # m per unit a0 (Unity: Translate(0, 0, a0*0.2))
    turn_step: float = 10.0            # degrees per unit a1 (Unity: Rotate(0, a1*10, 0))
    wheel_speed: float = 0.2           # wheels mode: m per step of a wheel at |action| = 1
    wheel_base: float = 1.0            # wheels mode: m between the wheels (the body is 1.0 m wide)
    ray_length: float = 4.0
    sensor_behind_pivot: float = 0.01
    pivot_height: float = 0.203        # settled car pivot above the floor
    sensor_above_pivot: float = 0.2356
    goal_height: float = 0.68          # goal sphere centre above the floor
    goal_radius: float = 0.5
    step_reward: float = -0.005
    goal_reward: float = 10.0
    near_penalty: float = -5.0
    near_distance: float = 2.0
    spawn_jitter: float = 0.5
    min_spawn_distance: float = 2.5    # random_spawn: closest the goal may start to the car
    max_episode_steps: int = 1000
    spawn_randomness: float = 0.0      # probability that a reset places car and goal as random_spawn does
    heading_randomness: float = 0.0    # the start yaw is uniform in ±180° times this (random_heading: 1)
    action_noise: float = 0.0          # std of Gaussian noise on each (clipped) action component
    actuation_scale: float = 1.0       # the motion is this times the commanded one (wheel slip, motor strength)
    observation_noise: float = 0.0     # std of Gaussian noise on every observation (rays clipped to [0, 1])
    ray_dropout: float = 0.0           # probability that a ray reads 1.0 (nothing) in an observation
    sensor_range: float = 0.0          # rays see nothing beyond this many m in the observation (0: ray_length)
    action_mode: str = struct.field(pytree_node=False, default="unity")
    random_spawn: bool = struct.field(pytree_node=False, default=False)
    random_heading: bool = struct.field(pytree_node=False, default=False)
    walls: tuple = struct.field(pytree_node=False, default=S6_WALLS)
    car_spawns: tuple = struct.field(pytree_node=False, default=S6_CAR_SPAWNS)
    goal_spawns: tuple = struct.field(pytree_node=False, default=S6_GOAL_SPAWNS)
    free_area: tuple = struct.field(pytree_node=False, default=S6_FREE_AREA)
    front_rays: tuple = struct.field(pytree_node=False, default=FRONT_RAYS_S6)

    @property
    def goal_ray_radius(self) -> jnp.ndarray:
        """Radius of the goal sphere's cross-section at the sensors' height."""
        dy = self.goal_height - (self.pivot_height + self.sensor_above_pivot)
        return jnp.sqrt(jnp.maximum(self.goal_radius**2 - dy**2, 0.0))


@struct.dataclass
class MobileRobotState:
    pos: jnp.ndarray    # [2] car pivot (x, z), arena-relative
    yaw: jnp.ndarray    # car yaw in degrees, clockwise from +z
    goal: jnp.ndarray   # [2] goal centre
    slot: jnp.ndarray   # batch slot; the arena is slot mod 8
    t: jnp.ndarray      # decisions taken in this episode


def sample_free_point(key: chex.PRNGKey, free_area: tuple, margin: float) -> jnp.ndarray:
    lo = jnp.asarray(free_area[:2], jnp.float32) + margin
    hi = jnp.asarray(free_area[2:], jnp.float32) - margin
    return jax.random.uniform(key, (2,), minval=lo, maxval=hi)


def sample_random_spawn(key: chex.PRNGKey, params: MobileRobotParams,
                        tries: int = 16) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Car and goal anywhere on the floor, at least ``min_spawn_distance`` apart (first valid of ``tries`` draws)."""
    key_car, key_goal = jax.random.split(key)
    cars = jax.vmap(lambda k: sample_free_point(k, params.free_area, 1.1))(jax.random.split(key_car, tries))
    goals = jax.vmap(lambda k: sample_free_point(k, params.free_area, 0.6))(jax.random.split(key_goal, tries))
    ok = jnp.linalg.norm(cars - goals, axis=-1) >= params.min_spawn_distance
    pick = jnp.argmax(ok)
    return cars[pick], goals[pick]


class MobileRobot(Environment[MobileRobotState, MobileRobotParams]):
    """The 19-observation reach-goal scene; see the module docstring."""

    observation_size = 1 + car.NUM_RAYS
    action_size = 2
    step_uses_key = False

    @property
    def default_params(self) -> MobileRobotParams:
        return MobileRobotParams()

    def step_needs_key(self, params: MobileRobotParams) -> bool:
        """Only the noise of domain randomisation draws in a step."""
        return randomization.draws_noise(params)

    def reset_env(self, key, params, slot, prev_state):
        draws = key  # the reset's own key: the extra streams below derive from it (envs.randomization.stream)
        if params.random_spawn:
            key, key_random = jax.random.split(key)
        # One draw for all of the reset's randomness: arena, car jitter (x, z), goal jitter (x, z)[, heading].
        u = jax.random.uniform(key, (6 if params.random_heading else 5,))
        num_arenas = len(params.car_spawns)
        random_arena = jnp.minimum(jnp.floor(u[0] * num_arenas), num_arenas - 1).astype(jnp.int32)
        arena = jnp.where(slot < 0, random_arena, slot % num_arenas)
        jitter = params.spawn_jitter * (2.0 * u[1:5] - 1.0)  # car (x, z), goal (x, z)
        # Unity translates the car in its pre-reset frame, then sets yaw 0; the goal's yaw is always 0.
        prev_yaw = jnp.float32(0.0) if prev_state is None else prev_state.yaw
        car_offset = geometry.rotate(Vec(jitter[0], jitter[1]), geometry.heading(prev_yaw))
        pos = jnp.asarray(params.car_spawns, jnp.float32)[arena] + jnp.stack(car_offset)
        goal = jnp.asarray(params.goal_spawns, jnp.float32)[arena] + jitter[2:]
        if params.random_spawn:
            pos, goal = sample_random_spawn(key_random, params)
        elif not randomization.is_off(params.spawn_randomness, 0.0):
            key_coin, key_spawn = jax.random.split(randomization.stream(draws, "spawn"))
            random_pos, random_goal = sample_random_spawn(key_spawn, params)
            use = jax.random.uniform(key_coin) < params.spawn_randomness
            pos, goal = jnp.where(use, random_pos, pos), jnp.where(use, random_goal, goal)
        yaw = (360.0 * u[5] - 180.0) if params.random_heading else jnp.float32(0.0)
        if not params.random_heading and not randomization.is_off(params.heading_randomness, 0.0):
            turn = jax.random.uniform(randomization.stream(draws, "heading"), minval=-180.0, maxval=180.0)
            yaw = jnp.where(params.heading_randomness > 0.0, params.heading_randomness * turn, yaw)
        state = MobileRobotState(pos=pos, yaw=yaw, goal=goal, slot=jnp.where(slot < 0, arena, slot).astype(jnp.int32),
                                 t=jnp.int32(0))
        distances, _ = self._rays(state, params)
        return self._observation(state, distances, params, randomization.stream(draws, "reset")), state

    def step_env(self, key, state, action, params):
        chex.assert_shape(action, (self.action_size,))
        action = randomization.noisy_action(key, action, params)
        forward_step, turn_step, wheel_speed = randomization.actuation(params)
        heading = car.stored_heading(state.yaw)
        delta, dyaw = car.motion(state.yaw, action, params.action_mode, forward_step, turn_step, wheel_speed,
                                 params.wheel_base, heading)
        pos, yaw, forward = car.move(car.as_vec(state.pos), state.yaw, delta, dyaw, wall_boxes(params.walls), heading)
        state = state.replace(pos=jnp.stack(pos), yaw=yaw, t=state.t + 1)
        distances, hit_goal = self._rays(state, params, forward)
        reward, terminated = self._reward(distances, hit_goal, params)
        truncated = (state.t >= params.max_episode_steps) & ~terminated
        return self._observation(state, distances, params, key, forward), state, reward, terminated, truncated

    def _rays(self, state: MobileRobotState, params: MobileRobotParams,
              forward: Vec | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Each sensor's distance (inf beyond ``ray_length``) and whether what it sees first is the goal.

        ``forward`` is the heading when the caller has it (``car.move`` returns it), else it is computed from the yaw.
        """
        forward = geometry.heading(state.yaw) if forward is None else forward
        rays = car.sensor_rays(car.as_vec(state.pos), forward, params.sensor_behind_pivot)
        walls = car.nearest_wall(rays, wall_boxes(params.walls))
        goal = geometry.ray_circle_distance(rays, car.as_vec(state.goal), params.goal_ray_radius)
        distances, hit_goal = car.nearest_hit(walls, goal)
        return jnp.where(distances <= params.ray_length, distances, jnp.inf), hit_goal

    def _observation(self, state, distances, params, key=None, forward: Vec | None = None) -> jnp.ndarray:
        """``[facing/180, d/ray_length…]`` as the robot senses it (``key`` draws the observation noise, if any)."""
        forward = geometry.heading(state.yaw) if forward is None else forward
        facing = car.facing_angle_deg(car.as_vec(state.pos), forward, car.as_vec(state.goal),
                                      params.goal_height - params.pivot_height, goal_first=True)
        distances = randomization.sensed_distances(distances, params)
        rays = jnp.where(jnp.isfinite(distances), distances / params.ray_length, 1.0)
        obs = jnp.concatenate([(facing / 180.0)[None], rays]).astype(jnp.float32)
        return randomization.noisy_observation(key, obs, 1, params)

    def _reward(self, distances, hit_goal, params) -> tuple[jnp.ndarray, jnp.ndarray]:
        close = distances < params.near_distance
        reached = close & hit_goal & np.isin(np.arange(car.NUM_RAYS), params.front_rays)
        terminated, penalties = car.episode_outcome(reached, close & ~reached)
        reward = params.step_reward + params.goal_reward * terminated + params.near_penalty * penalties
        return reward.astype(jnp.float32), terminated
