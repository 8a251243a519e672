"""Batch-invariant VLA inference: a frame's feature, LSTM output and action are bit-identical whatever its batch.

Closed-loop evaluation amplifies a 1e-6 rounding difference into a different episode, so "close" is not enough:
every comparison here is exact (`torch.equal`, identical CSV bytes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.eval.episodes import episode_set
from mobile_vla_sim.eval.report import write_csv
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.eval.rollout import eval_policy
from mobile_vla_sim.policies.checkpoint import load_checkpoint, load_policy_checkpoint
from mobile_vla_sim.policies.vla import INFERENCE_BATCH, TEXT_QUANTUM

LEFT = "Navigate around obstacles and reach the front of the beverage bottle on the left"
SHORT = "go left"
#: Long enough to land in the next padded text length than LEFT's.
LONG = " ".join([LEFT] * 3)


def _placements(n_others: int) -> list[tuple[int, int]]:
    """(batch size, position of the probed frame): alone, in short and over-full calls, first/middle/last."""
    sizes = sorted({1, 2, 3, INFERENCE_BATCH, INFERENCE_BATCH + 3, min(n_others + 1, 2 * INFERENCE_BATCH + 1)})
    return [(n, pos) for n in sizes for pos in sorted({0, n // 2, n - 1})]


@pytest.fixture(scope="module")
def frames(tiny_dataset) -> np.ndarray:
    episode = EpisodeDataset(tiny_dataset, "train")[0]
    return np.asarray(episode.images[:17])


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_frame_features_and_head_do_not_depend_on_the_batch(tiny_checkpoints, frames, mode):
    model, _ = load_checkpoint(tiny_checkpoints[mode])
    backbone = model.backbone
    assert -(-backbone.text_length(LONG) // TEXT_QUANTUM) > -(-backbone.text_length(LEFT) // TEXT_QUANTUM)
    others = [LEFT, SHORT, LONG]
    window = model.head_cfg.window
    rng = np.random.default_rng(0)
    with torch.no_grad():
        ref_feat = model.invariant_frame_features(frames[:1], [LEFT])[0]
        win = torch.randn(len(frames), window, backbone.hidden_size, generator=torch.Generator().manual_seed(0))
        win_mask = torch.from_numpy(rng.random((len(frames), window)) < 0.7)
        ref_pred, ref_h = model.invariant_head(win[:1], win_mask[:1])
        for n, pos in _placements(len(frames) - 1):
            idx = list(range(1, n))
            idx.insert(pos, 0)  # frame 0 at `pos`, other frames around it
            images = frames[idx]
            instructions = [others[i % 3] for i in range(n)]
            instructions[pos] = LEFT
            feat = model.invariant_frame_features(images, instructions)[pos]
            pred, h = model.invariant_head(win[idx], win_mask[idx])
            assert torch.equal(feat, ref_feat), f"feature differs in a batch of {n} at {pos}"
            assert torch.equal(pred[pos], ref_pred[0]) and torch.equal(h[pos], ref_h[0]), f"head: batch {n} at {pos}"


def test_policy_actions_do_not_depend_on_slots_sharing_the_call(tiny_checkpoints, frames):
    """The same frame sequence in slot 3 alone, or among 0..10 other slots with other frames and instructions."""
    alone = load_policy_checkpoint(tiny_checkpoints["frozen"])
    crowd = load_policy_checkpoint(tiny_checkpoints["frozen"])
    alone.reset(LEFT, slot=3)
    for s in range(11):
        crowd.reset(LEFT if s == 3 else [SHORT, LONG, LEFT][s % 3], slot=s)
    for t in range(10):  # longer than the LSTM window, so the history rolls over
        slots = [[3], [0, 1, 2, 3], list(range(11))][t % 3]  # slot 3 alone, last, in the middle
        images = np.stack([frames[t] if s == 3 else frames[(t + s) % len(frames)] for s in slots])
        expected = alone.act({"image": frames[t]}, slot=3)
        got = crowd.act_batch({"image": images}, slots)[slots.index(3)]
        assert np.array_equal(got, expected), f"step {t}: {got} != {expected} with slots {slots}"


def _attention(queries: int):
    def attend(x: torch.Tensor) -> torch.Tensor:
        x = x.view(len(x), 4, -1, 16)
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(x[:, :, -queries:], x, x)
    return attend


@pytest.mark.parametrize("op", ["linear", "linear_1row", "lstm", "attention", "attention_1query", "layer_norm",
                                "conv2d"])
def test_kernels_give_each_row_the_same_bits_at_one_shape(op):
    """What `in_fixed_batches` relies on: at one input shape, a row's result depends on neither its position nor
    the other rows. Across shapes it does not hold here (a 1-row matmul rounds differently from a 4-row one), nor
    for the fused CPU attention kernel with one query (bits depend on the thread, i.e. the row's position).
    """
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(64, 96, 2, batch_first=True)
    weight, kernel = torch.randn(96, 64), torch.randn(32, 3, 16, 16)
    fns = {"linear": lambda x: F.linear(x, weight), "linear_1row": lambda x: F.linear(x[:, 0], weight),
           "lstm": lambda x: lstm(x)[0], "attention": _attention(12), "attention_1query": _attention(1),
           "layer_norm": lambda x: F.layer_norm(x, (x.shape[-1],)),
           "conv2d": lambda x: F.conv2d(x.reshape(len(x), 3, 16, -1), kernel, stride=16)}
    rows = torch.randn(2 * INFERENCE_BATCH, 12, 64)
    with torch.no_grad():
        ref = fns[op](rows[:INFERENCE_BATCH])[0]
        for pos in range(INFERENCE_BATCH):
            batch = rows[INFERENCE_BATCH:].clone()
            batch[pos] = rows[0]
            assert torch.equal(fns[op](batch)[pos], ref), f"{op}: row at position {pos} differs"


@pytest.fixture
def one_torch_thread():
    """One torch thread for a long closed-loop run: on a shared 2-core machine two OpenMP threads spin against other
    jobs and run several times slower. The feature-level tests above run with the default threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_episodes_are_identical_for_any_workers_and_envs_per_worker(tiny_checkpoints, tmp_path, one_torch_thread):
    """Same checkpoint, same episodes: byte-identical episodes.csv for workers x envs_per_worker 1x1 and 2x4 (episodes
    batched four to a call and split over two workers; batching alone: the frame-feature and head tests below).

    Before batch-invariant inference, 1 vs 4 envs per worker already gave different episodes here.
    """
    specs = episode_set(0, ("easy", "medium"), "both", 1)
    env = EnvConfig(image_size=48)
    policy = load_policy_checkpoint(tiny_checkpoints["frozen"])
    csvs, trajectories = {}, {}
    for workers, envs in ((1, 1), (2, 4)):
        records = eval_policy(policy, specs, env, pool=PoolConfig(workers, envs), progress=False).results
        assert len(records) == len(specs)
        write_csv(tmp_path / f"{workers}x{envs}.csv", records)
        csvs[workers, envs] = (tmp_path / f"{workers}x{envs}.csv").read_text()
        trajectories[workers, envs] = [r.trajectory for r in records]
    for key in csvs:
        assert csvs[key] == csvs[1, 1], f"episodes.csv with workers x envs_per_worker = {key} differs from 1x1"
        assert trajectories[key] == trajectories[1, 1], f"trajectories with {key} differ from 1x1"
