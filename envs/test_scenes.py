"""The course's test scenes (s8, ``Car_Agent_s8``): one arena each, where a trained s7 policy is tried out.

``Car_Agent_s8`` keeps s7's 22 observations and rewards but moves **0.2 m** per unit a0 (the policy was trained at
0.4 m), so these are :class:`~envs.mobile_robot_obstacles.MobileRobotObstacles` with other constants
(``docs/mobile-robot.md``, "The test scenes"):

* ``MobileRobotTest2020``: one 4.561 × 0.595 m block at (0, 0.65), the 1.462 × 0.555 m goal box at (0, 3.15), the car
  at (0.93, −2.61);
* ``MobileRobotTest2021``: two 3.25 × 0.595 m blocks at (−2.41, 0.65) and (1.77, −0.71), the goal box at (1.71, 3.1),
  the car at (0.63, −3.47).

Not recorded, so taken from s7 (and said so in the docs): the walls' positions, the 2021 goal box's size (the 2020
one's) and a time limit (Unity's test scene has none; 2500 decisions, s7's ``MaxStep``, truncates here).
"""
from __future__ import annotations

from envs.mobile_robot_obstacles import MobileRobotObstacles, MobileRobotObstaclesParams

S8_FORWARD_STEP = 0.2
S8_GOAL_HALF = (1.462 / 2, 0.555 / 2)


class MobileRobotTest2020(MobileRobotObstacles):
    """The 2020 test scene: one block between the car and the goal."""

    @property
    def default_params(self) -> MobileRobotObstaclesParams:
        return MobileRobotObstaclesParams(
            forward_step=S8_FORWARD_STEP, wheel_speed=S8_FORWARD_STEP, block_half=(4.561 / 2, 0.595 / 2),
            goal_half=S8_GOAL_HALF, arenas=(((0.93, -2.61), (0.0, 0.65), 0.0, (0.0, 3.15)),))


class MobileRobotTest2021(MobileRobotObstacles):
    """The 2021 test scene: two staggered blocks, a path that weaves between them."""

    @property
    def default_params(self) -> MobileRobotObstaclesParams:
        block_half = (3.25 / 2, 0.595 / 2)
        return MobileRobotObstaclesParams(
            forward_step=S8_FORWARD_STEP, wheel_speed=S8_FORWARD_STEP, block_half=block_half, goal_half=S8_GOAL_HALF,
            arenas=(((0.63, -3.47), (-2.41, 0.65), 0.0, (1.71, 3.1)),),
            extra_blocks=(((1.77, -0.71), block_half, 0.0),))
