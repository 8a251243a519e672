"""`generate_dataset` / `mvla-sim generate` on the real env: layout, manifest, determinism, resume, refusal."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mobile_vla_sim.cli import main
from mobile_vla_sim.config import build
from mobile_vla_sim.datasets import generate as gen
from mobile_vla_sim.errors import ConfigMismatchError, DatasetError
from mobile_vla_sim.datasets.generate import GenerateConfig, episode_specs, generate_dataset
from mobile_vla_sim.datasets.hdf5_format import parse_episode_name, read_episode
from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.datasets.windows import WindowDataset

TINY = dict(difficulty="easy", image_size=48, seed=0)  # the content of the shared `tiny_dataset` fixture


def gen_cfg(**knobs) -> GenerateConfig:
    """A GenerateConfig from flat knobs (env and pool knobs included), as the command line builds it."""
    return build(GenerateConfig, knobs)


def assert_same_episodes(a: Path, b: Path, count: int) -> None:
    """Same file names and identical arrays and attributes for the first `count` episodes of two folders."""
    names_a, names_b = sorted(p.name for p in a.glob("*.h5"))[:count], sorted(p.name for p in b.glob("*.h5"))[:count]
    assert names_a == names_b and len(names_a) == count
    for name in names_a:
        x, y = read_episode(a / name), read_episode(b / name)
        for key in ("images", "actions", "robot_poses", "states"):
            np.testing.assert_array_equal(getattr(x, key), getattr(y, key), err_msg=f"{name}:{key}")
        assert x.attrs == y.attrs and x.instruction == y.instruction


def test_plan_pairs_scenes_and_mixes_difficulties():
    specs = episode_specs(gen_cfg(episodes=28, out="unused", seed=3))
    assert [s.task for s in specs[:4]] == ["left", "right", "left", "right"]
    assert all(specs[2 * k].seed == specs[2 * k + 1].seed for k in range(14))
    assert len({s.seed for s in specs}) == 14 and len({s.noise_seed for s in specs}) == 28
    assert Counter(s.difficulty for s in specs) == {"easy": 8, "medium": 12, "hard": 8}
    assert specs[:6] == episode_specs(gen_cfg(episodes=6, out="other", seed=3, workers=2))
    assert specs[0].seed != episode_specs(gen_cfg(episodes=1, out="unused", seed=4))[0].seed
    with pytest.raises(DatasetError, match="unknown difficulty"):
        gen_cfg(difficulty="extreme")
    with pytest.raises(ValueError, match="drive"):
        gen_cfg(drive="tank")


def test_generated_layout_and_manifest(tiny_dataset):
    files = sorted(tiny_dataset.glob("*.h5"))
    assert len(files) == 12
    with h5py.File(files[0], "r") as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape[1:] == (48, 48, 3)
        assert f["actions"].dtype == np.float32 and f["actions"].shape == (f["images"].shape[0], 3)
        assert f["language_instruction"].dtype == np.dtype("S256")
        assert b"on the left" in f["language_instruction"][0]
        assert (f["actions"][0] == 0).all() and f["action_event_types"][0] == b"episode_start"
        assert f["robot_poses"].shape == (f["images"].shape[0], 3) and "action_labels" not in f  # no noise: no labels
        attrs, num_frames = dict(f.attrs), len(f["actions"])
    assert attrs["num_frames"] == num_frames
    assert attrs["total_duration"] == pytest.approx(0.4 * (attrs["num_frames"] - 1))
    for key in ("episode_name", "action_chunk_size", "obstacle_layout_type", "time_period", "collection_datetime",
                "seed", "difficulty", "task", "success", "collision", "drive", "scenario", "color_order"):
        assert key in attrs, key
    parsed = [parse_episode_name(p.name) for p in files]
    assert [p["side"] for p in parsed] == ["left", "right"] * 6
    assert {p["difficulty"] for p in parsed} == {"easy"} and {p["variant"] for p in parsed} == {"core"}
    assert parsed[0]["scenario"] == "1box_hori_left" and parsed[0]["tag"] == "000000"

    manifest = json.loads((tiny_dataset / "dataset.json").read_text())
    assert manifest["complete"] and manifest["config"]["image_size"] == 48 and manifest["package_version"]
    assert [e["file"] for e in manifest["episodes"]] == [p.name for p in files]
    assert all(e["split"] in ("train", "val") for e in manifest["episodes"])
    stats = manifest["action_stats"]
    assert len(stats["mean"]) == 3 and stats["max"][0] > 0 and stats["std"][1] == 0  # diff drive: no linear_y
    assert manifest["success_rate"] > 0.9  # the scripted expert solves easy scenes
    ds = EpisodeDataset(tiny_dataset)
    assert ds.manifest == manifest and len(EpisodeDataset(tiny_dataset, "train")) + len(
        EpisodeDataset(tiny_dataset, "val")) == 12
    record = ds[0]
    assert record.images.shape[1:] == (48, 48, 3) and record.task == "left" and record.difficulty == "easy"
    assert record.seed == read_episode(files[1]).seed  # a left/right pair shares its scene


def test_interrupt_resume_is_identical_to_uninterrupted(tiny_dataset, tmp_path, monkeypatch):
    cfg = gen_cfg(episodes=4, out=tmp_path / "ds", workers=1, envs_per_worker=1, **TINY)
    real_finish, calls = gen.DemoRecorder.finish, []

    def finish_then_interrupt(self, info, truncated):
        calls.append(self.spec.index)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_finish(self, info, truncated)

    monkeypatch.setattr(gen.DemoRecorder, "finish", finish_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(cfg, progress=False)
    monkeypatch.undo()
    manifest = json.loads((cfg.out / "dataset.json").read_text())
    assert len(manifest["episodes"]) == 2 and not manifest["complete"]  # finished episodes kept and listed
    files = sorted(cfg.out.glob("*.h5"))
    assert len(files) == 2 and not list(cfg.out.glob(".*.tmp"))

    files[1].write_bytes(files[1].read_bytes()[:1000])  # a damaged finished file is made again
    (cfg.out / f".{files[0].name}.999.tmp").write_bytes(b"partial")  # a stale temporary is removed
    summary = generate_dataset(cfg, progress=False)
    assert (summary.generated, summary.skipped, summary.episodes) == (3, 1, 4)
    assert not list(cfg.out.glob(".*.tmp")) and json.loads((cfg.out / "dataset.json").read_text())["complete"]
    assert_same_episodes(cfg.out, tiny_dataset, 4)  # same content as the fixture's first 4 episodes

    again = generate_dataset(cfg, progress=False)
    assert (again.generated, again.skipped) == (0, 4)


def test_two_spawn_workers_match_one(tiny_dataset, tmp_path):
    summary = generate_dataset(gen_cfg(episodes=4, out=tmp_path / "ds", workers=2, **TINY), progress=False)
    assert summary.generated == 4 and summary.episodes_per_s > 0 and summary.frames > 4
    assert_same_episodes(tmp_path / "ds", tiny_dataset, 4)


def test_different_config_is_refused(tiny_dataset, tmp_path):
    with pytest.raises(ConfigMismatchError, match=r"seed=0 \(now 1\).*new --out"):
        generate_dataset(gen_cfg(episodes=12, out=tiny_dataset, workers=1, **{**TINY, "seed": 1}))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "episode_20250101_090000_1box_hori_left_core_medium.h5").write_bytes(b"")
    with pytest.raises(ConfigMismatchError, match="no dataset.json"):
        generate_dataset(gen_cfg(episodes=2, out=foreign, workers=1, **TINY))


def test_cli_generate_reports_and_refuses(tiny_dataset):
    runner = CliRunner()
    args = ["generate", "--episodes", "12", "--out", str(tiny_dataset), "--difficulty", "easy", "--image-size", "48",
            "--workers", "1", "--seed", "0"]
    done = runner.invoke(main, args)
    assert done.exit_code == 0, done.output
    assert "12 episodes" in done.output and "episodes/s" in done.output and "0 new" in done.output
    refused = runner.invoke(main, [*args[:-1], "7"])
    assert refused.exit_code == 1 and "Error:" in refused.output and "seed=0 (now 7)" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_noise_keeps_clean_labels_in_omni_mode(tmp_path):
    cfg = gen_cfg(episodes=2, out=tmp_path / "noisy", workers=1, drive="omni", noise_std=0.2, **TINY)
    generate_dataset(cfg, progress=False)
    record = EpisodeDataset(cfg.out)[0]
    assert record.attrs["drive"] == "omni" and record.action_labels.shape == record.actions.shape
    assert not np.allclose(record.action_labels[1:], record.actions[1:])  # executed = label + noise
    np.testing.assert_array_equal(record.targets, record.action_labels)


def test_windows_over_generated_episodes(tiny_dataset):
    episodes = EpisodeDataset(tiny_dataset, "train")
    windows = WindowDataset(episodes, window=8, fwd_pred_next_n=10)
    assert len(windows) == sum(episodes.num_frames(i) for i in range(len(episodes)))
    first = windows[0]
    assert first["images"].shape == (8, 48, 48, 3) and first["frame_mask"].tolist() == [False] * 7 + [True]
    assert first["actions"].shape == (8, 10, 3) and first["action_mask"][-1].any()
    np.testing.assert_array_equal(first["actions"][-1, 0].numpy(), episodes[0].actions[1])
    second = windows[1]  # frame 1 was taken as move 1 began: paired with move 1
    np.testing.assert_array_equal(second["actions"][-1, 0].numpy(), episodes[0].actions[1])
