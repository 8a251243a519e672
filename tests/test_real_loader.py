"""`generate --profile real` read by a loader that follows the real project's documented loader rules: files by the
pattern of its shipped configs, `actions[:, :2]` clamped to +-1, `images[t]` paired with `actions[t : t + 10]`,
window 8 (so a sample needs 18 frames; shorter episodes are zero-padded), the side from the file name.

The loader below is written here from those rules (it is not the real project's code), so the test fails if our data
stops meaning what the real data means: a one-step lag, file names the pattern misses, no steering in the first two
action dims, or episodes too short for a window.
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from mobile_vla_sim.config import build
from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset
from mobile_vla_sim.datasets.hdf5_format import AFTER_MOVE, CAPTURE, first_target, read_episode

PATTERN, WINDOW, FWD = "episode_20251*.h5", 8, 10


def real_rules_samples(folder: Path) -> list[dict]:
    """Every (window, chunk) sample as the real loaders cut them, with whether it needed zero padding."""
    files = sorted(glob.glob(os.path.join(folder, PATTERN)))
    if not files:
        raise FileNotFoundError(f"No episodes found in {folder} for {PATTERN}")
    samples = []
    for path in files:
        with h5py.File(path, "r") as f:
            actions = np.clip(f["actions"][:, :2], -1.0, 1.0)
            instruction = f["language_instruction"][0].decode()
            num_images = len(f["images"])
        side = "left" if "_left_" in Path(path).name else "right"
        need = WINDOW + FWD
        for start in range(max(1, len(actions) - need + 1)):
            chunks = np.zeros((WINDOW, FWD, 2), np.float32)
            for i, t in enumerate(range(start, start + WINDOW)):
                part = actions[t:t + FWD]
                chunks[i, :len(part)] = part
            samples.append({"side": side, "instruction": instruction, "chunks": chunks,
                            "padded": start + need > len(actions) or num_images < start + WINDOW})
    return samples


@pytest.fixture(scope="module")
def real_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real") / "data"
    generate_dataset(build(GenerateConfig, dict(profile="real", episodes=16, out=out, image_width=48, workers=1)),
                     progress=False)
    return out


def test_the_real_rules_find_the_files_and_see_steering_on_both_sides(real_data):
    samples = real_rules_samples(real_data)
    assert len({s["instruction"] for s in samples}) == 2
    lateral = {side: np.concatenate([s["chunks"][..., 1].ravel() for s in samples if s["side"] == side])
               for side in ("left", "right")}
    assert (lateral["left"] > 0.5).mean() > 0.2 and (lateral["left"] < -0.5).mean() < (lateral["left"] > 0.5).mean()
    assert (lateral["right"] < -0.5).mean() > 0.2 and (lateral["right"] > 0.5).mean() < (lateral["right"] < -0.5).mean()
    assert np.mean([s["padded"] for s in samples]) <= 0.05  # >= 95% of windows need no zero padding


def _moved(pose_a: np.ndarray, pose_b: np.ndarray) -> np.ndarray:
    """Displacement from pose a to pose b in a's robot frame (x forward, y left)."""
    dx, dy = pose_b[:2] - pose_a[:2]
    c, s = math.cos(pose_a[2]), math.sin(pose_a[2])
    return np.array([c * dx + s * dy, -s * dx + c * dy])


def _agreement(episodes, convention: str) -> float:
    """Share of frames whose paired move (under `convention`) points where the robot went from that frame on."""
    hits = []
    for ep in episodes:
        poses = ep.robot_poses.astype(np.float64)
        for t in range(1, len(poses) - 1):
            move = ep.actions[first_target(convention, t)][:2]
            went = _moved(poses[t], poses[t + 1])
            hits.append(float(move @ went) / (np.linalg.norm(move) * np.linalg.norm(went) + 1e-9) > 0.9)
    return float(np.mean(hits))


def test_each_image_is_paired_with_the_move_made_from_it(real_data):
    """The stored poses are the poses at capture: from frame t to frame t+1 the robot travels in the direction of
    move t (the real pairing), not of move t + 1 (what a one-step lag would pair it with)."""
    episodes = [read_episode(p) for p in sorted(real_data.glob("*.h5"))]
    assert {ep.frame_convention for ep in episodes} == {CAPTURE}
    assert all(ep.attrs["capture_delay"] == pytest.approx(0.1) for ep in episodes)
    assert _agreement(episodes, CAPTURE) > 0.97
    assert _agreement(episodes, AFTER_MOVE) < _agreement(episodes, CAPTURE) - 0.1


def test_profiles_fill_only_what_is_unset(tmp_path):
    cfg = build(GenerateConfig, dict(profile="real", out=tmp_path, color_order="rgb"))
    assert (cfg.env.drive, cfg.env.action_mode, cfg.expert_actions, cfg.env.camera) == \
        ("omni", "direction", "keys", "real")
    assert cfg.env.color_order == "rgb" and not cfg.warnings
    assert build(GenerateConfig, dict(out=tmp_path)).warnings  # diff drive: no steering in actions[:, :2]
