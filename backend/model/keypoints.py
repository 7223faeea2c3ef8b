"""The action tower's own look at the observation: soft-argmax keypoints per camera view.

The action tower reads the video tower's keys and values at every layer, but those tokens are
2x2 patches of an 8x8 latent grid: a 4 cm block is a fraction of one token, and a policy
trained that way learned a fixed move per instruction and ignored where things are
(docs/training.md). Robot policies that place objects from images usually end in a spatial
soft-argmax (Levine et al. 2016; robomimic's and Diffusion Policy's `SpatialSoftmax`): a small
convolutional net makes K heat maps per image and each becomes the (x, y) of its expected
position, so the output *is* image coordinates that a linear layer maps to the workspace.

`SpatialKeypoints` does that on the observation frame in pixels (shared weights over views);
an MLP turns every view's keypoints and the robot's state into one vector that joins the
action tower's timestep embedding, i.e. its adaLN shift, scale and gate at every layer and in
the output head (DiT's way with a class label, Diffusion Policy's FiLM with observations):
a direct path from "where the block is, where the hand is" to the chunk. Keypoints given to
the action tokens as extra tokens to attend to were tried first and not used in 1 400 steps,
while the same encoder regressing the move directly learned it in 100 (docs/training.md).
`DenoiserConfig.keypoints`; 0 = off, the paper's layout.

Instruction-queried keypoints (`DenoiserConfig.keypoint_queries`): the K heat maps above are
the same whatever the instruction, so "go over the red button" among three buttons asks the
MLP to pick one keypoint by a word, a product of two inputs that an MLP learns slowly (the
button-target error stayed near the mean move, docs/training.md). A query head turns the pooled
instruction into Q vectors; each is dotted with the convolutional features at every pixel and
soft-argmaxed like the others, so "red" picks out red pixels by construction: attention
pooling, as in FiLM-style language-conditioned policies, ending in coordinates.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INIT_TEMPERATURE = 8.0  # multiplies the heat maps before the spatial softmax (learned)


def soft_argmax(maps: torch.Tensor, log_temperature: torch.Tensor) -> torch.Tensor:
    """(N, K, h, w) heat maps -> (N, K, 2) expected (x, y) in [-1, 1] under a spatial softmax."""
    n, k, h, w = maps.shape
    p = torch.softmax(maps.flatten(2).float() * log_temperature.exp(), dim=-1).view(n, k, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=maps.device)
    ys = torch.linspace(-1.0, 1.0, h, device=maps.device)
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)


class SpatialKeypoints(nn.Module):
    """The observation in pixels + the state -> one conditioning vector for the action tower.

    `points`: uint8 frames (B, V, H, W, 3) -> (B, V, K, 2) soft-argmax keypoints (a small
    convolutional net shared by the views). `embed`: the keypoints of every view and the
    normalised state -> (B, width), an MLP whose last layer starts at zero, so a trained model
    given fresh keypoints predicts exactly what it did before.
    """

    def __init__(
        self,
        keypoints: int,
        width: int,
        views: int,
        state_dim: int,
        text_width: int = 0,
        embed_text: bool = False,
        queries: int = 0,
        channels: int = 16,
    ):
        super().__init__()
        c = channels
        self.views = views
        if queries and not text_width:
            raise ValueError("instruction-queried keypoints need the instruction: text_width > 0")
        self.queries = queries
        self.text_width = text_width if embed_text else 0  # what `embed` reads

        def block(cin: int, cout: int, k: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, stride, k // 2), nn.GroupNorm(8, cout), nn.GELU()]

        self.features = nn.Sequential(
            *block(3, c, 5, 2),  # H/2
            *block(c, c, 3, 1),
            *block(c, 2 * c, 3, 2),  # H/4
            *block(2 * c, 2 * c, 3, 1),
            nn.Conv2d(2 * c, keypoints, 1),
        )
        # Sharp from the start: GroupNorm-ed maps vary by ~0.5, and at temperature 1 their
        # softmax is nearly flat, so every keypoint sits at the centre whatever the image and
        # carries no signal to learn from (measured: 0.013 spread over scenes).
        self.log_temperature = nn.Parameter(torch.tensor(math.log(INIT_TEMPERATURE)))
        # The instruction -> Q unit query vectors over the last hidden features (2c channels).
        # LayerNorm first: pooled instructions differ by a fraction of their norm ("red" vs
        # "green" button: cosine 0.94), and a raw linear map of them gave near-zero queries,
        # flat heat maps and no gradient; the colour word did not move the target (<1 cm).
        self.query = (
            nn.Sequential(nn.LayerNorm(text_width), nn.Linear(text_width, queries * 2 * c))
            if queries
            else None
        )
        self.query_log_temperature = (
            nn.Parameter(torch.tensor(math.log(INIT_TEMPERATURE))) if queries else None
        )
        self.mlp = nn.Sequential(
            nn.Linear(views * (keypoints + queries) * 2 + state_dim + self.text_width, 4 * width),
            nn.GELU(approximate="tanh"),
            nn.Linear(4 * width, width),
        )
        # Training aid (`Objective.keypoint_weight`): from the conditioning vector and the
        # instruction, regress where the chunk ends (normalised position, relative to the
        # state). A direct loss teaches the encoder to localise in a few hundred steps; through
        # the flow loss alone it had not started after 1 400 (docs/training.md).
        self.endpoint = (
            nn.Sequential(
                nn.Linear(width + text_width, 4 * width),
                nn.GELU(approximate="tanh"),
                nn.Linear(4 * width, 3),
            )
            if text_width
            else None
        )

    def zero_output(self) -> None:
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def points(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, V, H, W, 3) -> (B, V, K, 2) keypoints in [-1, 1] image coordinates."""
        return self.look(frames)[0]

    def look(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (B, V, H, W, 3) -> keypoints (B, V, K, 2) and, for an encoder with queries,
        the features they are read from (B, V, 2c, H/4, W/4), for `query_points`."""
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (B, V, H, W, 3), got {tuple(frames.shape)}")
        if frames.shape[1] != self.views:
            raise ValueError(
                f"{frames.shape[1]} views, the keypoint encoder was built for {self.views}"
            )
        b, v = frames.shape[:2]
        x = frames.flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B*V, 3, H, W)
        dtype = self.mlp[0].weight.dtype
        hidden = self.features[:-1](x.to(dtype))  # (B*V, 2c, H/4, W/4)
        pts = soft_argmax(self.features[-1](hidden), self.log_temperature)  # (B*V, K, 2)
        features = hidden.unflatten(0, (b, v)) if self.queries else None
        return pts.unflatten(0, (b, v)), features

    def query_points(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, V, C, h, w) features + (B, text_width) pooled instruction -> (B, V, Q, 2): where
        in each view the instruction's queries match best (soft-argmax of their dot products)."""
        if self.query is None:
            raise ValueError("this encoder was built without instruction queries")
        b, v, c = features.shape[:3]
        q = self.query(text.to(self.query[1].weight.dtype)).view(b, self.queries, c)
        q = torch.nn.functional.normalize(q.float(), dim=-1).to(features.dtype)
        maps = torch.einsum("bvchw,bqc->bvqhw", features, q)
        pts = soft_argmax(maps.flatten(0, 1), self.query_log_temperature)  # (B*V, Q, 2)
        return pts.unflatten(0, (b, v))

    def predict_endpoint(self, embedding: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, width) conditioning vector + (B, text_width) pooled instruction -> (B, 3)."""
        if self.endpoint is None:
            raise ValueError("this encoder was built without an endpoint head (text_width=0)")
        return self.endpoint(torch.cat([embedding, text.to(embedding.dtype)], dim=1))

    def embed(
        self,
        points: torch.Tensor,
        state: torch.Tensor,
        text: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, V, K, 2) keypoints + (B, state_dim) normalised state (+ (B, text_width) pooled
        instruction, for encoders built with embed_text; + the `look` features, for encoders
        with queries) -> (B, width)."""
        if self.queries:
            if features is None or text is None:
                raise ValueError("this encoder has instruction queries: pass features and text")
            points = torch.cat([points, self.query_points(features, text).to(points.dtype)], 2)
        parts = [points.flatten(1), state.to(points.dtype)]
        if self.text_width:
            if text is None:
                raise ValueError("this encoder reads the instruction: pass the pooled text")
            parts.append(text.to(points.dtype))
        return self.mlp(torch.cat(parts, dim=1).to(self.mlp[0].weight.dtype))
