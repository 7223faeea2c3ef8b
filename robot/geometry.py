"""Orientation math shared by the robot server's safety layer and the simulator (numpy only).

Convention: roll, pitch, yaw compose as R = Rz(yaw) Ry(pitch) Rx(roll); quaternions are
(w, x, y, z), MuJoCo's order.
"""

from __future__ import annotations

import math

import numpy as np


def rpy_to_quat(rpy: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw (3,) -> unit quaternion (4,)."""
    r, p, y = np.asarray(rpy, dtype=np.float64) / 2
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ]
    )


def quat_to_rpy(q: np.ndarray) -> np.ndarray:
    """Inverse of `rpy_to_quat` (pitch in [-pi/2, pi/2])."""
    w, x, y, z = q
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([roll, pitch, yaw])


def slerp(q0: np.ndarray, q1: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Shortest-way quaternion interpolation at fractions ts (N,) -> (N, 4) unit quaternions."""
    q0, q1 = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64)
    d = float(np.dot(q0, q1))
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:  # nearly equal: linear interpolation is exact enough and avoids 0/0
        q = q0[None] + ts[:, None] * (q1 - q0)[None]
    else:
        th = math.acos(d)
        q = (np.sin((1 - ts) * th)[:, None] * q0 + np.sin(ts * th)[:, None] * q1) / math.sin(th)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def rotation_angle(rpy_a: np.ndarray, rpy_b: np.ndarray) -> float:
    """Geodesic angle (rad) between two orientations."""
    d = abs(float(np.dot(rpy_to_quat(rpy_a), rpy_to_quat(rpy_b))))
    return 2 * math.acos(min(1.0, d))


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of (w, x, y, z) quaternions: rotate by b, then by a."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )
