"""Cost of batch-invariant VLA inference: per-frame time of the fixed-shape path against free batching.

Both paths compute what one `VLAPolicy.act_batch` call computes for N slots (backbone features of N frames, then
the LSTM head over N windows) with the same model: free batching runs one call of N rows with the prefix padded to
the longest instruction (the path before invariance); the invariant path runs calls of exactly `INFERENCE_BATCH`
rows with prefixes padded to a fixed multiple of `TEXT_QUANTUM`, and the math attention kernel. Timings of the two
paths alternate, so a busy machine slows both alike; the process CPU time is measured along with the wall time, as
it moves less when other jobs share the cores (torch runs one thread by default here, so it has no spin-waiting).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from benchmarks.common import report, timer

LEFT = "Navigate around obstacles and reach the front of the beverage bottle on the left"
RIGHT = "Navigate around obstacles and reach the front of the beverage bottle on the right"
SLOTS = (1, 4, 8, 16)


def _seconds(fn, *args) -> tuple[float, float]:
    """Wall and process-CPU seconds of one `fn(*args)`."""
    cpu_start = time.process_time()
    with timer() as t:
        fn(*args)
    return t[0], time.process_time() - cpu_start


def run(repeats: int = 7, image_size: int = 224, backbone: str = "tiny", threads: int = 1) -> dict:
    import torch

    from mobile_vla_sim.policies.backbone import load_backbone
    from mobile_vla_sim.policies.vla import INFERENCE_BATCH, HeadConfig, VLAModel

    torch.manual_seed(0)
    model = VLAModel(load_backbone(backbone), HeadConfig(), np.ones(2, np.float32)).eval()  # the real head shape
    rng = np.random.default_rng(0)
    paths = {
        "free": lambda images, texts, windows, mask: model.head(
            model.frame_features(images, texts)[:, None] + windows, mask),
        "invariant": lambda images, texts, windows, mask: model.invariant_head(
            model.invariant_frame_features(images, texts)[:, None] + windows, mask),
    }
    calls: dict[tuple[str, int], list[tuple[float, float]]] = {(name, n): [] for name in paths for n in SLOTS}
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for n in SLOTS:
                inputs = (rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8),
                          [(LEFT, RIGHT)[i % 2] for i in range(n)],
                          torch.zeros(n, model.head_cfg.window, model.backbone.hidden_size),
                          torch.ones(n, model.head_cfg.window, dtype=torch.bool))
                for fn in paths.values():  # warm-up
                    fn(*inputs)
                for _ in range(repeats):  # alternate the paths, so load changes hit both
                    for name, fn in paths.items():
                        calls[name, n].append(_seconds(fn, *inputs))
    finally:
        torch.set_num_threads(default_threads)
    # per frame: median (wall, cpu) seconds of a call / slots
    med = {k: tuple(statistics.median(c[i] for c in v) / k[1] for i in (0, 1)) for k, v in calls.items()}
    ratios = [med["invariant", n][1] / med["free", n][1] for n in SLOTS]
    rows = [(f"{n:2d} slots/call, ms/frame wall (cpu): free; invariant",
             f"{1e3 * med['free', n][0]:.1f} ({1e3 * med['free', n][1]:.1f}); {1e3 * med['invariant', n][0]:.1f} "
             f"({1e3 * med['invariant', n][1]:.1f}) = {r:.2f}x cpu") for n, r in zip(SLOTS, ratios)]
    return report(f"batch-invariant inference, {backbone} backbone, {image_size} px, fixed batch {INFERENCE_BATCH}",
                  rows, (f"cpu per frame, invariant / free (geomean, {len(SLOTS)} slot counts)",
                         math.exp(statistics.fmean(math.log(r) for r in ratios)), None))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per path and slot count (median kept)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--backbone", default="tiny", help="'tiny', a Kosmos-2 hub id or a local directory")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    a = ap.parse_args()
    run(a.repeats, a.image_size, a.backbone, a.threads)
