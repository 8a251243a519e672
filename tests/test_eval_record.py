"""`eval --record DIR`: closed-loop episodes saved in the real layout, loadable, the same for any number of workers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from mobile_vla_sim.datasets.hdf5_format import read_episode
from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.eval.run import EvalConfig, evaluate
from mobile_vla_sim.policy import Policy


class SeeingPolicy(Policy):
    """Steers by the mean pixel of what it is given, and remembers which frame got which action."""

    name = "seeing"
    drive = "diff"

    def __init__(self):
        self.sent: dict[str, np.ndarray] = {}

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        actions = []
        for image in obs["image"]:
            action = np.array([0.3, 4.0 * (image.mean() / 255.0 - 0.45)], np.float32)
            self.sent[hashlib.sha1(image.tobytes()).hexdigest()] = action
            actions.append(action)
        return np.stack(actions)


def _record(tmp_path: Path, name: str, workers: int) -> tuple[SeeingPolicy, list, Path]:
    policy, folder = SeeingPolicy(), tmp_path / name
    cfg = EvalConfig(policy="seeing", episodes=2, difficulty="easy", out=tmp_path / f"{name}-eval", record=folder,
                     env=EnvConfig(image_size=32, max_steps=12), pool=PoolConfig(workers=workers, envs_per_worker=2))
    return policy, evaluate(cfg, policy=policy, progress=False).records, folder


def test_recordings_hold_what_the_policy_saw_and_sent_and_its_outcome(tmp_path):
    policy, records, folder = _record(tmp_path, "rec", workers=1)
    files = sorted(folder.glob("episode_2025*.h5"))
    assert len(files) == len(records) == 4
    by_index = {n: r for n, r in enumerate(records)}
    for path in files:
        ep = read_episode(path)
        rec = by_index[ep.attrs["episode_index"]]
        assert (ep.task, ep.success, ep.attrs["policy"]) == (rec.task, rec.success, "seeing")
        assert ep.attrs["failure_label"] == rec.failure_label and ep.attrs["failure_flags"] == rec.failure_flags
        assert ep.num_frames == rec.steps + 1  # episode_start, then one frame per move
        for frame, action in zip(ep.images[1:], ep.actions[1:]):  # frame k: the view move k was chosen from
            sent = policy.sent[hashlib.sha1(frame.tobytes()).hexdigest()]
            np.testing.assert_array_equal(action, [sent[0], 0.0, sent[1]])
    assert any(r.failure_label for r in records)  # failures are recorded too
    assert len(EpisodeDataset(folder, split="all")) == 4  # a dataset like any other


def test_recordings_do_not_depend_on_the_workers(tmp_path):
    _, _, one = _record(tmp_path, "one", workers=1)
    _, _, two = _record(tmp_path, "two", workers=2)
    digest = lambda folder: {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.glob("*.h5")}
    assert digest(one) == digest(two)
