"""vla-eval (allenai, 0.8), tested with the package itself: its model servers drive this env through `--policy`
(`policies.remote_vlaeval`), and its orchestrator runs this env as a benchmark (`eval.vlaeval_benchmark`). In both
directions a vla-eval model server must give the same episodes as the same function run in-process."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

pytest.importorskip("vla_eval", reason="vla-eval is not installed: pip install 'mobile-vla-sim[vlaeval]'")
from vla_eval.api import run as vlaeval_run, serve_background  # noqa: E402
from vla_eval.model_servers.predict import PredictModelServer  # noqa: E402
from vla_eval.specs import DimSpec  # noqa: E402

from mobile_vla_sim.config import build  # noqa: E402
from mobile_vla_sim.envs.config import EnvConfig  # noqa: E402
from mobile_vla_sim.errors import EvalError, PolicyLoadError  # noqa: E402
from mobile_vla_sim.eval.episodes import episode_set  # noqa: E402
from mobile_vla_sim.envs.engine import PoolConfig  # noqa: E402
from mobile_vla_sim.eval.rollout import eval_policy  # noqa: E402
from mobile_vla_sim.policies.base import Policy  # noqa: E402
from mobile_vla_sim.policies.remote.vlaeval import VlaEvalPolicy, client  # noqa: E402

IMAGE = 64


def steer(image: np.ndarray, instruction: str, step: int) -> np.ndarray:
    """Turn toward the instructed side for a few steps, then forward; speed depends on every pixel (a changed
    image changes the episode)."""
    side = 1.0 if "left" in instruction else -1.0
    speed = 0.25 + 0.2 * float(image.astype(np.float64).mean()) / 255.0
    return np.array([speed, side * 0.6 if step < 3 else -side * 0.3 if step < 6 else 0.0], np.float32)


class SteerServer(PredictModelServer):
    """A vla-eval model server (vla-eval's own base class and server loop) around `steer`."""

    def __init__(self, chunk: bool = False):
        super().__init__()
        self.chunk = chunk
        self.seen: list[tuple[tuple[int, ...], str]] = []

    def predict(self, obs, ctx):
        image = obs["images"]["front"]
        self.seen.append((image.shape, obs["task_description"]))
        action = steer(image, obs["task_description"], ctx.step)
        return {"actions": np.stack([action, action]) if self.chunk else action}

    def get_action_spec(self):
        return {"actions": DimSpec("actions", 2, "diff_velocity")}

    def get_observation_spec(self):
        return {"front": DimSpec("front", 0, "rgb_hwc_uint8")}


class SteerPolicy(Policy):
    """`steer` in-process, behind this package's interface."""

    name = "steer"

    def __init__(self):
        self.instructions: dict[int, str] = {}
        self.steps: dict[int, int] = {}

    def reset(self, instruction: str, slot: int = 0) -> None:
        self.instructions[slot], self.steps[slot] = instruction, 0

    def act_batch(self, obs: dict[str, np.ndarray], slots: Sequence[int]) -> np.ndarray:
        out = np.stack([steer(obs["image"][i], self.instructions[s], self.steps[s]) for i, s in enumerate(slots)])
        for s in slots:
            self.steps[s] += 1
        return out


@pytest.fixture(scope="module")
def env_cfg() -> EnvConfig:
    return build(EnvConfig, {"image_size": IMAGE})


def outcome(records) -> list[tuple]:
    return [(r.key if hasattr(r, "key") else r.index, r.task, r.success, r.steps, np.round(r.trajectory, 6).tolist())
            for r in records]


def test_vlaeval_server_drives_the_env_like_the_same_policy_in_process(env_cfg):
    specs = episode_set(seed=0, difficulties="easy", n=1)
    local = eval_policy(SteerPolicy(), specs, env_cfg, pool=PoolConfig(1, 2), progress=False)
    server = SteerServer()
    with serve_background(server) as handle:
        policy = client(drive="diff", url=handle.url)
        try:
            remote = eval_policy(policy, specs, env_cfg, pool=PoolConfig(1, 2), progress=False)
            stats = policy.stats()["remote"]
        finally:
            policy.close()
    assert remote.error is None and local.error is None
    assert outcome(remote.results) == outcome(local.results)  # same actions: same trajectories, step for step
    assert stats["requests"] == sum(r.steps for r in remote.results) and stats["latency_ms_mean"] > 0
    assert {shape for shape, _ in server.seen} == {(IMAGE, IMAGE, 3)}
    assert {text for _, text in server.seen} == {r.instruction for r in remote.results}


def test_vlaeval_action_chunks_and_wrong_servers(env_cfg):
    specs = episode_set(seed=0, difficulties="easy", tasks="left", n=1)
    with serve_background(SteerServer(chunk=True)) as handle:
        policy = VlaEvalPolicy(handle.url, drive="diff")
        try:  # a chunk (K, 2): the engine executes its actions in turn
            chunked = eval_policy(policy, specs, env_cfg, pool=PoolConfig(1), progress=False)
        finally:
            policy.close()
        assert chunked.error is None and chunked.results[0].steps > 0
        omni = VlaEvalPolicy(handle.url, drive="omni")
        try:
            omni.reset("go left", 0)
            with pytest.raises(EvalError, match="needs 3 entries"):
                omni.act_batch({"image": np.zeros((1, IMAGE, IMAGE, 3), np.uint8)}, [0])
        finally:
            omni.close()
    with pytest.raises(PolicyLoadError, match="cannot reach a vla-eval model server"):
        client(url="ws://127.0.0.1:9", timeout=2.0)


def test_env_as_a_vlaeval_benchmark_matches_mvla_eval(env_cfg, tmp_path):
    """vla-eval's orchestrator runs `NavBenchmark` against a vla-eval model server: the same scenes and outcomes as
    this package's own harness with the same policy in-process."""
    config = {"server": {"url": "ws://unused", "timeout": 30},
              "benchmarks": [{"benchmark": "mobile_vla_sim.eval.vlaeval_benchmark:NavBenchmark",
                              "params": {"difficulty": "easy", "seed": 0, "image_size": IMAGE},
                              "episodes_per_task": 2}]}
    with serve_background(SteerServer()) as handle:
        results = vlaeval_run(config, server_url=handle.url, output_dir=tmp_path, docker=False, no_save=True)
    by_task = {t["task"]: [(e["steps"], e["metrics"]["success"], e["metrics"]["path_length"],
                            e["metrics"]["distance_to_goal"]) for e in t["episodes"]] for t in results[0]["tasks"]}
    local = eval_policy(SteerPolicy(), episode_set(seed=0, difficulties="easy", n=2), env_cfg, pool=PoolConfig(1),
                        progress=False)
    expected = {f"easy_{side}": [(r.steps, r.success, r.path_length, r.final_distance) for r in local.results
                                 if r.task == side] for side in ("left", "right")}
    assert by_task == expected  # step counts and float path lengths equal: the same episodes, action for action
    assert results[0]["mean_success"] == np.mean([r.success for r in local.results])
