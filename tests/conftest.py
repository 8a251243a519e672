"""Shared, session-scoped fixtures: one tiny dataset and one tiny checkpoint per mode for the whole run.

They are built lazily (only tests that ask for them pay), small enough for 2 CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

TINY_IMAGE = 48


class _Exploit:
    """Unpickling this creates a file: the proof that a loader unpickled what it was given."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def exploit(tmp_path) -> tuple[object, Path]:
    """(an object whose unpickling creates `marker`, marker): loaders must refuse it or leave `marker` absent."""
    marker = tmp_path / "executed"
    return _Exploit(str(marker)), marker


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """12 easy expert episodes at 48 px (6 left/right scene pairs), split train/val by the manifest."""
    from mobile_vla_sim.config import build
    from mobile_vla_sim.datasets.generate import GenerateConfig, generate_dataset

    out = tmp_path_factory.mktemp("data") / "tiny"
    generate_dataset(build(GenerateConfig, dict(episodes=12, out=out, difficulty="easy", image_size=TINY_IMAGE,
                                                workers=1, seed=0)), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    """A tiny frozen and a tiny LoRA checkpoint trained for one epoch on `tiny_dataset`."""
    from mobile_vla_sim.policies.train import TrainConfig, train

    out = tmp_path_factory.mktemp("ckpt")
    ckpts = {}
    for mode in ("frozen", "lora"):
        path = out / f"{mode}.ckpt"
        train(TrainConfig(data=tiny_dataset, mode=mode, backbone="tiny", epochs=1, out=path, seed=0), progress=False)
        ckpts[mode] = path
    return ckpts


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance (2 CPUs, no dashboard) for every Ray test of the run; skipped without Ray."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'mobile-vla-sim[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
