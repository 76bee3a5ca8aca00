"""Planar geometry for the robot scenes: rays against boxes and circles, box-vs-box overlap.

Points are (x, z) in Unity's ground plane (x right, z forward); a yaw is in degrees, clockwise
seen from above (Unity's convention), so yaw ψ faces ``(sin ψ, cos ψ)``.

Everything is written per component (a :class:`Vec` holds an x array and a z array) and is purely
elementwise, so any leading shape broadcasts (e.g. 18 rays against one box) and, under ``vmap`` on
a CPU, XLA fuses a whole scene's geometry into a few loops instead of many tiny ops on ``[..., 2]``
vectors. Boxes whose placement is known when tracing (the walls) are plain Python floats, so they
become compile-time constants, and axis-aligned boxes skip the rotation altogether.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Scalar = float | jnp.ndarray
NO_HIT = np.float32(np.inf)
_TINY = np.float32(1e-12)
_DEG = np.float32(np.pi / 180.0)


class Vec(NamedTuple):
    """A 2-D vector (or an array of them) as its x and z components."""

    x: Scalar
    z: Scalar


class Box(NamedTuple):
    """A box: ``center``, ``half`` extents along its own right/forward axes, and its ``forward`` unit vector.

    ``forward=None`` means axis-aligned (yaw 0), which lets every test against it skip a rotation.
    """

    center: Vec
    half: tuple[Scalar, Scalar]
    forward: Vec | None = None


class Ray(NamedTuple):
    """A ray: its origin and unit direction."""

    origin: Vec
    direction: Vec


def heading(yaw_deg: Scalar) -> Vec:
    """Unit vector a yaw faces: ``(sin ψ, cos ψ)``, both from one reduction to the nearest right angle.

    The yaw is reduced in degrees, where the right angles are exact (so 90° gives exactly (1, 0)), to at most 45°,
    and Cephes' float32 polynomials give the sine and cosine there: within 8e-8 of the exact values, against 6e-7
    for ``jnp.sin(radians(ψ))``. XLA's CPU ``sin`` and ``cos`` are a libm call per element: for 4096 yaws 20 µs,
    against 4 µs here (a 2-core Xeon), and the car computes a heading twice per step.
    """
    yaw = jnp.asarray(yaw_deg, jnp.float32)
    right_angles = jnp.round(yaw * np.float32(1 / 90))
    x = (yaw - 90.0 * right_angles) * _DEG  # in [-π/4, π/4]
    z = x * x
    sin = x + x * z * _polynomial(_SIN_COEFFICIENTS, z)
    cos = 1.0 - 0.5 * z + z * z * _polynomial(_COS_COEFFICIENTS, z)
    quadrant = right_angles.astype(jnp.int32) & 3  # sin(ψ + 90°) = cos ψ, cos(ψ + 90°) = −sin ψ
    odd = (quadrant & 1) == 1
    sin, cos = jnp.where(odd, cos, sin), jnp.where(odd, sin, cos)
    return Vec(jnp.where(quadrant >= 2, -sin, sin), jnp.where((quadrant == 1) | (quadrant == 2), -cos, cos))


#: Cephes' ``sinf`` and ``cosf`` polynomials for |x| ≤ π/4, z = x²: sin x ≈ x + x·z·S(z), cos x ≈ 1 − z/2 + z²·C(z).
_SIN_COEFFICIENTS = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
_COS_COEFFICIENTS = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)


def _polynomial(coefficients: tuple[float, ...], z: jnp.ndarray) -> jnp.ndarray:
    """Horner's rule, highest power first, in float32."""
    value = np.float32(coefficients[0])
    for c in coefficients[1:]:
        value = value * z + np.float32(c)
    return value


def atan2(y: Scalar, x: Scalar) -> jnp.ndarray:
    """``jnp.arctan2`` in plain arithmetic, which XLA's CPU backend vectorises: its ``atan2`` is a call per element.

    Measured on a 2-core Xeon for 4096 values: 45 µs against 9 µs. The arctangent of the smaller over the larger
    magnitude (:func:`_atan_unit`) is moved to its octant: within 3.1 float32 ulps of the exact angle, and exact at
    the axes and at the origin (0). Not ``jnp.arctan``: with 512-bit vectors (``rlrobot.host_devices``) the CPU
    ``atan`` of JAX 0.10.2 returns wrong values, off by up to 3 rad (``benchmarks/RESULTS.md``).
    """
    ax, ay = jnp.abs(x), jnp.abs(y)
    steep = ay > ax
    angle = _atan_unit(jnp.where(steep, ax, ay) / larger(larger(ax, ay), _TINY))
    angle = jnp.where(steep, np.float32(np.pi / 2) - angle, angle)
    angle = jnp.where(x < 0, np.float32(np.pi) - angle, angle)
    return jnp.where(y < 0, -angle, angle)


