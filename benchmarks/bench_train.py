"""Frozen training: head epochs on cached backbone features against recomputing the backbone every step."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import report
from mobile_vla_sim.config import build
from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset


def run(episodes: int = 16, epochs: int = 2, image_size: int = 224, backbone: str = "tiny") -> dict:
    # torch is imported here, not at the top: spawned workers re-import the main module, and would pay for it
    from mobile_vla_sim.policies.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate_dataset(build(GenerateConfig, dict(episodes=episodes, out=data, difficulty="easy",
                                                    image_size=image_size, workers=2)), progress=False)
        timings = {}
        for cached in (True, False):
            r = train(TrainConfig(data=data, mode="frozen", backbone=backbone, epochs=epochs, seed=0, resume=False,
                                  cache_features=cached, out=Path(tmp) / f"cached{cached}.ckpt"), progress=False)
            per_epoch = sum(h["seconds"] for h in r.history) / len(r.history)
            timings[cached] = (per_epoch, r.cache_seconds, r.best_val_loss)
    (c_epoch, c_cache, c_loss), (u_epoch, _, u_loss) = timings[True], timings[False]
    return report(f"frozen training, {backbone} backbone ({episodes} episodes, {image_size}px, {epochs} epochs)",
                  [("cached: s/epoch (+ one-off cache build s)", f"{c_epoch:.2f} (+{c_cache:.2f})"),
                   ("recomputed: s/epoch", f"{u_epoch:.2f}"),
                   ("val loss cached / recomputed", f"{c_loss:.4f} / {u_loss:.4f}")],
                  ("recomputed / cached time per epoch", u_epoch / c_epoch, None))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=224)
    a = ap.parse_args()
    run(a.episodes, a.epochs, a.image_size)
