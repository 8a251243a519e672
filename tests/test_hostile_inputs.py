"""Wrong results and tracebacks-as-bugs: hostile inputs get one line saying what is wrong and how to fix it, never a
traceback and never a silently wrong number.

Full disks: `test_generate_full_disk` and `test_train_full_disk` make the writes raise `OSError(ENOSPC)`;
`test_real_full_disk` (slow, root only) fills a real 300 KB tmpfs in a private mount namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hostile import META, QUICK, FakeServer, full_disk, one_line_error, run
from mobile_vla_sim.config import build
from mobile_vla_sim.datasets.manifest import MANIFEST_NAME
from mobile_vla_sim.errors import MvlaError
from mobile_vla_sim.policies.remote.wire import packb

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "tiny", "--epochs", "1"]


@pytest.fixture(scope="module")
def omni_data(tmp_path_factory) -> Path:
    """4 omni episodes at 48 px, without dataset.json (as copied by hand, or real data)."""
    from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset

    out = tmp_path_factory.mktemp("omni") / "d"
    generate_dataset(build(GenerateConfig, dict(episodes=4, out=out, difficulty="easy", image_size=48, drive="omni",
                                                workers=1)), progress=False)
    (out / MANIFEST_NAME).unlink()
    return out


def _copy(src: Path, dst: Path, manifest: bool = True) -> Path:
    shutil.copytree(src, dst)
    if not manifest:
        (dst / MANIFEST_NAME).unlink()
    return dst


# --- wrong results ----------------------------------------------------------------------------------------------
def test_a_run_stopped_between_checkpoint_and_resume_state_is_not_finished(tiny_dataset, tmp_path, monkeypatch):
    """A kill after the checkpoint is written but before the resume state: the checkpoint says unfinished, so the
    next run trains (from the start) instead of reporting "already finished"."""
    import mobile_vla_sim.policies.train as train_mod
    from mobile_vla_sim.policies.checkpoint import read_checkpoint_config

    out = tmp_path / "t.ckpt"
    monkeypatch.setattr(train_mod, "atomic_write", full_disk())  # the resume state is the only atomic_write here
    one_line_error(run("train", "--data", tiny_dataset, *TINY, "--out", out), "cannot write resume state",
                   "No space left on device")
    assert read_checkpoint_config(out)["finished"] is False and not (tmp_path / "t.ckpt.resume.pt").exists()
    monkeypatch.undo()
    again = run("train", "--data", tiny_dataset, *TINY, "--out", out)
    assert again.exit_code == 0 and "already holds this finished run" not in again.output, again.output
    assert "unfinished checkpoint of this run" in again.output and read_checkpoint_config(out)["finished"] is True
    done = run("train", "--data", tiny_dataset, *TINY, "--out", out)
    assert "already holds this finished run" in done.output


def test_omni_data_without_manifest_trains_omni_and_mixed_drives_are_refused(omni_data, tiny_dataset, tmp_path):
    from mobile_vla_sim.policies.checkpoint import read_checkpoint_config

    out = tmp_path / "omni.ckpt"
    res = run("train", "--data", omni_data, *TINY, "--out", out)
    assert res.exit_code == 0, res.output
    assert read_checkpoint_config(out)["drive"] == "omni" and read_checkpoint_config(out)["head"]["dims"] == [0, 1, 2]
    mixed = _copy(omni_data, tmp_path / "mixed")
    for path in sorted(tiny_dataset.glob("*.h5"))[:2]:  # diff episodes of the same image size
        shutil.copy(path, mixed / path.name.replace("easy_0000", "easy_1000"))
    one_line_error(run("train", "--data", mixed, *TINY, "--out", tmp_path / "m.ckpt"), "mixes drives", "omni",
                   "diff", "the episodes of one drive")
    lying = _copy(tiny_dataset, tmp_path / "lying")  # a manifest that contradicts its files
    manifest = json.loads((lying / MANIFEST_NAME).read_text())
    manifest["config"]["drive"] = "omni"
    (lying / MANIFEST_NAME).write_text(json.dumps(manifest))
    one_line_error(run("train", "--data", lying, *TINY, "--out", tmp_path / "l.ckpt"), "dataset.json says drive "
                   "'omni' but its episode files record 'diff'")


def test_files_without_a_drive_that_move_sideways_train_omni(omni_data, tmp_path):
    """Real data records no drive: linear_y in its actions means omni (a diff head would drop it silently)."""
    from mobile_vla_sim.datasets.reader import EpisodeDataset
    from mobile_vla_sim.policies.train import _drive_of_actions, load_episodes

    real = _copy(omni_data, tmp_path / "real")
    for path in real.glob("*.h5"):
        with h5py.File(path, "a") as f:
            del f.attrs["drive"]
    messages: list[str] = []
    episodes = load_episodes(EpisodeDataset(real, "train"), 2)
    assert _drive_of_actions(episodes, real, messages.append) == "omni" and "linear_y" in messages[0]


def test_a_manifest_image_size_is_checked_against_the_files(tiny_dataset, tmp_path):
    lying = _copy(tiny_dataset, tmp_path / "lying")
    manifest = json.loads((lying / MANIFEST_NAME).read_text())
    manifest["config"]["image_size"] = 224
    (lying / MANIFEST_NAME).write_text(json.dumps(manifest))
    one_line_error(run("train", "--data", lying, *TINY, "--out", tmp_path / "x.ckpt"),
                   "dataset.json says 224x224 images but its episode files hold 48x48")


def test_probe_strengths_are_not_truncated(tmp_path):
    from mobile_vla_sim.probe.perturbations import load_suite

    suite = tmp_path / "suite.yaml"
    suite.write_text("distractors: 2.5\n")
    one_line_error(run("probe", "--policy", "expert", "--suite", suite, "--out", tmp_path / "p"),
                   "distractors", "whole-number strength", "2.5")
    assert not (tmp_path / "p").exists()
    suite.write_text("distractors: 2.0\nlighting: 5e-1\n")
    assert load_suite(suite) == [("distractors", 2), ("lighting", 0.5)]


# --- tracebacks-as-bugs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("output, words", [
    ("wide", ["returned 5 values per action", "'diff' drive takes 2"]),
    ("rows", ["returned actions of shape (2, 2) for 1 slots"]),
    ("strings", ["not an array of numbers"]),
    ("none", ["returned actions of shape ()"]),
    ("dict", ["not an array of numbers"]),
    ("ragged", ["not an array of numbers"]),
])
def test_wrong_plugin_actions_are_one_line_and_keep_finished_episodes(tmp_path, output, words):
    out = tmp_path / "out"
    quick = [*QUICK[:2], "--episodes", "2", *QUICK[4:]]
    one_line_error(run("eval", "--policy", "hostile:garbage", "--policy-arg", f"output={output}", *quick,
                       "--out", out), "'garbage'", *words, "the 2 finished episodes are saved")
    kept = json.loads((out / "results.json").read_text())
    assert kept["interrupted"] and len(kept["episodes"]) == 2


def _rewrite_checkpoint(src: Path, dst: Path, change) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    save_file(tensors, str(dst), metadata={**meta, "config": json.dumps(change(config))})
    return dst


@pytest.mark.parametrize("change", [
    lambda c: [1, 2],
    lambda c: {**c, "head": "big"},
    lambda c: {**c, "head": {**c["head"], "wings": 2}},
    lambda c: {**c, "lora": {"rank": "high"}},
    lambda c: {**c, "drive": 5},
    lambda c: {**c, "dataset_config": [48]},
], ids=["list", "head-text", "head-key", "lora", "drive", "dataset-config"])
def test_malformed_checkpoint_metadata_is_one_line(tiny_checkpoints, tmp_path, change):
    bad = _rewrite_checkpoint(tiny_checkpoints["frozen"], tmp_path / "bad.ckpt", change)
    one_line_error(run("eval", "--policy", bad, *QUICK, "--out", tmp_path / "o"), "bad.ckpt", "damaged",
                   "re-train it")


def test_garbage_resume_state_is_one_line(tiny_dataset, tmp_path):
    from mobile_vla_sim.policies.config import TrainConfig
    from mobile_vla_sim.policies.train import train

    cfg = TrainConfig(data=tiny_dataset, backbone="tiny", epochs=1, out=tmp_path / "t.ckpt")
    resume = tmp_path / "t.ckpt.resume.pt"
    for content, words in ((b"\x00garbage" * 100, "cannot read resume state"),
                           ({"fingerprint": cfg.fingerprint(), "weights": {"no.such": torch.zeros(2)}},
                            "damaged resume state"),
                           ({"fingerprint": cfg.fingerprint(), "weights": {}, "optimizer": {"state": {}}},
                            "damaged resume state")):
        if isinstance(content, bytes):
            resume.write_bytes(content)
        else:
            torch.save(content, resume)
        with pytest.raises(MvlaError, match=words) as err:
            train(cfg, progress=False, log=lambda m: None)
        assert "\n" not in str(err.value) and "delete it to start over" in str(err.value)


def _episode_folder(tiny_dataset: Path, dst: Path) -> Path:
    dst.mkdir()
    for path in sorted(tiny_dataset.glob("*.h5"))[:4]:
        shutil.copy(path, dst / path.name)
    return dst


def test_zero_frame_and_non_utf8_episodes_are_one_line(tiny_dataset, tmp_path):
    data = _episode_folder(tiny_dataset, tmp_path / "zero")
    empty = data / "episode_20250101_090000_1box_hori_left_core_close_easy_009999.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("images", shape=(0, 48, 48, 3), dtype=np.uint8)
        f.create_dataset("actions", shape=(0, 3), dtype=np.float32)
        f.create_dataset("action_event_types", data=np.array([], dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("language_instruction", data=np.array([b"go left"], dtype="S256"))
    one_line_error(run("train", "--data", data, *TINY, "--out", tmp_path / "z.ckpt"), empty.name, "no frames")
    data = _episode_folder(tiny_dataset, tmp_path / "latin1")
    victim = sorted(data.glob("*.h5"))[0]
    with h5py.File(victim, "a") as f:
        f["language_instruction"][0] = "gehe nach links und dann geradeaus zur Flasche".encode("utf-16")
    one_line_error(run("train", "--data", data, *TINY, "--out", tmp_path / "u.ckpt"), victim.name, "not UTF-8")


def test_generate_full_disk_is_one_line_and_keeps_finished_files(tmp_path, monkeypatch):
    """Simulated: the third episode write fails with ENOSPC in the rollout (here in-process) worker."""
    import mobile_vla_sim.datasets.hdf5_format as fmt

    out = tmp_path / "d"
    args = ["generate", "--episodes", "6", "--image-size", "16", "--difficulty", "easy", "--workers", "1",
            "--envs-per-worker", "1", "--out", out]
    monkeypatch.setattr(fmt, "atomic_write", full_disk(after=2))
    one_line_error(run(*args), "cannot write episode", "No space left on device", "run the same command again")
    assert len(list(out.glob("*.h5"))) == 2 and len(json.loads((out / MANIFEST_NAME).read_text())["episodes"]) == 2
    monkeypatch.undo()
    res = run(*args)
    assert res.exit_code == 0 and "4 new, 2 already there" in res.output, res.output


def test_train_full_disk_is_one_line(tiny_dataset, tmp_path, monkeypatch):
    import mobile_vla_sim.policies.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "atomic_write", full_disk())
    one_line_error(run("train", "--data", tiny_dataset, *TINY, "--out", tmp_path / "t.ckpt"),
                   "cannot write checkpoint", "No space left on device", "run the same command again")
    assert not list(tmp_path.iterdir())  # no partial file


@pytest.mark.slow
def test_real_full_disk(tmp_path):
    """A real 300 KB tmpfs (a private mount namespace: nothing outside sees it) filled by generate with 2 workers,
    which segfaulted in HDF5 before (exit 139); then grown, and the same command resumes."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a small tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cli = f"{sys.executable} -m mobile_vla_sim.cli"
    gen = f"{cli} generate --episodes 30 --image-size 64 --difficulty easy --workers 2 --out {mnt}/d"
    script = (f"mount -t tmpfs -o size=300k tmpfs {mnt} || exit 99\n"
              f"{gen} > {tmp_path}/1.out 2>&1; echo $? > {tmp_path}/1.rc; ls {mnt}/d | grep -c h5 > {tmp_path}/1.n\n"
              f"mount -o remount,size=8m {mnt}\n"
              f"{gen} > {tmp_path}/2.out 2>&1; echo $? > {tmp_path}/2.rc\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, timeout=900)
    if proc.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    first = (tmp_path / "1.out").read_text().strip().splitlines()
    assert (tmp_path / "1.rc").read_text().strip() == "1", first
    assert first[-1].startswith("Error: a rollout worker failed: cannot write episode") and \
        "No space left on device" in first[-1], first
    assert int((tmp_path / "1.n").read_text()) >= 1
    assert (tmp_path / "2.rc").read_text().strip() == "0", (tmp_path / "2.out").read_text()
    assert "30 episodes in" in (tmp_path / "2.out").read_text()


def test_train_rl_device_gpu_is_one_line(tmp_path):
    one_line_error(run("train-rl", "--device", "gpu", "--out", tmp_path / "p.zip"), "--device 'gpu'",
                   "cpu, cuda or cuda:N")


@pytest.mark.parametrize("url", ["ws://127.0.0.1:99999", "ws://127.0.0.1:abc", "ws://:8000", "ws://127.0.0.1"])
def test_bad_ws_ports_are_one_line(tmp_path, url):
    one_line_error(run("eval", "--policy", url, *QUICK, "--out", tmp_path / "o"), url, "port in 1..65535")


def _actions(request, actions, **extra):
    return packb({"actions": actions, "episode_id": request["episode_id"], "step": request["step"], **extra})


@pytest.mark.parametrize("metadata, reply, words", [
    (META, lambda r: _actions(r, "fast"), ["malformed reply"]),
    (META, lambda r: _actions(r, np.zeros((1, 5), np.float32)), ["malformed reply", "a diff policy of 2 values"]),
    (META, lambda r: packb([1, 2, 3]), ["malformed reply"]),
    (META, lambda r: _actions(r, np.zeros((1, 2), np.float32), server_timing={"infer_ms": "slow"}),
     ["malformed reply"]),
    (META, lambda r: _actions({**r, "episode_id": "999"}, np.zeros((1, 2), np.float32)), ["malformed reply"]),
    (META, lambda r: b"\xc1\xc1", ["malformed reply", "not a msgpack"]),
    ({**META, "chunk_size": "many"}, lambda r: None, ["malformed metadata"]),
    ({**META, "drive": 5}, lambda r: None, ["layout 5"]),
], ids=["text-actions", "wide", "list", "timing", "episode", "garbage", "chunk-size", "drive"])
def test_malformed_server_replies_are_one_line(tmp_path, metadata, reply, words):
    with FakeServer(metadata, reply) as server:
        one_line_error(run("eval", "--policy", server.url, *QUICK, "--out", tmp_path / "o"), *words)
