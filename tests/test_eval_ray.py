"""`mvla-sim eval --backend ray`: episode shards as Ray tasks give exactly the local run's episodes."""

from __future__ import annotations

import pytest

from mobile_vla_sim.backends import BackendConfig
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.eval.run import EvalConfig, evaluate


def _run(policy, out, **changes):
    cfg = EvalConfig(policy=str(policy), difficulty="easy,medium", episodes=2, out=out, env=EnvConfig(image_size=48),
                     pool=PoolConfig(workers=1), **changes)
    return evaluate(cfg, progress=False)


@pytest.mark.slow  # ~1 min with Ray's start
def test_ray_shards_equal_the_local_run(tiny_checkpoints, ray_instance, tmp_path):
    local = _run(tiny_checkpoints["frozen"], tmp_path / "local")
    remote = _run(tiny_checkpoints["frozen"], tmp_path / "ray", ray_shard=3, cluster=BackendConfig(backend="ray"))
    assert len(remote.records) == len(local.records) == 8  # 3 shards of 3, 3 and 2 episodes
    assert (tmp_path / "ray" / "episodes.csv").read_text() == (tmp_path / "local" / "episodes.csv").read_text()
    assert [r.trajectory for r in remote.records] == [r.trajectory for r in local.records]

