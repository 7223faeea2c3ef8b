"""Checkpoints (safetensors + JSON) and presets: round trips, and errors that name what is wrong."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from backend.model.checkpoint import (
    CONFIG_FILE,
    EMA_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    load_training_state,
    load_weights,
    read_config,
    save_checkpoint,
)
from backend.model.presets import MODEL_PRESETS, ModelConfig, get_preset


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _save(path, net: nn.Module, **kw):
    return save_checkpoint(path, {"preset": "test"}, net.state_dict(), **kw)


def test_round_trip_with_optimizer_and_rng(tmp_path) -> None:
    torch.manual_seed(0)
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(3, 4)).sum().backward()
    opt.step()
    _save(
        tmp_path / "ckpt",
        net,
        ema_state=net.state_dict(),
        optimizers=[opt],
        train_state={"step": 7},
    )
    expected_rand = torch.rand(3)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(
        [CONFIG_FILE, MODEL_FILE, EMA_FILE, OPTIMIZER_FILE, "train_state.json"]
    )
    assert "code_version" in read_config(tmp_path / "ckpt")

    other = _net()
    load_weights(other, tmp_path / "ckpt" / MODEL_FILE)
    for a, b in zip(net.parameters(), other.parameters()):
        assert torch.equal(a, b)
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-3)
    torch.manual_seed(123)
    state = load_training_state(tmp_path / "ckpt", [opt2])
    assert state["step"] == 7
    assert torch.equal(torch.rand(3), expected_rand)  # RNG restored to where it was saved
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt2.state_dict()["state"][0][k]))


def test_wrong_shape_names_the_tensor(tmp_path) -> None:
    _save(tmp_path / "c", nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)))
    with pytest.raises(
        ValueError, match=r"'0.weight' has shape \(16, 4\), the model expects \(8, 4\)"
    ):
        load_weights(_net(), tmp_path / "c" / MODEL_FILE)


def test_missing_and_unexpected_tensors_are_listed(tmp_path) -> None:
    _save(tmp_path / "c", nn.Sequential(nn.Linear(4, 8)))
    with pytest.raises(ValueError, match=r"2 tensors missing, e.g. \['2.weight', '2.bias'\]"):
        load_weights(_net(), tmp_path / "c" / MODEL_FILE)


def test_missing_file_is_named(tmp_path) -> None:
    _save(tmp_path / "c", _net())
    (tmp_path / "c" / MODEL_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"c/model.safetensors is missing"):
        load_weights(_net(), tmp_path / "c" / MODEL_FILE)
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        read_config(tmp_path / "nowhere")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file_is_named(tmp_path, damage: str) -> None:
    _save(tmp_path / "c", _net())
    path = tmp_path / "c" / MODEL_FILE
    data = path.read_bytes()
    path.write_bytes(
        b"\x00not a safetensors file" if damage == "garbage" else data[: len(data) // 2]
    )
    with pytest.raises(ValueError, match=r"model.safetensors is corrupt or not a safetensors file"):
        load_weights(_net(), path)


def test_non_finite_tensor_is_named(tmp_path) -> None:
    net = _net()
    with torch.no_grad():
        net[2].bias[1] = float("nan")
    _save(tmp_path / "c", net)
    with pytest.raises(ValueError, match=r"tensor '2.bias' has NaN or infinite values"):
        load_weights(_net(), tmp_path / "c" / MODEL_FILE)


def test_bad_config_json(tmp_path) -> None:
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        read_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{}")
    with pytest.raises(ValueError, match="no 'preset' entry"):
        read_config(tmp_path)


def test_optimizer_state_must_fit(tmp_path) -> None:
    net = _net()
    _save(tmp_path / "c", net, optimizers=[torch.optim.AdamW(net.parameters())])
    fewer = torch.optim.AdamW(list(net.parameters())[:2])
    with pytest.raises(ValueError, match="for 4 parameters, this run optimises 2"):
        load_training_state(tmp_path / "c", [fewer])


# ---- presets -------------------------------------------------------------------------------


def test_presets_round_trip_and_did_you_mean() -> None:
    for cfg in MODEL_PRESETS.values():
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        get_preset("tiyn")
    with pytest.raises(ValueError, match="out_channels 16 != VAE z_dim 8"):
        replace(get_preset("tiny"), vae=replace(get_preset("tiny").vae, z_dim=8))


def test_wan14b_on_the_meta_device() -> None:
    """The paper's scale instantiates without memory: a Wan2.1-14B video tower plus a Qwen3.5 stack."""
    from backend.model.denoiser import video_tower_parameters
    from backend.model.wam import WorldActionModel

    with torch.device("meta"):
        model = WorldActionModel(get_preset("wan14b"))
    n_video = video_tower_parameters(model.denoiser)
    assert 13.5e9 < n_video < 15.0e9, n_video  # Wan2.1-14B
    assert (
        model.vlm.hidden_size == 4096 and len(model.vlm.decoder.layers) == 32
    )  # Qwen3.5-9B text stack
    assert sum(p.numel() for p in model.vae.parameters()) == pytest.approx(
        127e6, rel=0.02
    )  # Wan2.1 VAE
    assert model.denoiser.patch_embedding.weight.is_meta


