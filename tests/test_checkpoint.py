"""Checkpoints are safetensors only: round trip, and one-line errors for every kind of bad file."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from mobile_vla_sim.policies.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint


class _Exploit:
    """Unpickling this would create a file: proof that loading never unpickles."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_round_trip_is_exact(tiny_checkpoints, tmp_path):
    model, config = load_checkpoint(tiny_checkpoints["lora"])
    again, config2 = load_checkpoint(save_checkpoint(tmp_path / "copy.ckpt", model, {
        k: config[k] for k in ("mode", "drive", "val_loss")}))
    assert config2["lora"] == config["lora"] and config2["backbone"] == "tiny"
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*mvla-sim train"):
        read_checkpoint(tmp_path / "none.ckpt")


def test_pickle_is_rejected_without_being_unpickled(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"head": _Exploit(str(marker))}))
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
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path)
