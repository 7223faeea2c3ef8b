"""The action tower's own look at the observation: soft-argmax keypoints per camera view.

The action tower reads the video tower's keys and values at every layer, but those tokens are
2x2 patches of an 8x8 latent grid: a 4 cm block is a fraction of one token, and a policy
trained that way learned a fixed move per instruction and ignored where things are
(docs/training.md). Robot policies that place objects from images usually end in a spatial
soft-argmax (Levine et al. 2016; robomimic's and Diffusion Policy's `SpatialSoftmax`): a small
convolutional net makes K heat maps per image and each becomes the (x, y) of its expected
position, so the output *is* image coordinates that a linear layer maps to the workspace.

`SpatialKeypoints` does that on the observation frame in pixels (shared weights over views)
and returns one token per view, at the action tower's width, that the action tower's state and
action tokens attend to (`DenoiserConfig.keypoints`; 0 = off, the paper's layout).
"""

from __future__ import annotations

import torch
from torch import nn


def soft_argmax(maps: torch.Tensor, log_temperature: torch.Tensor) -> torch.Tensor:
    """(N, K, h, w) heat maps -> (N, K, 2) expected (x, y) in [-1, 1] under a spatial softmax."""
    n, k, h, w = maps.shape
    p = torch.softmax(maps.flatten(2).float() * log_temperature.exp(), dim=-1).view(n, k, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=maps.device)
    ys = torch.linspace(-1.0, 1.0, h, device=maps.device)
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)


class SpatialKeypoints(nn.Module):
    """uint8 frames (B, V, H, W, 3) -> (B, V, width): K soft-argmax keypoints per view, embedded."""

    def __init__(self, keypoints: int, width: int, views: int, channels: int = 16):
        super().__init__()
        c = channels

        def block(cin: int, cout: int, k: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, stride, k // 2), nn.GroupNorm(8, cout), nn.GELU()]

        self.features = nn.Sequential(
            *block(3, c, 5, 2),  # H/2
            *block(c, c, 3, 1),
            *block(c, 2 * c, 3, 2),  # H/4
            *block(2 * c, 2 * c, 3, 1),
            nn.Conv2d(2 * c, keypoints, 1),
        )
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.proj = nn.Sequential(
            nn.Linear(2 * keypoints, width), nn.GELU(approximate="tanh"), nn.Linear(width, width)
        )
        self.view_embedding = nn.Parameter(torch.zeros(views, width))

    def points(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, V, H, W, 3) -> (B, V, K, 2) keypoints in [-1, 1] image coordinates."""
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (B, V, H, W, 3), got {tuple(frames.shape)}")
        b, v = frames.shape[:2]
        x = frames.flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B*V, 3, H, W)
        dtype = self.proj[0].weight.dtype
        pts = soft_argmax(self.features(x.to(dtype)), self.log_temperature)  # (B*V, K, 2)
        return pts.unflatten(0, (b, v))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        v = frames.shape[1]
        if v > self.view_embedding.shape[0]:
            raise ValueError(
                f"{v} views, the keypoint encoder knows {self.view_embedding.shape[0]}"
            )
        pts = self.points(frames).flatten(2).to(self.proj[0].weight.dtype)  # (B, V, 2K)
        return self.proj(pts) + self.view_embedding[:v]  # (B, V, width)
