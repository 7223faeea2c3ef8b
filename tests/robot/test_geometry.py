import itertools
import math

import numpy as np

from robot.geometry import quat_to_rpy, rotation_angle, rpy_to_quat, slerp


def test_rpy_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for rpy in rng.uniform([-3, -1.5, -3], [3, 1.5, 3], (100, 3)):
        q = rpy_to_quat(rpy)
        assert math.isclose(np.linalg.norm(q), 1.0, rel_tol=1e-12)
        np.testing.assert_allclose(quat_to_rpy(q), rpy, atol=1e-9)


def test_slerp_ends_at_both_orientations_and_moves_at_constant_rate():
    a, b = np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.2])
    ts = np.linspace(0, 1, 7)
    qs = slerp(rpy_to_quat(a), rpy_to_quat(b), ts)
    np.testing.assert_allclose(quat_to_rpy(qs[0]), a, atol=1e-12)
    np.testing.assert_allclose(quat_to_rpy(qs[-1]), b, atol=1e-12)
    steps = [rotation_angle(quat_to_rpy(p), quat_to_rpy(q)) for p, q in itertools.pairwise(qs)]
    np.testing.assert_allclose(steps, 0.2, atol=1e-9)


def test_rotation_angle_takes_the_short_way_round():
    assert math.isclose(rotation_angle([0, 0, 3.0], [0, 0, -3.0]), 2 * math.pi - 6.0, abs_tol=1e-9)
    assert math.isclose(rotation_angle([0.3, 0, 0], [0.3, 0, 0]), 0.0, abs_tol=1e-6)
