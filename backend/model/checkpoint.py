"""Checkpoints: safetensors tensors + JSON, never pickle.

A checkpoint is a directory:

    config.json              preset, full model config, recipe, stage, normaliser stats,
                             camera set, code version, step
    model.safetensors        model weights
    ema.safetensors          EMA weights (what inference uses), when training kept them
    optimizer.safetensors    optimizer tensors + torch RNG state       } for `--resume`
    train_state.json         optimizer structure, step, numpy/python RNG }

Loading checks every tensor against the model and names what is wrong: the file, the
tensor, the shape it has and the shape the model wants; a missing file, a file that is not
safetensors, and a tensor with NaN/inf values are refused the same way.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAIN_STATE_FILE = "train_state.json"


def code_version() -> str:
    """Package version plus the git commit when run from a checkout (best effort)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("wallwm-studio")
    except PackageNotFoundError:
        v = "unknown"
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{v}+{sha}" if sha else v
    except (OSError, subprocess.SubprocessError):
        return v


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing")
    return path


def read_config(directory: str | Path) -> dict:
    path = _require(Path(directory) / CONFIG_FILE)
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"checkpoint file {path} is not valid JSON: {e}") from e
    if not isinstance(cfg, dict) or "preset" not in cfg:
        raise ValueError(
            f"checkpoint file {path} has no 'preset' entry; is it a wallwm checkpoint?"
        )
    return cfg


def load_tensors(path: str | Path, check_finite: bool = True) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; refuses unreadable files and non-finite tensors by name."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _require(Path(path))
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"checkpoint file {path} is corrupt or not a safetensors file: {e}") from e
    if check_finite:
        for name, t in tensors.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(
                    f"checkpoint file {path}: tensor {name!r} has NaN or infinite values"
                )
    return tensors


