"""Watch the robot: record episodes with a jitted rollout and draw them (GIF, MP4, PNG, an HTML viewer).

``scene`` says what stands in each robot's arena (walls, blocks, the goal), taken from the environment's own
params and state, and which of them each sensor ray hits; ``record`` plays a policy's first episodes and keeps every
step; ``draw`` turns a recording into frames with Pillow; ``media`` writes GIF/MP4/PNG; ``viewer`` writes the
self-contained HTML viewer; ``replay`` draws a few episodes at every training checkpoint; ``cli`` is
``rlrobot-render``.
"""