# ---- the whole model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from backend.model.wam import WorldActionModel

    torch.manual_seed(0)
    model = WorldActionModel(get_preset("tiny")).eval()
    path = tmp_path_factory.mktemp("wam") / "checkpoint"
    save_checkpoint(path, {**model.checkpoint_config(), "stage": "denoiser"}, model.state_dict())
    return model, path


def test_model_round_trip(saved_model) -> None:
    from backend.model.wam import WorldActionModel

    model, path = saved_model
    loaded = WorldActionModel.from_checkpoint(path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.normalizer.action_max, model.normalizer.action_max)


def test_model_with_a_different_config_names_the_mismatch(saved_model, tmp_path) -> None:
    import shutil

    from backend.model.wam import WorldActionModel

    _, path = saved_model
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    cfg = json.loads((bad / CONFIG_FILE).read_text())
    cfg["model"]["denoiser"]["ffn_dim"] = 512
    (bad / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError,
        match=r"'denoiser.blocks.0.ffn.0.weight' has shape \(768, 192\), the model expects \(512, 192\)",
    ):
        WorldActionModel.from_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WorldActionModel.from_checkpoint(tmp_path / "nothing")


def test_export_keeps_the_ema_weights_in_half_precision(tmp_path) -> None:
    from backend.model.checkpoint import export_checkpoint, load_tensors

    torch.manual_seed(0)
    net, ema = _net(), _net()
    save_checkpoint(
        tmp_path / "ckpt",
        {"preset": "test", "stage": "denoiser"},
        net.state_dict(),
        ema.state_dict(),
        [torch.optim.AdamW(net.parameters())],
        {"step": 1},
    )
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "shipped")
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, EMA_FILE]  # no optimizer state
    tensors = load_tensors(out / EMA_FILE)
    assert tensors["0.weight"].dtype == torch.float16 and tensors["0.bias"].dtype == torch.float32
    torch.testing.assert_close(
        tensors["0.weight"].float(), ema.state_dict()["0.weight"], atol=1e-3, rtol=1e-3
    )
    cfg = read_config(out)
    assert cfg["stage"] == "denoiser" and cfg["weights_dtype"] == "float16"
    loaded = _net()
    load_weights(loaded, out / EMA_FILE)  # half matrices load into a float32 model
    assert loaded[0].weight.dtype == torch.float32


def test_export_can_set_the_default_guidance(tmp_path) -> None:
    from backend.model.checkpoint import export_checkpoint

    net = _net()
    config = {"preset": "test", "stage": "denoiser", "model": {"guidance_scale": 3.0}}
    save_checkpoint(tmp_path / "ckpt", config, net.state_dict(), None, [], {"step": 1})
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "shipped", guidance_scale=1.0)
    assert read_config(out)["model"]["guidance_scale"] == 1.0
    assert read_config(tmp_path / "ckpt")["model"]["guidance_scale"] == 3.0  # source untouched
    with pytest.raises(ValueError, match="guidance_scale"):
        export_checkpoint(tmp_path / "ckpt", tmp_path / "bad", guidance_scale=-1.0)
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "four", imagine_futures=4)
    assert read_config(out)["model"]["imagine_futures"] == 4
    with pytest.raises(ValueError, match="imagine_futures"):
        export_checkpoint(tmp_path / "ckpt", tmp_path / "bad", imagine_futures=0)
