"""The HDF5 episode layout, the reader and training windows, on hand-made records (no env needed)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mobile_vla_sim.errors import CorruptEpisodeError, DatasetError, NoEpisodesError
from mobile_vla_sim.datasets.hdf5_format import (AFTER_MOVE, CAPTURE, Episode, episode_file_name, parse_episode_name,
                                                 read_episode, write_episode)
from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.datasets.windows import WindowDataset, future_actions, window_indices

INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the left"


def make_record(num_frames: int = 6, size: int = 8, seed: int = 0, task: str = "left", labels: bool = False,
                success: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (num_frames, 3)).astype(np.float32)
    actions[0] = 0
    return Episode(
        images=rng.integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8), actions=actions,
        instruction=INSTRUCTION.replace("left", task), name="", task=task, difficulty="easy", seed=seed,
        scenario=f"1box_hori_{task}", success=success, robot_poses=rng.normal(size=(num_frames, 3)),
        states=rng.normal(size=(num_frames, 5)), action_labels=actions * 0.5 if labels else None,
        attrs={"total_duration": 0.4 * (num_frames - 1), "time_period": "morning",
               "collection_datetime": "2025-03-01T09:00:00"})


def file_name(index: int, task: str = "left") -> str:
    return episode_file_name(date="20250301", time=f"0900{index:02d}", num_boxes=1, side=task, variant="core",
                             distance="medium", difficulty="easy", tag=f"{index:06d}")


def test_layout_opens_with_plain_h5py(tmp_path):
    record = make_record(labels=True)
    path = write_episode(tmp_path / file_name(3), record)
    with h5py.File(path, "r") as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (6, 8, 8, 3)
        assert f["images"].compression == "gzip" and f["actions"].compression == "gzip"
        assert f["actions"].dtype == np.float32 and f["actions"].shape == (6, 3)
        assert f["language_instruction"].dtype == np.dtype("S256") and f["language_instruction"].shape == (1,)
        assert f["language_instruction"][0].decode() == INSTRUCTION
        events = [e.decode("utf-8") for e in f["action_event_types"][()]]
        assert events == ["episode_start"] + ["start_action"] * 5
        assert f["robot_poses"].shape == (6, 3) and f["states"].shape == (6, 5) and f["action_labels"].shape == (6, 3)
        attrs = dict(f.attrs)
    assert attrs["episode_name"] == path.stem and attrs["num_frames"] == 6
    assert attrs["action_chunk_size"] == 8 and attrs["obstacle_layout_type"] == "hori"
    assert attrs["color_order"] == "RGB" and attrs["task"] == "left" and attrs["difficulty"] == "easy"
    assert attrs["time_period"] == "morning" and attrs["collection_datetime"] and attrs["total_duration"] == 2.0
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_round_trip(tmp_path):
    record = make_record(labels=True)
    back = read_episode(write_episode(tmp_path / file_name(0), record))
    np.testing.assert_array_equal(back.images, record.images)
    np.testing.assert_array_equal(back.actions, record.actions)
    np.testing.assert_array_equal(back.targets, record.action_labels)
    assert (back.instruction, back.task, back.difficulty, back.seed, back.success) == (INSTRUCTION, "left", "easy", 0,
                                                                                        True)
    assert back.attrs["time_period"] == "morning" and back.num_frames == 6
    assert read_episode(tmp_path / file_name(0), load_images=False).images.shape[0] == 6


def test_parse_names_real_and_synthetic():
    synthetic = parse_episode_name(file_name(42, "right"))
    assert synthetic["side"] == "right" and synthetic["scenario"] == "1box_hori_right"
    assert (synthetic["variant"], synthetic["distance"], synthetic["difficulty"], synthetic["tag"]) == (
        "core", "medium", "easy", "000042")
    assert synthetic["date"] == "20250301" and synthetic["num_boxes"] == 1
    real = parse_episode_name("episode_20251203_101010_2box_hori_right_core_medium.h5")
    assert (real["num_boxes"], real["side"], real["distance"], real["difficulty"]) == (2, "right", "medium", None)
    assert parse_episode_name("episode_20250808_123136_1box_vert_left")["layout"] == "vert"
    with pytest.raises(DatasetError, match="does not follow"):
        parse_episode_name("episode_1box_left.h5")


def test_write_rejects_bad_records(tmp_path):
    bad_images = make_record()
    bad_images.images = bad_images.images.astype(np.float32)
    nan_actions = make_record()
    nan_actions.actions[2, 0] = np.nan
    short_poses = make_record()
    short_poses.robot_poses = short_poses.robot_poses[:3]
    for record, message in [(bad_images, "uint8"), (nan_actions, "NaN"), (short_poses, "robot_poses")]:
        with pytest.raises(DatasetError, match=message):
            write_episode(tmp_path / file_name(0), record)
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_nothing(tmp_path):
    record = make_record()
    record.attrs["unstorable"] = object()
    with pytest.raises(TypeError):
        write_episode(tmp_path / file_name(0), record)
    assert not list(tmp_path.iterdir())


def test_corrupt_files_give_clear_errors(tmp_path):
    path = write_episode(tmp_path / file_name(0), make_record())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptEpisodeError, match="corrupt or truncated.*regenerate"):
        read_episode(path)
    foreign = tmp_path / file_name(1)
    with h5py.File(foreign, "w") as f:
        f["images"] = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(CorruptEpisodeError, match="lacks dataset"):
        read_episode(foreign)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_episode(tmp_path / "missing.h5")


def test_reader_without_manifest(tmp_path):
    with pytest.raises(NoEpisodesError, match="no episode files"):
        EpisodeDataset(tmp_path)
    for i in range(6):
        write_episode(tmp_path / file_name(i, ("left", "right")[i % 2]),
                      make_record(seed=i // 2, task=("left", "right")[i % 2], success=i != 5))
    everything = EpisodeDataset(tmp_path)
    assert len(everything) == 6 and everything.manifest is None
    train, val = EpisodeDataset(tmp_path, "train"), EpisodeDataset(tmp_path, "val")
    successful = EpisodeDataset(tmp_path, only_success=True)  # train and val hold successful demos only
    assert len(successful) == 5 and sorted(train.paths + val.paths) == sorted(successful.paths)
    for split in (train, val):  # a scene pair never straddles the split
        assert len({e["seed"] for e in split.entries} & {e["seed"] for e in successful.entries
                                                          if e not in split.entries}) == 0
    record = everything[1]
    assert record.images.shape == (6, 8, 8, 3) and record.actions.dtype == np.float32 and record.task == "right"
    with pytest.raises(DatasetError, match="unknown split"):
        EpisodeDataset(tmp_path, "test")


def test_window_indices_pad_with_frame_zero():
    idx, mask = window_indices(2, 4)
    assert idx.tolist() == [0, 0, 1, 2] and mask.tolist() == [False, True, True, True]
    idx, mask = window_indices(9, 3)
    assert idx.tolist() == [7, 8, 9] and mask.all()


def test_future_actions_follow_the_frame_convention_masked_past_end():
    actions = np.arange(15, dtype=np.float32).reshape(5, 3)
    targets, mask = future_actions(actions, 2, 4)  # the real collector's: image t was taken as move t began
    np.testing.assert_array_equal(targets[:3], actions[2:5])
    assert (targets[3:] == 0).all() and mask.tolist() == [True, True, True, False]
    first, _ = future_actions(actions, 0, 2)  # frame 0 (episode_start) carries no move: its first is move 1
    np.testing.assert_array_equal(first, actions[1:3])
    targets, mask = future_actions(actions, 2, 4, AFTER_MOVE)  # files of earlier releases: image t after move t
    np.testing.assert_array_equal(targets[:2], actions[3:5])
    assert (targets[2:] == 0).all() and mask.tolist() == [True, True, False, False]
    features = np.ones((5, 7, 2))  # works on any trailing shape (cached features)
    assert future_actions(features, 0, 2)[0].shape == (2, 7, 2)


def test_window_dataset_shapes_and_targets(tmp_path):
    for i in range(2):
        write_episode(tmp_path / file_name(i, ("left", "right")[i]), make_record(num_frames=5 + i, labels=i == 1,
                                                                                 task=("left", "right")[i]))
    windows = WindowDataset(EpisodeDataset(tmp_path), window=4, fwd_pred_next_n=3)
    assert len(windows) == 5 + 6  # every frame has a move to make after it
    item = windows[1]  # episode 0, frame 1
    assert item["images"].dtype == torch.uint8 and item["images"].shape == (4, 8, 8, 3)
    assert item["frame_mask"].tolist() == [False, False, True, True]
    assert item["actions"].shape == (4, 3, 3) and item["actions"].dtype == torch.float32
    assert item["action_mask"].shape == (4, 3) and not item["action_mask"][:2].any()
    record = read_episode(windows.episodes.paths[0])
    np.testing.assert_array_equal(item["actions"][-1].numpy(), record.actions[1:4])
    np.testing.assert_array_equal(item["images"][-1].numpy(), record.images[1])
    assert item["instruction"] == record.instruction and (item["episode_index"], item["frame_index"]) == (0, 1)
    last = windows[len(windows) - 1]  # labelled episode: targets are the clean labels, only one left
    labelled = read_episode(windows.episodes.paths[1])
    np.testing.assert_array_equal(last["actions"][-1, 0].numpy(), labelled.action_labels[5])
    assert last["action_mask"][-1].tolist() == [True, False, False]
    batch = next(iter(torch.utils.data.DataLoader(windows, batch_size=3)))
    assert batch["images"].shape == (3, 4, 8, 8, 3) and len(batch["instruction"]) == 3


def test_earlier_files_keep_their_own_pairing(tmp_path):
    """Files of earlier releases (a `generator` attribute, no `frame_convention`) stored the image after each move;
    the real collector's files (neither attribute) and today's store the image taken as the move began."""
    old, real, new = (make_record(num_frames=5) for _ in range(3))
    old.attrs["generator"] = "mobile-vla-sim 0.1.0"
    new.attrs.update(generator="mobile-vla-sim 0.2.0", frame_convention=CAPTURE)
    for i, record in enumerate((old, real, new)):
        write_episode(tmp_path / file_name(i, "left"), record)
    conventions = [read_episode(tmp_path / file_name(i, "left")).frame_convention for i in range(3)]
    assert conventions == [AFTER_MOVE, CAPTURE, CAPTURE]
    windows = WindowDataset(EpisodeDataset(tmp_path), window=2, fwd_pred_next_n=1)
    assert len(windows) == 4 + 5 + 5  # an old file's last image has no move after it
    old_frame_1 = windows[1]  # old file, frame 1: the move after it is move 2
    np.testing.assert_array_equal(old_frame_1["actions"][-1, 0].numpy(), old.actions[2])