_TAN_PI_8 = np.float32(np.sqrt(2.0) - 1.0)
#: Cephes' ``atanf`` polynomial: atan(r) ≈ r + r·z·P(z), z = r², for |r| ≤ tan(π/8).
_ATAN_COEFFICIENTS = (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1)


def _atan_unit(t: jnp.ndarray) -> jnp.ndarray:
    """``arctan(t)`` for ``t`` in [0, 1]: above tan(π/8), π/4 + arctan((t − 1)/(t + 1)), then Cephes' polynomial."""
    upper = t > _TAN_PI_8
    r = jnp.where(upper, (t - 1.0) / (t + 1.0), t)
    z = r * r
    return jnp.where(upper, np.float32(np.pi / 4), 0.0) + (r + r * z * _polynomial(_ATAN_COEFFICIENTS, z))


def right_of(forward: Vec) -> Vec:
    """The unit vector 90° clockwise of ``forward`` (the robot's right)."""
    return Vec(forward.z, -forward.x)


def dot(a: Vec, b: Vec) -> Scalar:
    return a.x * b.x + a.z * b.z


def rotate(local: Vec, forward: Vec) -> Vec:
    """Turn a vector given in a body frame (x = right, z = forward) into the world frame of a body facing
    ``forward``."""
    return Vec(local.x * forward.z + local.z * forward.x, local.z * forward.z - local.x * forward.x)


def into_frame(v: Vec, forward: Vec) -> Vec:
    """The inverse of :func:`rotate`: a world vector's components along a body's right and forward axes."""
    return Vec(dot(v, right_of(forward)), dot(v, forward))


def smaller(a: Scalar, b: Scalar) -> jnp.ndarray:
    """``jnp.minimum`` for numbers that are never NaN, as a compare and a select.

    XLA's ``minimum`` and ``maximum`` propagate a NaN, which no x86 instruction does, so each becomes several
    instructions in a vector loop; a compare and a select is one ``vminps``. The geometry's distances are finite or
    ``inf``, never NaN: env-only steps 1.11× faster for the slab test alone (``benchmarks/RESULTS.md``). Only the
    sign of a zero can differ from ``jnp.minimum`` (``smaller(0.0, -0.0)`` is ``0.0``).
    """
    return jnp.where(a <= b, a, b)


def larger(a: Scalar, b: Scalar) -> jnp.ndarray:
    """``jnp.maximum`` for numbers that are never NaN (:func:`smaller`)."""
    return jnp.where(a >= b, a, b)


def _safe_inverse(d: Scalar) -> Scalar:
    return 1.0 / jnp.where(jnp.abs(d) < _TINY, jnp.where(d < 0, -_TINY, _TINY), d)


def ray_box_distance(ray: Ray, box: Box) -> jnp.ndarray:
    """Distance along a unit ray to a box, ``inf`` on a miss (the slab test).

    As in Unity's ``Physics.Raycast``, a ray that starts inside a box does not see it.
    """
    rel = Vec(ray.origin.x - box.center.x, ray.origin.z - box.center.z)
    direction = ray.direction
    if box.forward is not None:
        rel, direction = into_frame(rel, box.forward), into_frame(direction, box.forward)
    inv_x, inv_z = _safe_inverse(direction.x), _safe_inverse(direction.z)
    tx1, tx2 = (-box.half[0] - rel.x) * inv_x, (box.half[0] - rel.x) * inv_x
    tz1, tz2 = (-box.half[1] - rel.z) * inv_z, (box.half[1] - rel.z) * inv_z
    t_near = larger(smaller(tx1, tx2), smaller(tz1, tz2))
    t_far = smaller(larger(tx1, tx2), larger(tz1, tz2))
    return jnp.where((t_near <= t_far) & (t_near > 0.0), t_near, NO_HIT)


def ray_circle_distance(ray: Ray, center: Vec, radius: Scalar) -> jnp.ndarray:
    """Distance along a unit ray to a circle's edge, ``inf`` on a miss or when starting inside."""
    oc = Vec(ray.origin.x - center.x, ray.origin.z - center.z)
    b = dot(oc, ray.direction)
    c = dot(oc, oc) - radius**2
    disc = b * b - c
    t = -b - jnp.sqrt(larger(disc, 0.0))
    return jnp.where((disc >= 0.0) & (c > 0.0) & (t > 0.0), t, NO_HIT)


