"""LeRobotDataset v3.0 export and import: the files LeRobot expects, an exact HDF5 -> LeRobot -> HDF5 round trip,
colour order, atomic writes, one-line errors, and LeRobot's own reader on the export (when it is installed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("pyarrow", reason="export/import need pyarrow: pip install 'mobile-vla-sim[lerobot]'")
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from mobile_vla_sim.cli import main  # noqa: E402
from mobile_vla_sim.config import build  # noqa: E402
from mobile_vla_sim.datasets import EpisodeDataset, read_episode, write_episode  # noqa: E402
from mobile_vla_sim.datasets import lerobot  # noqa: E402
from mobile_vla_sim.datasets.lerobot import (ExportConfig, ImportConfig, export_lerobot, feature_stats,  # noqa: E402
                                             image_stats, import_lerobot)

CAMERA = "observation.images.front"
#: H.264 (x264 veryfast, crf 18, yuv420p) against the HDF5 pixels, measured 2026-12-02 on 64 px sim frames: mean
#: |error| 1.21 levels of 255, 99th percentile 5, maximum 62 (single pixels on sharp colour edges: 4:2:0 chroma
#: subsampling). Both decoders (ffmpeg for import, torchcodec in LeRobot's reader) gave these figures.
MEAN_ABS_TOL, P99_TOL = 2.0, 8.0
READER_MISSING = ("LeRobot's reader (lerobot-dataset) is not installed; it needs torchvision, which has no wheel for "
                  "the CPU torch here: see docs/formats.md for its own venv "
                  "(pip install 'mobile-vla-sim[lerobot-reader]')")


def episodes_of(folder: Path) -> list:
    return [read_episode(p) for p in sorted(folder.glob("*.h5"))]


def pixel_error(decoded: np.ndarray, original: np.ndarray) -> tuple[float, float]:
    """(mean, 99th percentile) absolute difference in levels of 255."""
    d = np.abs(decoded.astype(np.int16) - original.astype(np.int16))
    return float(d.mean()), float(np.percentile(d, 99))


@pytest.fixture(scope="module")
def hdf5_data(tmp_path_factory) -> Path:
    """6 expert episodes at 64 px with injected action noise, so `action_labels` are there too."""
    from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset

    out = tmp_path_factory.mktemp("lerobot") / "hdf5"
    generate_dataset(build(GenerateConfig, dict(episodes=6, out=out, difficulty="easy", image_size=64, workers=1,
                                                seed=3, noise_std=0.05)), progress=False)
    return out


@pytest.fixture(scope="module")
def exported(hdf5_data) -> Path:
    out = hdf5_data.parent / "lerobot"
    export_lerobot(ExportConfig(data=hdf5_data, out=out), progress=False)
    return out


def test_export_is_a_lerobot_v30_dataset(hdf5_data, exported):
    episodes = episodes_of(hdf5_data)
    lengths = [e.num_frames for e in episodes]
    info = json.loads((exported / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 2
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (6, sum(lengths), 2)
    features = info["features"]
    assert features[CAMERA]["dtype"] == "video" and features[CAMERA]["shape"] == [64, 64, 3]
    assert features["action"] == {"dtype": "float32", "shape": [3], "names": ["linear_x", "linear_y", "angular_z"]}
    assert features["observation.state"]["names"] == ["x", "y", "yaw"]
    for path in ("meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                 "data/chunk-000/file-000.parquet", f"videos/{CAMERA}/chunk-000/file-000.mp4"):
        assert (exported / path).is_file(), path

    tasks = pd.read_parquet(exported / "meta/tasks.parquet")
    assert sorted(tasks.index) == sorted({e.instruction for e in episodes})
    meta = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [m["episode_index"] for m in meta] == list(range(6)) and [m["length"] for m in meta] == lengths
    assert np.array_equal([m["dataset_to_index"] for m in meta], np.cumsum(lengths))
    assert [m[f"videos/{CAMERA}/from_timestamp"] for m in meta] == list(np.cumsum([0] + lengths[:-1]) / 2)
    for m, e in zip(meta, episodes):  # the instruction is the task; the sim fields are episode metadata
        assert m["tasks"] == [e.instruction]
        assert (m["episode_name"], m["side"], m["difficulty"], m["seed"], m["success"]) == \
            (e.name, e.task, e.difficulty, e.seed, e.success)

    data = pq.read_table(exported / "data/chunk-000/file-000.parquet")
    actions = np.concatenate([e.actions for e in episodes])
    assert np.array_equal(np.stack(data["action"].to_numpy(zero_copy_only=False)), actions)
    assert np.array_equal(np.stack(data["action_label"].to_numpy(zero_copy_only=False)),
                          np.concatenate([e.action_labels for e in episodes]))
    assert data["index"].to_pylist() == list(range(sum(lengths)))
    assert np.allclose(data["timestamp"].to_numpy(), data["frame_index"].to_numpy() / 2)

    stats = json.loads((exported / "meta/stats.json").read_text())  # combined from per-episode stats, streaming
    assert stats["action"]["count"] == [sum(lengths)]
    assert np.allclose(stats["action"]["mean"], actions.mean(0)) and np.allclose(stats["action"]["std"], actions.std(0))
    assert np.array_equal(stats["action"]["min"], actions.min(0)) and np.array_equal(stats["action"]["max"],
                                                                                    actions.max(0))
    assert np.asarray(stats[CAMERA]["mean"]).shape == (3, 1, 1)


def test_round_trip_keeps_actions_instructions_and_metadata_exactly(hdf5_data, exported, tmp_path):
    back = tmp_path / "back"
    summary = import_lerobot(ImportConfig(lerobot_dir=exported, out=back), progress=False)
    assert summary.episodes == 6
    before, after = episodes_of(hdf5_data), episodes_of(back)
    assert [e.name for e in after] == [e.name for e in before]
    for a, b in zip(before, after):
        assert b.instruction == a.instruction and b.event_types == a.event_types
        for field in ("actions", "action_labels", "robot_poses", "states"):
            assert np.array_equal(getattr(b, field), getattr(a, field)), field
        assert (b.task, b.difficulty, b.seed, b.scenario, b.success) == (a.task, a.difficulty, a.seed, a.scenario,
                                                                          a.success)
        assert b.attrs == a.attrs
        mean, p99 = pixel_error(b.images, a.images)
        assert mean < MEAN_ABS_TOL and p99 <= P99_TOL, (mean, p99)
    # what the package's own loaders see: the same splits, readable windows
    assert EpisodeDataset(back, split="train").names == EpisodeDataset(hdf5_data, split="train").names


def test_bgr_episodes_are_exported_as_rgb(hdf5_data, tmp_path):
    """The same red patch, stored once as RGB and once as BGR (`color_order`), is red in both videos."""
    for order in ("RGB", "BGR"):
        for path in sorted(hdf5_data.glob("*.h5"))[:2]:
            episode = read_episode(path)
            episode.images[:, :16, :16] = (220, 30, 30)  # red, in RGB
            if order == "BGR":
                episode.images = np.ascontiguousarray(episode.images[..., ::-1])
            episode.attrs["color_order"] = order
            write_episode(tmp_path / order / path.name, episode)
        export_lerobot(ExportConfig(data=tmp_path / order, out=tmp_path / f"lr-{order}"), progress=False)
        import_lerobot(ImportConfig(lerobot_dir=tmp_path / f"lr-{order}", out=tmp_path / f"back-{order}"),
                       progress=False)
        for episode in episodes_of(tmp_path / f"back-{order}"):
            assert episode.attrs["color_order"] == "RGB"
            red, green, blue = episode.images[:, 4:12, 4:12].reshape(-1, 3).mean(0)
            assert red > 180 and green < 70 and blue < 70, (order, red, green, blue)
    # real data stored BGR without saying so: --color-order bgr overrides the (absent or wrong) attribute
    export_lerobot(ExportConfig(data=tmp_path / "RGB", out=tmp_path / "lr-forced", color_order="bgr"), progress=False)
    import_lerobot(ImportConfig(lerobot_dir=tmp_path / "lr-forced", out=tmp_path / "back-forced"), progress=False)
    red, green, blue = episodes_of(tmp_path / "back-forced")[0].images[:, 4:12, 4:12].reshape(-1, 3).mean(0)
    assert blue > 180 and red < 70, (red, green, blue)


def test_interrupted_export_leaves_no_folder_that_looks_finished(hdf5_data, tmp_path, monkeypatch):
    out = tmp_path / "lr"
    calls = []
    real_append = lerobot._VideoFiles.append

    def stop_at_third(self, frames):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_append(self, frames)

    monkeypatch.setattr(lerobot._VideoFiles, "append", stop_at_third)
    with pytest.raises(KeyboardInterrupt):  # with reader processes running
        export_lerobot(ExportConfig(data=hdf5_data, out=out, workers=2), progress=False)
    assert not out.exists() and not list(tmp_path.iterdir())  # nor a staging folder
    monkeypatch.setattr(lerobot._VideoFiles, "append", real_append)
    assert export_lerobot(ExportConfig(data=hdf5_data, out=out), progress=False).episodes == 6


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_bad_input_gives_one_line_errors(hdf5_data, exported, tmp_path):
    one_line_error(run("export", tmp_path / "missing", "--out", tmp_path / "o"), "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(run("export", tmp_path / "empty", "--out", tmp_path / "o"), "no episode files")
    broken = tmp_path / "broken"
    broken.mkdir()
    first = sorted(hdf5_data.glob("*.h5"))[0]
    shutil.copy(first, broken / first.name)
    (broken / first.name.replace("000000", "000009")).write_bytes(b"not hdf5 at all")
    one_line_error(run("export", broken, "--out", tmp_path / "o"), "corrupt")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    one_line_error(run("export", hdf5_data, "--out", a_file / "o"), "--out", "is a file")
    one_line_error(run("export", hdf5_data, "--out", exported), "--out", "not empty")
    one_line_error(run("import", hdf5_data, "--out", tmp_path / "o"), "no meta/info.json")
    old = tmp_path / "old"
    shutil.copytree(exported / "meta", old / "meta")
    info = json.loads((old / "meta/info.json").read_text())
    (old / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    one_line_error(run("import", old, "--out", tmp_path / "o"), "v2.1", "convert")
    one_line_error(run("import", exported, "--out", tmp_path / "o", "--camera", "observation.images.top"),
                   "--camera", CAMERA)
    assert not (tmp_path / "o").exists()


def test_cli_export_then_import(hdf5_data, tmp_path):
    result = run("export", hdf5_data, "--format", "lerobot", "--out", tmp_path / "lr", "--fps", "3")
    assert result.exit_code == 0 and "exported: 6 episodes" in result.output, result.output
    assert json.loads((tmp_path / "lr/meta/info.json").read_text())["fps"] == 3
    result = run("import", tmp_path / "lr", "--out", tmp_path / "back")
    assert result.exit_code == 0 and "imported: 6 episodes" in result.output, result.output


# --- LeRobot's own code (lerobot-dataset), when installed -----------------------------------------------------
@pytest.fixture
def lerobot_dataset(monkeypatch):
    """LeRobot's `LeRobotDataset` class, offline; the test is skipped only when the package is not installed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    module = pytest.importorskip("ledataset.datasets.lerobot_dataset", reason=READER_MISSING)
    return module.LeRobotDataset


