"""One validation split (`datasets.splits`) for train, compare and offline metrics: same episodes everywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.datasets.splits import split_entries
from mobile_vla_sim.errors import NoEpisodesError


def entry(i: int, split: str = "train", success: bool = True, pair: bool = True) -> dict:
    """Manifest-style entry; with `pair`, episodes 2k (left) and 2k+1 (right) share scene seed k."""
    side = ("left", "right")[i % 2]
    return {"file": f"episode_20250101_0000{i:02d}_1box_hori_{side}_core_medium_easy_{i:06d}.h5",
            "seed": i // 2 if pair else i, "task": side, "split": split, "success": success}


def test_hash_split_is_used_when_it_has_val_and_train_episodes():
    entries = [entry(i, "val" if i in (2, 3) else "train") for i in range(8)]
    plan = split_entries(entries)
    assert plan.val == (2, 3) and plan.train == (0, 1, 4, 5, 6, 7) and plan.note is None


@pytest.mark.parametrize("n", [4, 5, 12, 40])
def test_fallback_holds_out_both_sides_keeps_pairs_and_is_deterministic(n):
    entries = [entry(i) for i in range(n)]  # the hash split gave no val episode
    plan = split_entries(entries, source="data/x")
    assert plan == split_entries([dict(e) for e in entries], source="data/x") and "no val" in plan.note
    assert {entries[i]["task"] for i in plan.val} == {"left", "right"}
    assert len(plan.val) >= round(0.15 * n) and plan.train and set(plan.val).isdisjoint(plan.train)
    assert sorted(plan.val + plan.train) == list(range(n))
    val_seeds = {entries[i]["seed"] for i in plan.val}
    assert val_seeds.isdisjoint(entries[i]["seed"] for i in plan.train)  # a scene pair is never split


def test_fallback_reaches_for_the_missing_side_and_drops_failed_demos():
    entries = [entry(i, pair=False) for i in range(6)]  # no pairs: every scene holds one side
    entries.append(entry(6, success=False))
    plan = split_entries(entries)
    assert 6 not in plan.val + plan.train
    assert {entries[i]["task"] for i in plan.val} == {"left", "right"}
    all_val = [entry(i, "val") for i in range(4)]  # no train episode: the fallback too
    assert "no train" in split_entries(all_val).note and split_entries(all_val).train
    assert split_entries([entry(0), entry(1)]).val in ((0,), (1,))  # a lone pair has to be split
    with pytest.raises(NoEpisodesError, match="at least 2"):
        split_entries([entry(0), entry(1, success=False)])


@pytest.fixture(scope="module")
def no_val_dataset(tiny_dataset, tmp_path_factory) -> Path:
    """`tiny_dataset` made with another seed: 12 easy episodes (6 scene pairs) whose hash split has no val episode."""
    from mobile_vla_sim.config import build
    from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset

    out = tmp_path_factory.mktemp("data") / "no_val"
    config = json.loads((tiny_dataset / "dataset.json").read_text())["config"]
    generate_dataset(build(GenerateConfig, dict(episodes=12, out=out, difficulty="easy",
                                                image_size=config["image_size"], workers=1, seed=2)), progress=False)
    episodes = json.loads((out / "dataset.json").read_text())["episodes"]
    assert len(episodes) == 12 and all(e["split"] == "train" for e in episodes)
    return out


@pytest.fixture(scope="module")
def failed_demo_dataset(tiny_dataset, tmp_path_factory) -> Path:
    """`tiny_dataset` with one val demonstration marked as failed by the expert."""
    out = tmp_path_factory.mktemp("data") / "failed"
    shutil.copytree(tiny_dataset, out)
    manifest = json.loads((out / "dataset.json").read_text())
    next(e for e in manifest["episodes"] if e["split"] == "val")["success"] = False
    (out / "dataset.json").write_text(json.dumps(manifest))
    return out


def test_tiny_dataset_has_a_hash_val_split(tiny_dataset):
    manifest = json.loads((tiny_dataset / "dataset.json").read_text())
    assert len(manifest["episodes"]) == 12 and any(e["split"] == "val" for e in manifest["episodes"])
    assert EpisodeDataset(tiny_dataset, "val").note is None


@pytest.mark.parametrize("dataset", ["tiny_dataset", pytest.param("no_val_dataset", marks=pytest.mark.slow),
                                     pytest.param("failed_demo_dataset", marks=pytest.mark.slow)])
def test_train_compare_and_offline_metrics_use_the_same_val_episodes(dataset, request, tiny_checkpoints, tmp_path):
    from mobile_vla_sim.analysis.compare import CompareConfig, compare
    from mobile_vla_sim.eval.offline import offline_metrics
    from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint, read_checkpoint
    from mobile_vla_sim.policies.train import TrainConfig, train

    data = request.getfixturevalue(dataset)
    manifest = json.loads((data / "dataset.json").read_text())
    failed = {Path(e["file"]).stem for e in manifest["episodes"] if e["success"] is False}
    val = EpisodeDataset(data, "val")
    assert val.names and failed.isdisjoint(val.names + EpisodeDataset(data, "train").names)
    assert {e["task"] for e in val.entries} == {"left", "right"}
    if dataset == "tiny_dataset":  # the shared checkpoints were trained on it
        ckpt = tiny_checkpoints["frozen"]
    else:
        ckpt = tmp_path / "f.ckpt"
        result = train(TrainConfig(data=data, backbone="tiny", epochs=1, out=ckpt), progress=False)
        assert result.val_episodes == val.names and result.best_val_loss > 0
    assert read_checkpoint(ckpt)[1]["val_episodes"] == val.names

    report = compare(CompareConfig(checkpoint_a=ckpt, checkpoint_b=ckpt, data=data, out=tmp_path / "cmp",
                                   max_windows=4), progress=False)  # on the no-val data this used to fail
    assert report["val_episodes"] == val.names
    assert report["offline"]["a"]["loss"] == pytest.approx(report["offline"]["a"]["checkpoint_val_loss"], rel=1e-3)
    assert (report["val_note"] is None) == (dataset != "no_val_dataset")

    offline = offline_metrics(load_policy_checkpoint(ckpt), data)
    assert offline.episode_names == val.names and offline.split == "val"
    assert offline.rmse == pytest.approx(report["offline"]["a"]["rmse"], rel=1e-5)  # compare's RMSE is this one