def boxes_overlap(a: Box, b: Box) -> jnp.ndarray:
    """Whether two boxes overlap: the separating-axis test on their four face normals.

    Done in ``b``'s frame, where ``b`` is axis-aligned at the origin, so only ``a``'s axes need projecting.
    """
    delta = Vec(a.center.x - b.center.x, a.center.z - b.center.z)
    forward = Vec(0.0, 1.0) if a.forward is None else a.forward
    if b.forward is not None:
        delta, forward = into_frame(delta, b.forward), into_frame(forward, b.forward)
    # |components| of a's right (fz, -fx) and forward (fx, fz) along b's axes
    fx, fz = jnp.abs(forward.x), jnp.abs(forward.z)
    (ax, az), (bx, bz) = a.half, b.half
    along_b_x = jnp.abs(delta.x) < bx + ax * fz + az * fx
    along_b_z = jnp.abs(delta.z) < bz + ax * fx + az * fz
    along_a_x = jnp.abs(dot(delta, right_of(forward))) < ax + bx * fz + bz * fx
    along_a_z = jnp.abs(dot(delta, forward)) < az + bx * fx + bz * fz
    return along_b_x & along_b_z & along_a_x & along_a_z


PUSH_MARGIN = np.float32(1e-4)  # pushed this far past contact, so the moved box tests as free


def push_out(a: Box, b: Box) -> Vec:
    """The shortest move of box ``a`` that takes it out of box ``b`` (zero when they do not overlap).

    The separating-axis test on the four face normals, keeping the axis of least overlap (the minimum translation
    vector), as a physics engine's depenetration pushes a body out of a collider. The least overlap is tracked with
    elementwise selects rather than a stack and an ``argmin``, so that XLA fuses it into one loop.
    """
    a_forward = Vec(0.0, 1.0) if a.forward is None else a.forward
    b_forward = Vec(0.0, 1.0) if b.forward is None else b.forward
    delta = Vec(a.center.x - b.center.x, a.center.z - b.center.z)

    def radius(half, forward: Vec, axis: Vec) -> Scalar:
        return half[0] * jnp.abs(dot(right_of(forward), axis)) + half[1] * jnp.abs(dot(forward, axis))

    depth = direction = inside = None
    for axis in (right_of(a_forward), a_forward, right_of(b_forward), b_forward):
        along = dot(delta, axis)
        overlap = radius(a.half, a_forward, axis) + radius(b.half, b_forward, axis) - jnp.abs(along)
        sign = jnp.where(along >= 0.0, 1.0, -1.0)
        out = Vec(sign * axis.x, sign * axis.z)
        if depth is None:
            depth, direction, inside = overlap, out, overlap > 0.0
        else:
            better = overlap < depth
            direction = Vec(jnp.where(better, out.x, direction.x), jnp.where(better, out.z, direction.z))
            depth, inside = smaller(overlap, depth), inside & (overlap > 0.0)
    distance = jnp.where(inside, depth + PUSH_MARGIN, 0.0)
    return Vec(distance * direction.x, distance * direction.z)


def computed_once(*arrays: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """The same arrays, made to be computed once and stored rather than fused into each consumer.

    XLA copies a chain of cheap elementwise ops into every fused loop that reads it. For the car's move (dozens of
    box tests) that meant recomputing it once per ray and per consumer, and a chain of pushes grew exponentially.
    A reduction is computed once and its result read by its consumers, so each array goes through a ``max`` with
    ``-inf`` (the identity: every value comes back unchanged). ``lax.optimization_barrier`` does not do this: XLA's
    CPU pipeline removes it before fusion.

    Each array is reduced on its own, so that the fused loop runs over the robots (a stack of the arrays would put a
    short axis innermost, and XLA's CPU loops would not vectorise), and with a select (:func:`_select_reduce`).
    """
    return tuple(_select_reduce(jnp.stack([a, jnp.full_like(a, -jnp.inf)]), -np.inf, larger, 0)
                 for a in arrays)


def fused_min(values: jnp.ndarray, axis: int) -> jnp.ndarray:
    """``jnp.min`` over ``axis``, fused with whatever computes ``values`` (:func:`_select_reduce`)."""
    return _select_reduce(values, np.inf, smaller, axis)


def _select_reduce(values: jnp.ndarray, initial: float, reducer: Callable, axis: int) -> jnp.ndarray:
    """A reduction of ``values`` over ``axis`` by ``reducer`` (:func:`larger` or :func:`smaller`).

    XLA's CPU backend hands a plain ``min`` or ``max`` reduction to the YNNPACK library: a separate kernel that reads
    its input from memory, so the input is first written out by a loop of its own. A select reducer stays with XLA,
    which fuses it with the loop that computes ``values``. Measured at 4096 robots on one core: env-only steps
    4.69 M → 4.99 M/s for the walls' ``min``, after 4.27 M → 4.69 M for :func:`computed_once`.

    The reducer is a module-level function, not a lambda: JAX caches a reducer's trace by the function, so a step
    run eagerly (un-jitted) reuses its compiled reductions instead of compiling each one again on every call.
    """
    return jax.lax.reduce(values, np.float32(initial), reducer, (axis,))
