"""Action and state normaliser, owned by the model and saved in its checkpoint.

Positions, angles and the gripper live on very different scales; the denoiser sees each
dimension mapped from the dataset's [min, max] to [-1, 1] (as in diffusion_policy), so noise
at t = 1 covers every dimension's range equally. Dimensions that barely move get a minimum
half-range so that a constant joint does not blow up into huge normalised values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from robot.types import ACTION_DIM

# Half-ranges below this (metres / radians / gripper units) are treated as this.
MIN_HALF_RANGE = 1e-2
# Keys under which a dataset reader may report the statistics (ours, then LeRobot's).
_STATE_KEYS = ("state", "observation.state")
_ACTION_KEYS = ("action", "actions")


@dataclass(frozen=True)
class Normalizer:
    """Per-dimension affine maps for the 7-d state and action, x_norm = (x - center) / half_range."""

    state_min: np.ndarray  # (7,)
    state_max: np.ndarray  # (7,)
    action_min: np.ndarray  # (7,)
    action_max: np.ndarray  # (7,)

    def __post_init__(self) -> None:
        for name in ("state_min", "state_max", "action_min", "action_max"):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.shape != (ACTION_DIM,):
                raise ValueError(
                    f"normaliser {name} must have shape ({ACTION_DIM},), got {v.shape}"
                )
            if not np.all(np.isfinite(v)):
                raise ValueError(f"normaliser {name} has non-finite values: {v.tolist()}")
            object.__setattr__(self, name, v)
        for kind in ("state", "action"):
            lo, hi = getattr(self, f"{kind}_min"), getattr(self, f"{kind}_max")
            if np.any(hi < lo):
                raise ValueError(
                    f"normaliser {kind}: max < min in dims {np.nonzero(hi < lo)[0].tolist()}"
                )

    @classmethod
    def identity(cls) -> Normalizer:
        """Maps [-1, 1] onto itself: for models built before any dataset is seen."""
        lo, hi = -np.ones(ACTION_DIM), np.ones(ACTION_DIM)
        return cls(lo, hi, lo.copy(), hi.copy())

    @classmethod
    def from_stats(cls, stats: Mapping) -> Normalizer:
        """From a dataset reader's stats: {"state": {"min", "max", ...}, "action": {...}}."""

        def pick(keys: tuple[str, ...]) -> Mapping:
            for k in keys:
                if k in stats:
                    return stats[k]
            raise ValueError(f"dataset stats lack any of {keys}; have {sorted(stats)}")

        s, a = pick(_STATE_KEYS), pick(_ACTION_KEYS)
        for name, d in (("state", s), ("action", a)):
            missing = {"min", "max"} - set(d)
            if missing:
                raise ValueError(f"dataset stats for {name} lack {sorted(missing)}")
        return cls(s["min"], s["max"], a["min"], a["max"])

    def to_dict(self) -> dict:
        return {
            "state": {"min": self.state_min.tolist(), "max": self.state_max.tolist()},
            "action": {"min": self.action_min.tolist(), "max": self.action_max.tolist()},
        }

    def _affine(self, kind: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = getattr(self, f"{kind}_min"), getattr(self, f"{kind}_max")
        center = (hi + lo) / 2
        half = np.maximum((hi - lo) / 2, MIN_HALF_RANGE)
        return (
            torch.as_tensor(center, dtype=like.dtype, device=like.device),
            torch.as_tensor(half, dtype=like.dtype, device=like.device),
        )

    def normalize_state(self, x: torch.Tensor) -> torch.Tensor:
        c, h = self._affine("state", x)
        return (x - c) / h

    def normalize_action(self, x: torch.Tensor) -> torch.Tensor:
        c, h = self._affine("action", x)
        return (x - c) / h

    def unnormalize_action(self, x: torch.Tensor) -> torch.Tensor:
        c, h = self._affine("action", x)
        return x * h + c
