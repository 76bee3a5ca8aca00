"""A NumPy port of the MobileRobot step, vectorised over all robots: the env benchmark's baseline and the stand-in's
physics.

This is what one would write without JAX: the same scene as :class:`envs.mobile_robot.MobileRobot` (default
``unity`` action mode, spawns at the scene's arena spots) stepped for ``N`` robots at once with float32 NumPy arrays
(``[N]`` per robot, ``[N, 18]`` per ray, a small loop over the four walls), auto-resetting finished robots as
:meth:`envs.api.Environment.step` does. ``benchmarks.numpy_throughput`` times it against the JAX env and
``tests/test_numpy_robot.py`` checks that it takes the same transitions. The Unity-protocol stand-in player
(``envs/standin``) serves it without loading JAX's compiler; the trainer never uses it.

Every constant comes from :class:`envs.mobile_robot.MobileRobotParams` and :mod:`envs.car`, so the two cannot drift
apart. Reset randomness is NumPy's own (``seed``), so resets follow the same distribution as the JAX env but not
the same draws.
"""
from __future__ import annotations

import numpy as np

from envs import car
from envs.geometry import PUSH_MARGIN
from envs.mobile_robot import MobileRobotParams

F32 = np.float32
_TINY = F32(1e-12)
_DEG = F32(np.pi / 180.0)


def _f32(value) -> np.float32:
    return F32(np.asarray(value))


def wrap_degrees(angle: np.ndarray) -> np.ndarray:
    return np.mod(angle + F32(180.0), F32(360.0)) - F32(180.0)


