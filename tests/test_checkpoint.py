"""Checkpoints are safetensors only: round trip, and one-line errors for every kind of bad file."""

from __future__ import annotations

import json
import pickle
import re

import pytest
import torch
from safetensors.torch import save_file

from mobile_vla_sim.policies.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from mobile_vla_sim.policies.registry import load_policy


def test_round_trip_is_exact(tiny_checkpoints, tmp_path):
    model, config = load_checkpoint(tiny_checkpoints["lora"])
    again, config2 = load_checkpoint(save_checkpoint(tmp_path / "copy.ckpt", model, {
        k: config[k] for k in ("mode", "drive", "val_loss")}))
    assert config2["lora"] == config["lora"] and config2["backbone"] == "tiny"
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_file_or_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*mvla-sim train"):
        read_checkpoint(tmp_path / "none.ckpt")
    (tmp_path / "x.ckpt").mkdir()
    with pytest.raises(CheckpointError, match="x.ckpt is a directory, not a file"):
        load_policy(str(tmp_path / "x.ckpt"))


def test_pickle_is_rejected_without_being_unpickled(tmp_path, exploit):
    payload, marker = exploit
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"head": payload}))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)
    torch.save({"head.weight": torch.zeros(2)}, tmp_path / "torch.ckpt")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(tmp_path / "torch.ckpt")
    assert not marker.exists()


def test_truncated_checkpoint(tiny_checkpoints, tmp_path):
    path = tmp_path / "cut.ckpt"
    path.write_bytes(tiny_checkpoints["frozen"].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_foreign_safetensors_file(tmp_path):
    save_file({"w": torch.zeros(3)}, str(tmp_path / "other.ckpt"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a mobile-vla-sim"):
        load_checkpoint(tmp_path / "other.ckpt")


def _rewrite(src, dst, **changes):
    tensors, config = read_checkpoint(src)
    save_file(tensors, str(dst), metadata={"format": "mobile-vla-sim/vla", "config": json.dumps({**config, **changes})})
    return dst


def test_unavailable_backbone_says_which_and_how(tiny_checkpoints, tmp_path):
    path = _rewrite(tiny_checkpoints["frozen"], tmp_path / "hub.ckpt", backbone=str(tmp_path / "kosmos-2-local"))
    with pytest.raises(CheckpointError, match=r"(?s)needs backbone .*kosmos-2-local.*tiny"):
        load_checkpoint(path)


def test_config_that_does_not_fit_the_weights(tiny_checkpoints, tmp_path):
    tensors, config = read_checkpoint(tiny_checkpoints["frozen"])
    path = _rewrite(tiny_checkpoints["frozen"], tmp_path / "bad.ckpt", head={**config["head"], "hidden": 7})
    with pytest.raises(CheckpointError, match=r"does not fit its own config: tensor 'head\..*' has shape"):
        load_checkpoint(path)


@pytest.mark.parametrize("mode", ["frozen", "lora"])
@pytest.mark.parametrize("change", ["drop", "reshape", "extra"])
def test_every_missing_or_misshaped_tensor_is_one_line(tiny_checkpoints, tmp_path, mode, change):
    """Each kind of damage to each tensor name gives a CheckpointError naming it (never a KeyError)."""
    tensors, config = read_checkpoint(tiny_checkpoints[mode])
    names = ["scale", "action_token", next(k for k in tensors if k.startswith("head.")),
             next(k for k in tensors if "lora_" in k or (mode == "frozen" and k.startswith("backbone.")))]
    metadata = {"format": "mobile-vla-sim/vla", "config": json.dumps(config)}
    for name in names:
        damaged = dict(tensors)
        if change == "drop":
            del damaged[name]
        elif change == "reshape":
            damaged[name] = torch.ones(tensors[name].numel() + 1)
        else:
            damaged[name.replace(".", "_") + "_extra"] = torch.ones(1)
        save_file(damaged, str(tmp_path / "damaged.ckpt"), metadata=metadata)
        pattern = {"drop": f"'{name}' is missing", "reshape": f"'{name}' has shape", "extra": "1 unexpected tensor"}
        with pytest.raises(CheckpointError, match=f"does not fit its own config: .*{re.escape(pattern[change])}") \
                as err:
            load_checkpoint(tmp_path / "damaged.ckpt")
        assert "\n" not in str(err.value)