def check_state(
    module: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    source: str | Path,
    fresh: Sequence[str] = (),
) -> None:
    """Refuse a state dict that does not fit `module` exactly, listing what differs.

    `fresh`: name prefixes of parts the module adds to the checkpoint (they keep their init).
    """
    expected = module.state_dict()
    problems = []
    wrong = [
        f"{k!r} has shape {tuple(tensors[k].shape)}, the model expects {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if wrong:
        problems.append(
            "wrong shapes: "
            + "; ".join(wrong[:5])
            + (f" (+{len(wrong) - 5} more)" if len(wrong) > 5 else "")
        )
    missing = [k for k in expected if k not in tensors and not k.startswith(tuple(fresh))]
    if missing:
        problems.append(f"{len(missing)} tensors missing, e.g. {missing[:3]}")
    extra = [k for k in tensors if k not in expected]
    if extra:
        problems.append(f"{len(extra)} unexpected tensors, e.g. {extra[:3]}")
    if problems:
        raise ValueError(f"checkpoint {source} does not fit the model: " + " | ".join(problems))


def load_weights(
    module: nn.Module, path: str | Path, prefix: str = "", fresh: Sequence[str] = ()
) -> None:
    """Load a safetensors file into `module` after checking names, shapes and values.

    `prefix`: load only the file's tensors under this prefix (stripped), e.g. "vae." for the
    autoencoder of a whole-model checkpoint. `fresh`: name prefixes of new parts the file may
    lack or that start fresh (e.g. "denoiser.obs_keypoints." when a run adds keypoints to a
    trained model); the file's tensors under them are not loaded.
    """
    tensors = load_tensors(path)
    if prefix:
        tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if fresh:  # a part that starts fresh keeps its init even where the file has a version of it
        tensors = {k: v for k, v in tensors.items() if not k.startswith(tuple(fresh))}
    check_state(module, tensors, path, fresh)
    module.load_state_dict(tensors, strict=not fresh)


def _contiguous(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _optimizer_payload(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (safetensors) and structure (JSON)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"state/{idx}/{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_state(tensors: Mapping[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    groups = [
        {k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Torch RNG as tensors, numpy/python RNG as JSON."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"rng/torch": torch.get_rng_state()}, {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(tensors: Mapping[str, torch.Tensor], meta: dict) -> None:
    if "rng/torch" in tensors:
        torch.set_rng_state(tensors["rng/torch"])
    if "numpy" in meta:
        s = meta["numpy"]
        np.random.set_state((s[0], np.asarray(s[1], dtype=np.uint32), *s[2:]))
    if "python" in meta:
        s = meta["python"]
        random.setstate((s[0], tuple(s[1]), s[2]))


def save_checkpoint(
    directory: str | Path,
    config: dict,
    model_state: Mapping[str, torch.Tensor],
    ema_state: Mapping[str, torch.Tensor] | None = None,
    optimizers: Sequence[torch.optim.Optimizer] = (),
    train_state: dict | None = None,
) -> Path:
    """Write a checkpoint directory atomically (a half-written one never has the final name)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / CONFIG_FILE).write_text(
        json.dumps({**config, "code_version": code_version()}, indent=2) + "\n"
    )
    save_file(_contiguous(model_state), str(tmp / MODEL_FILE))
    if ema_state is not None:
        save_file(_contiguous(ema_state), str(tmp / EMA_FILE))
    if optimizers:
        tensors, metas = {}, []
        for i, opt in enumerate(optimizers):
            opt_tensors, opt_meta = _optimizer_payload(opt)
            tensors |= {f"opt{i}/{k}": v for k, v in opt_tensors.items()}
            metas.append(opt_meta)
        rng_tensors, rng_meta = rng_state()
        save_file(_contiguous({**tensors, **rng_tensors}), str(tmp / OPTIMIZER_FILE))
        payload = {"optimizers": metas, "rng": rng_meta, **(train_state or {})}
        (tmp / TRAIN_STATE_FILE).write_text(json.dumps(payload) + "\n")
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, old)  # keep the previous checkpoint until the new one is in place
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def export_checkpoint(
    directory: str | Path,
    out: str | Path,
    half: bool = True,
    guidance_scale: float | None = None,
    imagine_futures: int | None = None,
) -> Path:
    """An inference-only copy of a checkpoint: its config and EMA weights (else its raw weights),
    matrices in float16 when `half` (vectors and buffers stay float32), no optimizer state;
    `guidance_scale` replaces the default classifier-free guidance in its config, and
    `imagine_futures` the futures one imagination averages.

    What the studio and evaluation load, small enough to ship in the repository.
    """
    from safetensors.torch import save_file

    directory, out = Path(directory), Path(out)
    config = read_config(directory)
    source = directory / (EMA_FILE if (directory / EMA_FILE).exists() else MODEL_FILE)
    tensors = load_tensors(source)
    if half:
        tensors = {
            k: v.half() if v.is_floating_point() and v.ndim >= 2 else v for k, v in tensors.items()
        }
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if guidance_scale is not None:
        if not guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        config["model"] = {**config["model"], "guidance_scale": float(guidance_scale)}
    if imagine_futures is not None:
        from backend.model.presets import MAX_FUTURES

        if not 1 <= imagine_futures <= MAX_FUTURES:
            raise ValueError(
                f"imagine_futures must be in [1, {MAX_FUTURES}], got {imagine_futures}"
            )
        config["model"] = {**config["model"], "imagine_futures": int(imagine_futures)}
    config = {
        **config,
        "exported_from": str(directory),
        "weights_dtype": "float16" if half else "float32",
    }
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file(_contiguous(tensors), str(tmp / EMA_FILE))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def keep_checkpoint(directory: str | Path, copy_to: str | Path) -> Path:
    """A step-numbered copy of a checkpoint's weights and config (no optimizer state), kept for curves."""
    directory, copy_to = Path(directory), Path(copy_to)
    tmp = copy_to.with_name(copy_to.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in (CONFIG_FILE, MODEL_FILE, EMA_FILE):
        if (directory / name).exists():
            shutil.copy2(directory / name, tmp / name)
    shutil.rmtree(copy_to, ignore_errors=True)
    os.replace(tmp, copy_to)
    return copy_to


def load_training_state(directory: str | Path, optimizers: Sequence[torch.optim.Optimizer]) -> dict:
    """Restore optimizers and RNG from a checkpoint; returns the rest of train_state.json."""
    directory = Path(directory)
    tensors = load_tensors(directory / OPTIMIZER_FILE)
    path = _require(directory / TRAIN_STATE_FILE)
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint file {path} is not valid JSON: {e}") from e
    metas = meta.get("optimizers", [])
    if len(metas) != len(optimizers):
        raise ValueError(
            f"checkpoint file {path} holds {len(metas)} optimizer states, this run has {len(optimizers)}"
        )
    for i, (opt, opt_meta) in enumerate(zip(optimizers, metas)):
        prefix = f"opt{i}/"
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        state = _optimizer_state(own, opt_meta)
        n_ckpt = sum(len(g["params"]) for g in state["param_groups"])
        n_model = sum(len(g["params"]) for g in opt.param_groups)
        if n_ckpt != n_model:
            raise ValueError(
                f"checkpoint file {directory / OPTIMIZER_FILE} holds optimizer state for {n_ckpt} "
                f"parameters, this run optimises {n_model} (different stage or preset?)"
            )
        opt.load_state_dict(state)
    set_rng_state(tensors, meta.get("rng", {}))
    return {k: v for k, v in meta.items() if k not in ("optimizers", "rng")}
