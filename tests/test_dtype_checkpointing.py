"""`--dtype` and `--gradient-checkpointing` on the tiny backbone: checkpointing changes no loss or gradient, bfloat16
trains on CPU with float32 head and adapters, checkpoints record their dtype and load in it, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mobile_vla_sim.cli import main
from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.errors import ConfigError, PolicyLoadError
from mobile_vla_sim.policies.checkpoint import load_checkpoint, read_checkpoint
from mobile_vla_sim.policies.config import auto_dtype
from mobile_vla_sim.policies.registry import load_policy
from mobile_vla_sim.policies.train import (FrameFeatures, TrainConfig, all_windows, batch_loss, build_model,
                                           load_episodes, train, window_batch)

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error given when CUDA is absent")


def _one_step(tiny_dataset, tmp_path, **options) -> tuple[float, dict[str, torch.Tensor], int]:
    """Loss, trainable gradients and vision-MLP calls of one LoRA training step on the first 6 windows."""
    cfg = TrainConfig(data=tiny_dataset, mode="lora", backbone="tiny", out=tmp_path / "x.ckpt", **options)
    episodes = load_episodes(EpisodeDataset(tiny_dataset, "train"), cfg.chunk)
    model = build_model(cfg, "diff", np.ones(2, np.float32)).train()
    calls = []
    model.backbone.model.vision_model.model.encoder.layers[0].mlp.register_forward_hook(lambda *_: calls.append(1))
    with torch.utils.checkpoint.set_checkpoint_early_stop(False):  # recompute whole layers, so the hook counts them
        loss = batch_loss(model, FrameFeatures(model, episodes, cache=False),
                          window_batch(episodes, all_windows(episodes)[:6], cfg.window))
        loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, len(calls)


def test_checkpointing_gives_the_same_loss_and_gradients(tiny_dataset, tmp_path):
    loss_off, grads_off, calls_off = _one_step(tiny_dataset, tmp_path, gradient_checkpointing="off")
    loss_on, grads_on, calls_on = _one_step(tiny_dataset, tmp_path, gradient_checkpointing="on")
    assert (calls_off, calls_on) == (1, 2)  # on: every layer runs again in backward
    assert loss_on == pytest.approx(loss_off, rel=1e-5)
    assert grads_on.keys() == grads_off.keys() and any("lora_" in n for n in grads_on)
    for name, grad in grads_off.items():
        assert "lora_A" in name or grad.abs().sum() > 0, name  # lora_B starts at 0, so lora_A's first grads are 0
        torch.testing.assert_close(grads_on[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_defaults_resolve_per_backbone_and_device(tiny_dataset):
    tiny = TrainConfig(data=tiny_dataset, mode="lora", backbone="tiny")
    full = TrainConfig(data=tiny_dataset, mode="lora")  # the hub id: nothing is loaded here
    assert (tiny.dtype, tiny.gradient_checkpointing) == ("float32", "off")
    assert (full.dtype, full.gradient_checkpointing) == ("float32", "on")  # float32: this is CPU
    assert TrainConfig(data=tiny_dataset).gradient_checkpointing == "off"  # frozen
    assert auto_dtype("microsoft/kosmos-2-patch14-224", "cuda:0") == "bfloat16"
    assert auto_dtype("tiny", "cuda") == auto_dtype("microsoft/kosmos-2-patch14-224", "cpu") == "float32"


def test_bfloat16_step_on_cpu_is_finite_with_float32_head_and_adapters(tiny_dataset, tmp_path):
    loss, grads, _ = _one_step(tiny_dataset, tmp_path, dtype="bfloat16")
    assert np.isfinite(loss) and all(torch.isfinite(g).all() for g in grads.values())
    assert {g.dtype for g in grads.values()} == {torch.float32}  # head, action token and LoRA adapters
    cfg = TrainConfig(data=tiny_dataset, mode="lora", backbone="tiny", dtype="bfloat16")
    model = build_model(cfg, "diff", np.ones(2, np.float32))
    assert model.backbone.dtype == torch.bfloat16
    assert {p.dtype for n, p in model.backbone.named_parameters() if "lora_" not in n} == {torch.bfloat16}


@pytest.mark.slow  # slow on 2 cores; CI runs it (.ci/run runs the slow tests)
def test_checkpoint_records_its_dtype_and_loads_in_it(tiny_dataset, tiny_checkpoints, tmp_path):
    path = tmp_path / "bf16.ckpt"
    result = train(TrainConfig(data=tiny_dataset, mode="lora", backbone="tiny", epochs=1, out=path,
                               dtype="bfloat16"), progress=False)
    assert np.isfinite(result.best_val_loss)
    assert read_checkpoint(path)[1]["dtype"] == "bfloat16"
    assert read_checkpoint(tiny_checkpoints["frozen"])[1]["dtype"] == "float32"
    model, _ = load_checkpoint(path)
    assert model.backbone.dtype == torch.bfloat16
    assert {p.dtype for n, p in model.backbone.named_parameters() if "lora_" in n} == {torch.float32}
    assert load_checkpoint(path, dtype="float32")[0].backbone.dtype == torch.float32
    image = EpisodeDataset(tiny_dataset, "val")[0].images[:1]
    actions = {}
    for dtype in (None, "float32"):
        policy = load_policy(str(path), dtype=dtype)
        policy.reset("Go around the box on the left.")
        actions[dtype] = policy.act_batch({"image": image}, [0])
        assert np.isfinite(actions[dtype]).all()
    np.testing.assert_allclose(actions[None], actions["float32"], atol=0.1)  # bfloat16 rounding, same weights


def test_one_line_errors(tiny_dataset, tiny_checkpoints, tmp_path):
    with pytest.raises(ConfigError, match="--dtype float16 needs --device cuda"):
        TrainConfig(data=tiny_dataset, dtype="float16")
    with pytest.raises(ConfigError, match="--gradient-checkpointing on applies only to --mode lora"):
        TrainConfig(data=tiny_dataset, gradient_checkpointing="on")
    with pytest.raises(ConfigError, match="--dtype float16 needs --device cuda"):
        load_checkpoint(tiny_checkpoints["frozen"], dtype="float16")
    with pytest.raises(PolicyLoadError, match="--dtype applies only to a .ckpt policy"):
        load_policy("expert", dtype="bfloat16")
    result = CliRunner().invoke(main, ["train", "--data", str(tiny_dataset), "--dtype", "float16"])
    assert result.exit_code == 1 and "--dtype float16 needs --device cuda" in result.output
    assert len(result.output.strip().splitlines()) == 1


@NO_CUDA
def test_cuda_without_cuda_is_a_one_line_error(tiny_dataset, tiny_checkpoints, tmp_path):
    with pytest.raises(ConfigError, match="no usable CUDA"):
        TrainConfig(data=tiny_dataset, device="cuda", dtype="bfloat16")
    with pytest.raises(ConfigError, match="no usable CUDA"):
        load_checkpoint(tiny_checkpoints["frozen"], "cuda")
    for command in (["train", "--data", str(tiny_dataset), "--device", "cuda", "--out", str(tmp_path / "a.ckpt")],
                    ["eval", "--policy", str(tiny_checkpoints["frozen"]), "--device", "cuda", "--episodes", "1",
                     "--out", str(tmp_path / "eval")]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1 and "--device cuda: this torch build has no usable CUDA" in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