def heading(yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vector (x, z) a yaw (degrees, clockwise from +z) faces."""
    rad = np.asarray(yaw, F32) * _DEG
    return np.sin(rad), np.cos(rad)


def _safe_inverse(d: np.ndarray) -> np.ndarray:
    return F32(1.0) / np.where(np.abs(d) < _TINY, np.where(d < 0, -_TINY, _TINY), d)


class NumpyMobileRobot:
    """``num_envs`` MobileRobot robots (robot ``i`` in arena ``i mod 8``) as NumPy arrays.

    State: ``pos [N, 2]``, ``yaw [N]`` (degrees), ``goal [N, 2]``, ``slot [N]``, ``t [N]``, as in
    :class:`envs.mobile_robot.MobileRobotState`. ``reset()`` returns ``obs [N, 19]``; ``step(actions [N, 2])`` returns
    ``(obs, reward, terminated, truncated, final_obs)`` where robots whose episode ended are already reset in ``obs``
    and ``final_obs`` holds their last observation (the same array as ``obs`` when no robot finished).
    """

    observation_size = 1 + car.NUM_RAYS
    action_size = 2

    def __init__(self, num_envs: int, seed: int = 0, params: MobileRobotParams | None = None):
        params = MobileRobotParams() if params is None else params
        if params.action_mode != "unity" or params.random_spawn or params.random_heading:
            raise NotImplementedError("the NumPy port covers the scene as is: action_mode='unity', arena spawns")
        self.num_envs = num_envs
        self.params = params
        self.rng = np.random.default_rng(seed)
        self.forward_step = _f32(params.forward_step)
        self.turn_step = _f32(params.turn_step)
        self.ray_length = _f32(params.ray_length)
        self.sensor_behind = _f32(params.sensor_behind_pivot)
        # As the JAX env computes them: a Python-float difference (and its square), the radius in float32.
        height = params.goal_height - params.pivot_height
        self.height_sq = F32(height**2)
        self.goal_radius_sq = F32(_f32(params.goal_ray_radius) ** 2)
        self.step_reward = _f32(params.step_reward)
        self.goal_reward = _f32(params.goal_reward)
        self.near_penalty = _f32(params.near_penalty)
        self.near_distance = _f32(params.near_distance)
        self.spawn_jitter = _f32(params.spawn_jitter)
        self.max_episode_steps = int(params.max_episode_steps)
        self.walls = [tuple(F32(v) for v in (*center, *half)) for center, half in params.walls]  # (cx, cz, hx, hz)
        self.car_spawns = np.asarray(params.car_spawns, F32)
        self.goal_spawns = np.asarray(params.goal_spawns, F32)
        self.front = np.isin(np.arange(car.NUM_RAYS), params.front_rays)
        self.ray_index = np.arange(car.NUM_RAYS)
        self.local_x, self.local_z = (np.asarray(c, F32) for c in car.RAYS_IN_CAR_FRAME)
        self.body_half = tuple(F32(h) for h in car.BODY_HALF_EXTENTS)
        self.body_ahead = F32(car.BODY_CENTER_AHEAD)
        self.slot = np.arange(num_envs, dtype=np.int32)
        self.pos = np.zeros((num_envs, 2), F32)
        self.yaw = np.zeros(num_envs, F32)
        self.goal = np.zeros((num_envs, 2), F32)
        self.t = np.zeros(num_envs, np.int32)

    # --- the scene, on arrays -------------------------------------------------------------------------------------

    def body_is_free(self, x: np.ndarray, z: np.ndarray, fx: np.ndarray, fz: np.ndarray) -> np.ndarray:
        """Whether the car body with its pivot at (x, z), facing (fx, fz), overlaps no wall (separating axes)."""
        ax, az = self.body_half
        cx, cz = x + self.body_ahead * fx, z + self.body_ahead * fz
        afx, afz = np.abs(fx), np.abs(fz)
        hit = np.zeros(np.broadcast(cx, cz).shape, bool)
        for wx, wz, bx, bz in self.walls:
            dx, dz = cx - wx, cz - wz
            hit |= ((np.abs(dx) < bx + ax * afz + az * afx) & (np.abs(dz) < bz + ax * afx + az * afz)
                    & (np.abs(dx * fz - dz * fx) < ax + bx * afz + bz * afx)
                    & (np.abs(dx * fx + dz * fz) < az + bx * afx + bz * afz))
        return ~hit

    def move(self, pos: np.ndarray, yaw: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Translate ``0.2·a0`` along the heading (sliding along a wall: x only, then z only), then turn ``10·a1``°
        clockwise unless the turned body would hit a wall."""
        a = np.clip(np.asarray(actions, F32), F32(-1.0), F32(1.0))
        fx, fz = heading(yaw)
        distance = self.forward_step * a[:, 0]
        x, z = pos[:, 0], pos[:, 1]
        full_x, full_z = x + distance * fx, z + distance * fz
        # The three candidates (full move, x only, z only) as one [3, N] test.
        free = self.body_is_free(np.stack([full_x, full_x, x]), np.stack([full_z, z, full_z]), fx, fz)
        use_full, use_x, use_z = free
        new_x = np.where(use_full | use_x, full_x, x)
        new_z = np.where(use_full | (~use_x & use_z), full_z, z)
        turned = wrap_degrees(yaw + self.turn_step * a[:, 1])
        tx, tz = heading(turned)
        px, pz = new_x, new_z
        for wall in self.walls:  # the turn always happens; the body is pushed out of each wall in turn
            push_x, push_z = self.push_out(px, pz, tx, tz, wall)
            px, pz = px + push_x, pz + push_z
        ok = self.body_is_free(px, pz, tx, tz)
        return np.stack([np.where(ok, px, new_x), np.where(ok, pz, new_z)], axis=1), np.where(ok, turned, yaw)

    def push_out(self, x: np.ndarray, z: np.ndarray, fx: np.ndarray, fz: np.ndarray,
                 wall: tuple) -> tuple[np.ndarray, np.ndarray]:
        """The shortest move taking the car body out of an axis-aligned wall (zero when apart): the axis of least
        overlap among the four face normals (``envs.geometry.push_out``)."""
        ax, az = self.body_half
        wx, wz, bx, bz = wall
        dx, dz = x + self.body_ahead * fx - wx, z + self.body_ahead * fz - wz
        axes = ((fz, -fx), (fx, fz), (F32(1.0), F32(0.0)), (F32(0.0), F32(1.0)))
        along, overlaps = [], []
        for nx, nz in axes:
            d = dx * nx + dz * nz
            ra = ax * np.abs(fz * nx - fx * nz) + az * np.abs(fx * nx + fz * nz)
            along.append(d)
            overlaps.append(ra + bx * np.abs(nx) + bz * np.abs(nz) - np.abs(d))
        overlaps_arr = np.stack(overlaps)
        best = np.argmin(overlaps_arr, axis=0)
        depth = np.min(overlaps_arr, axis=0) + PUSH_MARGIN
        inside = np.all(overlaps_arr > 0, axis=0)
        push_x = np.zeros_like(dx)
        push_z = np.zeros_like(dz)
        for i, (nx, nz) in enumerate(axes):
            amount = np.where(inside & (best == i), np.where(along[i] >= 0, depth, -depth), F32(0.0))
            push_x, push_z = push_x + amount * nx, push_z + amount * nz
        return push_x.astype(F32), push_z.astype(F32)

    def rays(self, pos: np.ndarray, yaw: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each robot's 18 sensor distances ``[N, 18]`` (inf beyond the ray length) and whether each sees the goal."""
        fx, fz = heading(yaw)
        ox = (pos[:, 0] - self.sensor_behind * fx)[:, None]
        oz = (pos[:, 1] - self.sensor_behind * fz)[:, None]
        fx, fz = fx[:, None], fz[:, None]
        dx = self.local_x * fz + self.local_z * fx
        dz = self.local_z * fz - self.local_x * fx
        inv_x, inv_z = _safe_inverse(dx), _safe_inverse(dz)
        walls = np.full(dx.shape, np.inf, F32)
        for wx, wz, hx, hz in self.walls:  # the slab test; a ray starting inside a box does not see it
            rel_x, rel_z = ox - wx, oz - wz
            tx1, tx2 = (-hx - rel_x) * inv_x, (hx - rel_x) * inv_x
            tz1, tz2 = (-hz - rel_z) * inv_z, (hz - rel_z) * inv_z
            t_near = np.maximum(np.minimum(tx1, tx2), np.minimum(tz1, tz2))
            t_far = np.minimum(np.maximum(tx1, tx2), np.maximum(tz1, tz2))
            np.minimum(walls, np.where((t_near <= t_far) & (t_near > 0.0), t_near, F32(np.inf)), out=walls)
        ocx, ocz = ox - goal[:, 0:1], oz - goal[:, 1:2]
        b = ocx * dx + ocz * dz
        c = (ocx * ocx + ocz * ocz) - self.goal_radius_sq
        disc = b * b - c
        t = -b - np.sqrt(np.maximum(disc, F32(0.0)))
        to_goal = np.where((disc >= 0.0) & (c > 0.0) & (t > 0.0), t, F32(np.inf))
        distances = np.minimum(walls, to_goal)  # on a tie the wall wins
        return np.where(distances <= self.ray_length, distances, F32(np.inf)), to_goal < walls

    def observation(self, pos: np.ndarray, yaw: np.ndarray, goal: np.ndarray, distances: np.ndarray) -> np.ndarray:
        """``[facing/180, d0/4, …, d17/4]``: the signed 3-D angle to the goal centre (+ = goal to the left)."""
        fx, fz = heading(yaw)
        tx, tz = goal[:, 0] - pos[:, 0], goal[:, 1] - pos[:, 1]
        cross = tz * fx - tx * fz
        angle = np.rad2deg(np.arctan2(np.sqrt(cross**2 + self.height_sq), tx * fx + tz * fz))
        obs = np.empty((pos.shape[0], self.observation_size), F32)
        obs[:, 0] = np.where(cross >= 0.0, angle, -angle) / F32(180.0)
        obs[:, 1:] = np.where(np.isfinite(distances), distances / self.ray_length, F32(1.0))
        return obs

    def reward(self, distances: np.ndarray, hit_goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unity's loop over the rays: the first front ray seeing the goal closer than 2 m ends the episode (+10);
        every other close ray before it costs −5; −0.005 per step."""
        close = distances < self.near_distance
        reached = close & hit_goal & self.front
        terminated = reached.any(axis=1)
        first = np.where(terminated, np.argmax(reached, axis=1), car.NUM_RAYS)
        penalties = np.count_nonzero(close & ~reached & (self.ray_index < first[:, None]), axis=1)
        reward = (self.step_reward + self.goal_reward * terminated.astype(F32)
                  + self.near_penalty * penalties.astype(F32))
        return reward, terminated

    def transition(self, pos, yaw, goal, t, actions):
        """One step without auto-reset (``step_env``): ``obs, pos, yaw, t, reward, terminated, truncated``."""
        pos, yaw = self.move(pos, yaw, actions)
        t = t + 1
        distances, hit_goal = self.rays(pos, yaw, goal)
        reward, terminated = self.reward(distances, hit_goal)
        truncated = (t >= self.max_episode_steps) & ~terminated
        return self.observation(pos, yaw, goal, distances), pos, yaw, t, reward, terminated, truncated

    def _reset_rows(self, rows: np.ndarray) -> np.ndarray:
        """Respawn the robots ``rows`` at their arena's spots with ±0.5 m jitter (the car's jitter in its pre-reset
        frame), yaw 0; returns their observations."""
        u = self.rng.random((rows.size, 4), dtype=F32)
        jitter = self.spawn_jitter * (F32(2.0) * u - F32(1.0))
        arena = self.slot[rows] % len(self.car_spawns)
        fx, fz = heading(self.yaw[rows])
        offset = np.stack([jitter[:, 0] * fz + jitter[:, 1] * fx, jitter[:, 1] * fz - jitter[:, 0] * fx], axis=1)
        pos, goal = self.car_spawns[arena] + offset, self.goal_spawns[arena] + jitter[:, 2:]
        yaw = np.zeros(rows.size, F32)
        self.pos[rows], self.goal[rows], self.yaw[rows], self.t[rows] = pos, goal, yaw, 0
        return self.observation(pos, yaw, goal, self.rays(pos, yaw, goal)[0])

    # --- the batch API ----------------------------------------------------------------------------------------------

    def with_params(self, params: MobileRobotParams) -> NumpyMobileRobot:
        """The same robots, where they are, under other constants (from the next step)."""
        robots = NumpyMobileRobot(self.num_envs, params=params)
        robots.rng = self.rng
        robots.pos, robots.yaw, robots.goal, robots.t = self.pos, self.yaw, self.goal, self.t
        return robots

    def reset(self) -> np.ndarray:
        self.yaw[:] = 0.0
        return self._reset_rows(np.arange(self.num_envs))

    def step(self, actions: np.ndarray):
        obs, self.pos, self.yaw, self.t, reward, terminated, truncated = self.transition(
            self.pos, self.yaw, self.goal, self.t, actions)
        final_obs = obs
        done = np.flatnonzero(terminated | truncated)
        if done.size:
            obs = obs.copy()
            obs[done] = self._reset_rows(done)
        return obs, reward, terminated, truncated, final_obs
