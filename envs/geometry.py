"""Planar geometry for the robot scenes: rays against boxes and circles, box-vs-box overlap.

Points are (x, z) in Unity's ground plane (x right, z forward); a yaw is in degrees, clockwise
seen from above (Unity's convention), so yaw ψ faces ``(sin ψ, cos ψ)``. Everything broadcasts
over leading axes and is free of Python control flow on values, so it jits and vmaps.
"""
from __future__ import annotations

import jax.numpy as jnp

NO_HIT = jnp.inf
_TINY = 1e-12


def heading(yaw_deg: jnp.ndarray) -> jnp.ndarray:
    """Unit vector a yaw faces: ``[..., 2]``."""
    rad = jnp.deg2rad(yaw_deg)
    return jnp.stack([jnp.sin(rad), jnp.cos(rad)], axis=-1)


def right_of(forward: jnp.ndarray) -> jnp.ndarray:
    """The unit vector 90° clockwise of ``forward`` (the robot's right)."""
    return jnp.stack([forward[..., 1], -forward[..., 0]], axis=-1)


def rotate(vectors: jnp.ndarray, yaw_deg: jnp.ndarray) -> jnp.ndarray:
    """Rotate local vectors (x = right, z = forward) into a frame with yaw ``yaw_deg``."""
    forward = heading(yaw_deg)
    right = right_of(forward)
    return vectors[..., :1] * right + vectors[..., 1:] * forward


def _safe_inverse(d: jnp.ndarray) -> jnp.ndarray:
    return 1.0 / jnp.where(jnp.abs(d) < _TINY, jnp.where(d < 0, -_TINY, _TINY), d)


def ray_box_distance(origin: jnp.ndarray, direction: jnp.ndarray, center: jnp.ndarray,
                     half_extents: jnp.ndarray, yaw_deg: jnp.ndarray | float = 0.0) -> jnp.ndarray:
    """Distance along a unit ray to an oriented box, ``inf`` on a miss.

    As in Unity's ``Physics.Raycast``, a ray that starts inside a box does not see it.
    Shapes broadcast: ``origin``/``direction`` ``[..., 2]`` against ``center``/``half_extents`` ``[..., 2]``.
    """
    forward = heading(jnp.asarray(yaw_deg, jnp.float32))
    right = right_of(forward)
    rel = origin - center
    o = jnp.stack([jnp.sum(rel * right, -1), jnp.sum(rel * forward, -1)], -1)
    d = jnp.stack([jnp.sum(direction * right, -1), jnp.sum(direction * forward, -1)], -1)
    inv = _safe_inverse(d)
    t1 = (-half_extents - o) * inv
    t2 = (half_extents - o) * inv
    t_near = jnp.max(jnp.minimum(t1, t2), axis=-1)
    t_far = jnp.min(jnp.maximum(t1, t2), axis=-1)
    hit = (t_near <= t_far) & (t_near > 0.0)
    return jnp.where(hit, t_near, NO_HIT)


def ray_circle_distance(origin: jnp.ndarray, direction: jnp.ndarray, center: jnp.ndarray,
                        radius: jnp.ndarray | float) -> jnp.ndarray:
    """Distance along a unit ray to a circle's edge, ``inf`` on a miss or when starting inside."""
    oc = origin - center
    b = jnp.sum(oc * direction, -1)
    c = jnp.sum(oc * oc, -1) - radius**2
    disc = b * b - c
    t = -b - jnp.sqrt(jnp.maximum(disc, 0.0))
    hit = (disc >= 0.0) & (c > 0.0) & (t > 0.0)
    return jnp.where(hit, t, NO_HIT)


def boxes_overlap(center_a: jnp.ndarray, half_a: jnp.ndarray, yaw_a: jnp.ndarray,
                  center_b: jnp.ndarray, half_b: jnp.ndarray, yaw_b: jnp.ndarray) -> jnp.ndarray:
    """Whether two oriented boxes overlap (separating-axis test on their four face normals)."""
    fa, fb = heading(jnp.asarray(yaw_a, jnp.float32)), heading(jnp.asarray(yaw_b, jnp.float32))
    axes_a = jnp.stack([right_of(fa), fa], -2)  # [..., 2 axes, 2]
    axes_b = jnp.stack([right_of(fb), fb], -2)
    axes = jnp.concatenate([jnp.broadcast_to(axes_a, jnp.broadcast_shapes(axes_a.shape, axes_b.shape)),
                            jnp.broadcast_to(axes_b, jnp.broadcast_shapes(axes_a.shape, axes_b.shape))], -2)
    delta = (center_b - center_a)[..., None, :]

    def radius(axes_box: jnp.ndarray, half: jnp.ndarray) -> jnp.ndarray:
        # projection radius of a box onto each test axis: sum_k h_k |axis · u_k|
        proj = jnp.abs(jnp.einsum("...ij,...kj->...ik", axes, axes_box))
        return jnp.sum(proj * half[..., None, :], -1)

    separation = jnp.abs(jnp.sum(delta * axes, -1))
    return jnp.all(separation < radius(axes_a, half_a) + radius(axes_b, half_b), axis=-1)
