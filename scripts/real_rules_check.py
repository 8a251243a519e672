"""Read a dataset with the real project's loader rules and print what they see.

    python scripts/real_rules_check.py data/real      # e.g. from `mvla-sim generate --profile real --out data/real`

Files by `episode_20251*.h5`, `actions[:, :2]` clamped to +-1, `images[t]` with `actions[t : t + 10]`, window 8: how
many files the pattern finds, lateral steering per side, the share of zero-padded windows, and whether each image is
paired with the move made from it (the stored poses at capture: frame t to t+1 moves along actions[t], not along
actions[t + 1] as a one-step lag would have it). tests/test_real_loader.py asserts the same on a small set.
"""
import glob
import math
import sys

import h5py
import numpy as np

if len(sys.argv) != 2:
    sys.exit("usage: python scripts/real_rules_check.py DATA_DIR")
files = sorted(glob.glob(sys.argv[1] + "/episode_20251*.h5"))
if not files:
    sys.exit(f"No episodes found in {sys.argv[1]} for episode_20251*.h5")
W, F = 8, 10
n_win = padded = 0
lat = {"left": [], "right": []}
hit = {"t": [], "t+1": []}
lengths = []
for f in files:
    with h5py.File(f, "r") as h:
        a = np.clip(h["actions"][:, :2], -1, 1)
        T = len(h["images"]); lengths.append(T)
        poses = h["robot_poses"][:].astype(float)
    side = "left" if "_left_" in f else "right"
    for s in range(max(1, len(a) - W - F + 1)):
        n_win += 1; padded += int(s + W + F > len(a))
    lat[side].append(a[:, 1])
    for t in range(1, T - 1):
        dx, dy = poses[t + 1, :2] - poses[t, :2]; c, s_ = math.cos(poses[t, 2]), math.sin(poses[t, 2])
        went = np.array([c * dx + s_ * dy, -s_ * dx + c * dy])
        for key, k in (("t", t), ("t+1", t + 1)):
            if k < len(a):
                m = a[k]
                hit[key].append(float(m @ went) / (np.linalg.norm(m) * np.linalg.norm(went) + 1e-9) > 0.9)
print(f"files found by episode_20251*.h5: {len(files)}; frames per episode: min {min(lengths)}, median {int(np.median(lengths))}; >= 18 frames: {np.mean(np.array(lengths) >= 18):.0%}")
for side in lat:
    v = np.concatenate(lat[side]); print(f"{side} episodes: actions[:,1] > 0.5 in {np.mean(v > 0.5):.0%} of steps, < -0.5 in {np.mean(v < -0.5):.0%}")
print(f"windows (8 + chunk 10): {n_win}, zero-padded: {padded} ({100 * padded / n_win:.1f}%)")
print(f"frame t -> t+1 displacement points along actions[t]: {np.mean(hit['t']):.1%} of {len(hit['t'])} frames; along actions[t+1] (a one-step lag): {np.mean(hit['t+1']):.1%}")
