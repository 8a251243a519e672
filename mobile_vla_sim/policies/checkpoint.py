"""One-file VLA checkpoints in safetensors format: tensors plus a JSON config in the header metadata.

Stored: action head, action token, normalisation scale, LoRA weights when present, and for the tiny backbones
(`tiny`, `tiny-pretrained`) their weights too, so a tiny checkpoint is self-contained. A hub/local backbone is
referenced by id or path.
Loading reads safetensors only; nothing is ever unpickled. A `.ckpt` that is a PyTorch Lightning checkpoint (the real
project's RoboVLMs policy, or `mvla-sim export-checkpoint` output) is handed to `policies.robovlms`, which reads it
with a restricted unpickler; `read_checkpoint_config` and `load_policy_checkpoint` accept both formats.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from mobile_vla_sim.version import __version__
from mobile_vla_sim.envs.actions import LAYOUT_DIMS
from mobile_vla_sim.errors import BackboneNotFoundError, CheckpointError, OutputError, require_file
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.policies.backbone import TINY_BACKBONES, load_backbone
from mobile_vla_sim.policies.config import DTYPES, check_device, check_dtype
from mobile_vla_sim.policies.vla import INFERENCE_BATCH, HeadConfig, LoraSettings, VLAModel
from mobile_vla_sim.policies.vla_policy import VLAPolicy

FORMAT = "mobile-vla-sim/vla"
FORMAT_VERSION = 1
_BACKBONE = "backbone."


def _backbone_tensors(model: VLAModel) -> dict[str, torch.Tensor]:
    """All backbone weights for a tiny backbone (self-contained), else only the LoRA adapters (base: from its id)."""
    state = model.backbone.model.state_dict()
    keep = (lambda k: True) if model.backbone.spec in TINY_BACKBONES else (lambda k: "lora_" in k)
    return {_BACKBONE + k: v for k, v in state.items() if keep(k)}


def _tensors(model: VLAModel) -> dict[str, torch.Tensor]:
    """Every tensor a checkpoint of `model` holds, by its name in the file."""
    return {"action_token": model.action_token, "scale": model.scale,
            **{"head." + k: v for k, v in model.head.state_dict().items()}, **_backbone_tensors(model)}


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                   complete: bool = True) -> None:
    """One-line `CheckpointError` for the first `expected` tensor that is missing or mis-shaped, and, when
    `expected` is `complete`, for tensors it does not name."""
    for name, shape in expected.items():
        if name not in tensors:
            problem = f"tensor {name!r} is missing"
        elif tuple(tensors[name].shape) != shape:
            problem = f"tensor {name!r} has shape {list(tensors[name].shape)}, expected {list(shape)}"
        else:
            continue
        raise CheckpointError(f"{path} does not fit its own config: {problem}; re-train it with `mvla-sim train`")
    extra = sorted(set(tensors) - set(expected)) if complete else []
    if extra:
        raise CheckpointError(f"{path} does not fit its own config: {len(extra)} unexpected tensor(s) ({extra[0]!r}"
                              f"{', ...' if len(extra) > 1 else ''}); re-train it with `mvla-sim train`")


def save_checkpoint(path: str | os.PathLike, model: VLAModel, info: dict[str, Any]) -> Path:
    """Write `model` and `info` (mode, losses, epoch, drive...) to `path` atomically."""
    path = Path(path)
    tensors = _tensors(model)
    config = {
        "format_version": FORMAT_VERSION, "package_version": __version__, "backbone": model.backbone.spec,
        "dtype": str(model.backbone.dtype).removeprefix("torch."),
        "head": {**vars(model.head_cfg), "dims": list(model.head_cfg.dims)},
        "lora": model.lora.to_dict() if model.lora else None, "scale": model.scale.tolist(), **info,
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return _write(path, tensors, config)


def _write(path: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Serialise in memory, then write atomically with plain file I/O: a full disk is a one-line `OutputError`
    (safetensors' own writer reports it as a SafetensorError) and the previous file stays whole."""
    data = save(tensors, metadata={"format": FORMAT, "config": json.dumps(config)})
    try:
        return atomic_write(path, data)
    except OSError as err:
        raise OutputError(f"cannot write checkpoint {path} ({err.strerror or err}); free space (or choose another "
                          "--out) and run the same command again to resume") from None


def finish_checkpoint(path: str | os.PathLike) -> Path:
    """Mark the checkpoint of a completed training run as such (`finished: true` in its config): a run killed
    after writing a checkpoint but before its resume state leaves one marked unfinished, never taken for done."""
    path = Path(path)
    tensors, config = read_checkpoint(path)
    return _write(path, tensors, {**config, "finished": True})


