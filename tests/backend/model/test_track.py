"""End-effector track features: the projected gripper lands on the patch that sees it."""

import numpy as np
import pytest
import torch

from backend.model.sight_cone import look_at_camera
from backend.model.track import TRACK_FEATURES, track_features

GRID = (4, 4)


def _camera(name: str = "front"):
    return look_at_camera(name, [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], 60.0, 64, 64)


def _chunk(points: list[list[float]], gripper: float = 0.5) -> torch.Tensor:
    """One action per latent frame at the given points (4 steps each), absolute poses (1, H, 7)."""
    rows = [[*p, 0.0, 0.0, 0.0, gripper] for p in points for _ in range(4)]
    return torch.tensor([rows], dtype=torch.float32)


def test_the_bump_peaks_on_the_patch_the_camera_sees_the_gripper_in() -> None:
    cam = _camera()
    # the camera looks at the origin: it projects onto the image centre, the corner of the
    # four middle patches; a point left and up of it lands in patch (row 0, column 0)
    corner_ray = cam.T_world_cam[:3, :3] @ np.linalg.inv(cam.K) @ np.array([8.0, 8.0, 1.0])
    corner = cam.T_world_cam[:3, 3] + corner_ray / np.linalg.norm(corner_ray) * 1.4
    state = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    feats = track_features(state, _chunk([corner.tolist(), [0, 0, 0]]), [{"front": cam}], 1, GRID)
    assert feats.shape == (1, 1, 2, 16, TRACK_FEATURES)
    target_bump = feats[0, 0, :, :, 2]  # the narrow bump of the frame's end point
    assert target_bump[0].argmax().item() == 0  # row 0, column 0
    np.testing.assert_allclose(feats[0, 0, 0, 0, 0:2].numpy(), [0.0, 0.0], atol=0.05)
    # the origin sits on the corner of patches 5, 6, 9, 10: equal bumps, offsets of half a patch
    middle = target_bump[1, [5, 6, 9, 10]]
    np.testing.assert_allclose(middle.numpy(), middle[0].item(), rtol=1e-4)
    np.testing.assert_allclose(feats[0, 0, 1, 5, 0:2].numpy(), [0.5, 0.5], atol=1e-4)
    # the observation's point (the state: the origin) is the same in every frame
    assert torch.equal(feats[0, 0, 0, :, 4:8], feats[0, 0, 1, :, 4:8])
    np.testing.assert_allclose(feats[0, 0, :, 0, 8].numpy(), 0.5)  # the gripper command


def test_offsets_are_clamped_and_far_points_have_no_bump() -> None:
    cam = _camera()
    state = torch.zeros(1, 7)
    far = cam.T_world_cam[:3, :3] @ np.array([5.0, 0.0, 1.0])  # far off to the image's right
    feats = track_features(
        state, _chunk([(cam.T_world_cam[:3, 3] + far).tolist()]), [{"f": cam}], 1, GRID
    )
    assert feats[..., 0].max().item() == pytest.approx(4.0)
    assert feats[..., 2:4].max().item() < 1e-3


def test_points_behind_the_camera_and_missing_calibrations_give_zeros() -> None:
    cam = _camera()
    behind = (cam.T_world_cam[:3, 3] - cam.T_world_cam[:3, 2]).tolist()  # 1 m behind the lens
    state = torch.tensor([behind + [0.0] * 4])
    feats = track_features(state, _chunk([behind]), [{"front": cam}, None][:1], 1, GRID)
    assert torch.count_nonzero(feats) == 0
    both = track_features(
        state.repeat(2, 1), _chunk([[0, 0, 0]]).repeat(2, 1, 1), [{"front": cam}, None], 1, GRID
    )
    assert torch.count_nonzero(both[0]) > 0 and torch.count_nonzero(both[1]) == 0
    # a sample with fewer calibrations than views gets none either
    assert (
        torch.count_nonzero(track_features(state, _chunk([[0, 0, 0]]), [{"front": cam}], 2, GRID))
        == 0
    )


def test_bad_shapes_are_refused() -> None:
    cam = {"front": _camera()}
    with pytest.raises(ValueError, match="whole latent frames"):
        track_features(torch.zeros(1, 7), torch.zeros(1, 6, 7), [cam], 1, GRID)
    with pytest.raises(ValueError, match="calibration sets"):
        track_features(torch.zeros(2, 7), torch.zeros(2, 8, 7), [cam], 1, GRID)