def test_lerobots_own_reader_loads_the_export(lerobot_dataset, hdf5_data, exported):
    ds = lerobot_dataset("mobile-vla-sim/test", root=exported)
    episodes = episodes_of(hdf5_data)
    assert len(ds) == sum(e.num_frames for e in episodes) and ds.num_episodes == 6 and ds.fps == 2
    images, decoded = np.concatenate([e.images for e in episodes]), []
    actions = np.concatenate([e.actions for e in episodes])
    instructions = [e.instruction for e in episodes for _ in range(e.num_frames)]
    for i in range(len(ds)):
        item = ds[i]
        assert np.array_equal(item["action"].numpy(), actions[i])
        assert item["task"] == instructions[i]
        decoded.append((item[CAMERA].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    mean, p99 = pixel_error(np.stack(decoded), images)
    assert mean < MEAN_ABS_TOL and p99 <= P99_TOL, (mean, p99)


def test_data_recorded_by_lerobot_imports_for_our_loaders(lerobot_dataset, tmp_path):
    """A dataset written by LeRobot's own recorder (6-dim actions, no metadata of ours) becomes HDF5 episodes."""
    rng = np.random.default_rng(0)
    features = {CAMERA: {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]},
                "action": {"dtype": "float32", "shape": (6,), "names": [f"a{i}" for i in range(6)]}}
    recorded = lerobot_dataset.create("lab/recorded", fps=10, features=features, root=tmp_path / "rec",
                                      vcodec="h264")
    sentences = ["go around the box on the left", "go around the box on the right"]
    frames, actions = [], []
    for episode in range(2):
        for _ in range(5):
            frame = np.zeros((48, 64, 3), np.uint8)
            frame[:, : 16 * (episode + 1)] = (200, 40, 40)  # flat areas: the codec keeps them near-exact
            action = rng.normal(size=6).astype(np.float32)
            recorded.add_frame({CAMERA: frame, "action": action, "task": sentences[episode]})
            frames.append(frame)
            actions.append(action)
        recorded.save_episode()
    recorded.finalize()
    one_line_error(run("import", tmp_path / "rec", "--out", tmp_path / "x"), "--action-index", "6 entries")
    import_lerobot(ImportConfig(lerobot_dir=tmp_path / "rec", out=tmp_path / "h5", action_index=(3, 4, 5)),
                   progress=False)
    ds = EpisodeDataset(tmp_path / "h5")
    assert len(ds) == 2 and [ds[i].instruction for i in range(2)] == sentences
    assert np.array_equal(np.concatenate([ds[i].actions for i in range(2)]), np.stack(actions)[:, 3:])
    assert pixel_error(np.concatenate([ds[i].images for i in range(2)]), np.stack(frames))[0] < MEAN_ABS_TOL
    assert ds[0].attrs["color_order"] == "RGB" and ds[0].event_types[0] == "episode_start"


def test_reader_processes_write_the_same_dataset(hdf5_data, exported, tmp_path):
    export_lerobot(ExportConfig(data=hdf5_data, out=tmp_path / "lr", workers=2), progress=False)
    for path in sorted(p.relative_to(exported) for p in exported.rglob("*") if p.is_file()):
        assert (tmp_path / "lr" / path).read_bytes() == (exported / path).read_bytes(), path


def test_image_stats_from_histograms_equal_numpys():
    images = np.random.default_rng(0).integers(0, 256, size=(4, 9, 7, 3)).astype(np.uint8)
    images[..., 2] //= 7  # a channel with a narrower range
    fast, direct = image_stats(images), feature_stats(images.reshape(-1, 3) / 255.0)
    for name, value in direct.items():
        if name != "count":
            assert np.allclose(fast[name].ravel(), value, rtol=1e-12, atol=1e-12), name
    assert fast["count"].tolist() == [4] and fast["mean"].shape == (3, 1, 1)


def test_export_streams_episodes(hdf5_data, tmp_path, monkeypatch):
    """Memory flat in the number of episodes: when an episode is read, at most the first one (it fixes the schema)
    and the one just written are still alive (weak references to their images)."""
    import weakref

    alive: list = []
    still_alive_at_read: list[int] = []
    real_read = lerobot._read

    def tracked(path):
        still_alive_at_read.append(sum(ref() is not None for ref in alive))
        episode = real_read(path)
        alive.append(weakref.ref(episode.images))
        return episode

    monkeypatch.setattr(lerobot, "_read", tracked)
    export_lerobot(ExportConfig(data=hdf5_data, out=tmp_path / "lr", workers=1), progress=False)
    assert len(still_alive_at_read) == 6 and max(still_alive_at_read) <= 2, still_alive_at_read
