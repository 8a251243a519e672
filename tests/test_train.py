"""Training tiny frozen and LoRA policies: checkpoints reload and act, caching is exact, resume is exact, it learns."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from mobile_vla_sim.cli import main
from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.eval.offline import offline_metrics
from mobile_vla_sim.analysis.features import extract_features
from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint, read_checkpoint
from mobile_vla_sim.policies.train import TrainConfig, dataset_loss, train


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_checkpoint_reloads_and_acts_batched_and_single(tiny_checkpoints, tiny_dataset, mode):
    tensors, config = read_checkpoint(tiny_checkpoints[mode])
    assert config["mode"] == mode and config["drive"] == "diff" and np.isfinite(config["val_loss"])
    assert any("lora_" in k for k in tensors) == (mode == "lora")
    episode = EpisodeDataset(tiny_dataset, "val")[0]
    batched, single = load_policy_checkpoint(tiny_checkpoints[mode]), load_policy_checkpoint(tiny_checkpoints[mode])
    batched.reset(episode.instruction, slot=0)
    batched.reset("Navigate around the obstacle on the right side and reach the cup", slot=5)
    single.reset(episode.instruction)
    for t in range(3):
        images = np.stack([episode.images[t], episode.images[-1 - t]])
        actions = batched.act_batch({"image": images}, [0, 5])
        assert actions.shape == (2, 2) and actions.dtype == np.float32 and np.isfinite(actions).all()
        np.testing.assert_allclose(single.act({"image": episode.images[t]}), actions[0], atol=1e-5)
    with pytest.raises(ValueError, match="reset"):
        batched.act_batch({"image": images}, [0, 7])


def test_feature_cache_is_exact_and_faster(tiny_dataset, tmp_path):
    runs = {}
    for cache in (True, False):
        cfg = TrainConfig(data=tiny_dataset, mode="frozen", backbone="tiny", epochs=1, out=tmp_path / f"{cache}.ckpt",
                          cache_features=cache)
        runs[cache] = train(cfg, progress=False)
    assert runs[True].history[0]["train_loss"] == pytest.approx(runs[False].history[0]["train_loss"], rel=1e-5)
    assert runs[True].best_val_loss == pytest.approx(runs[False].best_val_loss, rel=1e-5)
    assert runs[True].history[0]["seconds"] < runs[False].history[0]["seconds"]


def test_interrupted_training_resumes_to_the_same_result(tiny_dataset, tmp_path):
    def interrupt(message: str) -> None:
        if message.startswith("epoch 1/"):
            raise KeyboardInterrupt

    cfg = TrainConfig(data=tiny_dataset, backbone="tiny", epochs=2, out=tmp_path / "a.ckpt", lr_head=1e-3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, log=interrupt)
    assert (tmp_path / "a.ckpt").is_file() and (tmp_path / "a.ckpt.resume.pt").is_file()
    messages: list[str] = []
    resumed = train(cfg, progress=False, log=messages.append)
    assert messages[0].startswith("resuming from epoch 1") and not (tmp_path / "a.ckpt.resume.pt").exists()
    straight = train(TrainConfig(**{**vars(cfg), "out": tmp_path / "b.ckpt"}), progress=False)
    assert [h["val_loss"] for h in resumed.history] == pytest.approx([h["val_loss"] for h in straight.history],
                                                                     rel=1e-6)
    with pytest.raises(ValueError, match="delete it"):
        (tmp_path / "c.ckpt.resume.pt").write_bytes((tmp_path / "a.ckpt").read_bytes())
        train(TrainConfig(**{**vars(cfg), "out": tmp_path / "c.ckpt"}), progress=False)


def test_trained_policy_beats_the_mean_action_on_val_rmse(tiny_dataset, tmp_path):
    cfg = TrainConfig(data=tiny_dataset, backbone="tiny", epochs=20, lr_head=1e-3, out=tmp_path / "f.ckpt")
    result = train(cfg, progress=False)
    train_ds, val = EpisodeDataset(tiny_dataset, "train"), EpisodeDataset(tiny_dataset, "val")
    mean = np.concatenate([train_ds[i].targets[1:] for i in range(len(train_ds))]).mean(0)[[0, 2]]
    val_targets = np.concatenate([val[i].targets[1:] for i in range(len(val))])[:, [0, 2]]
    constant_rmse = float(np.sqrt(((val_targets - mean) ** 2).mean()))
    policy = load_policy_checkpoint(cfg.out)
    loss, rmse = dataset_loss(policy.model, val), offline_metrics(policy, val).rmse
    assert loss == pytest.approx(result.best_val_loss, rel=1e-4)  # same objective as training's val loss
    assert rmse < 0.9 * constant_rmse, (rmse, constant_rmse)


def test_features_use_the_same_windows_for_any_checkpoint(tiny_checkpoints, tiny_dataset):
    val = EpisodeDataset(tiny_dataset, "val")
    a = extract_features(tiny_checkpoints["frozen"], val, max_windows=6, seed=1)
    b = extract_features(tiny_checkpoints["lora"], val, max_windows=6, seed=1)
    n, window = 6, 8
    assert a["context"].shape == (n, window, 64, 128) and a["action_token"].shape == (n, window, 128)
    assert a["h_n"].shape == (n, 128) and set(a["task"]) <= {"left", "right"}
    np.testing.assert_array_equal(a["episode"], b["episode"])
    np.testing.assert_array_equal(a["frame"], b["frame"])
    np.testing.assert_allclose(a["context"], b["context"], atol=1e-3)  # LoRA B starts at 0 and moved little
    assert not np.allclose(a["h_n"], b["h_n"])


def test_cli_train_and_its_errors(tiny_dataset, tmp_path):
    out = tmp_path / "cli.ckpt"
    ok = CliRunner().invoke(main, ["train", "--data", str(tiny_dataset), "--backbone", "tiny", "--epochs", "1",
                                   "--out", str(out), "--batch-size", "32"])
    assert ok.exit_code == 0, ok.output
    assert out.is_file() and "best val loss" in ok.output
    bad = CliRunner().invoke(main, ["train", "--data", str(tiny_dataset), "--backbone", "tiny", "--mode", "lora",
                                    "--lora-targets", "q_proj,qkv", "--out", str(tmp_path / "x.ckpt")])
    assert bad.exit_code != 0 and "qkv" in bad.output and "Traceback" not in bad.output
    missing = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "nope"), "--backbone", "tiny"])
    assert missing.exit_code != 0 and "generate" in missing.output