def _open(path: Path):
    """The checkpoint file opened lazily (tensors are read on demand), or a one-line `CheckpointError`."""
    require_file(path, "checkpoint", f"train one with `mvla-sim train --out {path}`", CheckpointError)
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a safetensors file or is corrupt ({str(exc).splitlines()[0][:80]}); "
                              "re-train it with `mvla-sim train` (raw pickles are never loaded; a PyTorch Lightning "
                              ".ckpt is read as data only)") from exc


def _config(path: Path, metadata: dict[str, str] | None) -> dict[str, Any]:
    """The validated config of a checkpoint's metadata."""
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a mobile-vla-sim VLA checkpoint "
                              f"(format {metadata.get('format')!r}); use a file written by `mvla-sim train`")
    try:
        config = json.loads(metadata["config"])
        if not isinstance(config, dict):
            raise TypeError(f"a {type(config).__name__}, not a mapping")
        missing = [k for k in ("backbone", "head", "lora", "drive", "mode") if k not in config]
        if missing:
            raise KeyError(", ".join(missing))
        for key, kind in (("backbone", str), ("head", dict), ("lora", (dict, type(None))), ("drive", str),
                          ("mode", str)):
            if not isinstance(config[key], kind):
                raise TypeError(f"{key} is {config[key]!r}")
        if not isinstance(config.get("dataset_config", {}), dict):
            raise TypeError(f"dataset_config is {config['dataset_config']!r}")
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has a damaged config ({str(exc)[:120]}); re-train it with `mvla-sim "
                              "train`") from exc
    return config


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config of a checkpoint (ours or a Lightning one), validated, without reading its tensors."""
    path = Path(path)
    if is_lightning_checkpoint(path):
        from mobile_vla_sim.policies.robovlms import read_lightning_config

        return read_lightning_config(path)
    with _open(path) as f:
        return _config(path, f.metadata())


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and config of a checkpoint, validated; one-line `CheckpointError` otherwise."""
    path = Path(path)
    with _open(path) as f:
        config = _config(path, f.metadata())
        try:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is corrupt ({str(exc).splitlines()[0][:80]}); re-train it with "
                                  "`mvla-sim train`") from exc
    return tensors, config


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str | None = None
                    ) -> tuple[VLAModel, dict[str, Any]]:
    """Rebuild the `VLAModel` of a checkpoint (in eval mode) and return it with its config.

    The backbone runs in `dtype`, by default the one it was trained in (float32 for checkpoints older than the
    `dtype` record).
    """
    tensors, config = read_checkpoint(path)
    device = check_device(str(device))
    dtype = dtype or config.get("dtype", "float32")
    if dtype not in DTYPES:
        raise CheckpointError(f"{path} records backbone dtype {dtype!r}, not one of {', '.join(DTYPES)}; pass "
                              "--dtype float32 (or bfloat16) to override it")
    check_dtype(dtype, device)
    try:
        backbone = load_backbone(config["backbone"], device, dtype)
    except BackboneNotFoundError as exc:
        raise CheckpointError(f"{path} needs backbone {config['backbone']!r}, which cannot be loaded: {exc}") from exc
    try:
        head_cfg = HeadConfig(**config["head"])
        if tuple(head_cfg.dims) != LAYOUT_DIMS.get(config["drive"]):
            raise CheckpointError(f"{path}: head dims {head_cfg.dims} do not match drive {config['drive']!r}")
        _check_tensors(path, tensors, {"scale": (len(head_cfg.dims),)}, complete=False)
        model = VLAModel(backbone, head_cfg, tensors["scale"])
        if config["lora"]:
            model.add_lora(LoraSettings(**config["lora"]))
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:  # CheckpointError is a ValueError: kept as is
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path} has a damaged head or LoRA config ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); re-train it with "
                              "`mvla-sim train`") from exc
    _check_tensors(path, tensors, {name: tuple(t.shape) for name, t in _tensors(model).items()})
    model.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    model.action_token.data.copy_(tensors["action_token"])
    model.backbone.model.load_state_dict({k[len(_BACKBONE):]: v for k, v in tensors.items()
                                          if k.startswith(_BACKBONE)}, strict=False)
    model.requires_grad_(False)
    return model.to(device).eval(), config


def load_policy_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                           batch: int = INFERENCE_BATCH, dtype: str | None = None) -> VLAPolicy:
    """The evaluation `Policy` of a checkpoint, ours or a Lightning one; `batch`: rows of every (fixed-shape)
    inference call; `dtype`: the backbone's, by default the trained one."""
    if is_lightning_checkpoint(Path(path)):
        from mobile_vla_sim.policies.robovlms import load_lightning_policy

        return load_lightning_policy(path, device, batch, dtype)
    return VLAPolicy(*load_checkpoint(path, device, dtype), batch=batch)


def is_lightning_checkpoint(path: Path) -> bool:
    """Whether `path` is a torch zip archive (what `torch.save` and PyTorch Lightning write), by its first bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:  # missing, a directory...: the safetensors reader says so in its own words
        return False
