"""Policy server: remote eval against in-process eval of the same tiny VLA checkpoint, and server-side batching.

Three runs of the same fixed episode set with 2 workers x 4 concurrent episodes:
  * in-process: the eval process holds the checkpoint (one act_batch per round over all running episodes);
  * remote, batched: `mvla-sim serve`'s server in its own process, the eval process sends one request per episode
    back to back and the server batches them (max batch 16);
  * remote, batch 1: the same server with max batch 1, one inference per request.
torch gets one intra-op thread in the eval process and in the server (`--threads`): the two env workers already
keep the two cores busy, and torch's default of one thread per core made in-process eval ~5x slower here.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import report, tiny_checkpoint
from mobile_vla_sim.eval.episodes import episode_set
from mobile_vla_sim.envs.config import EnvConfig
from mobile_vla_sim.envs.engine import PoolConfig
from mobile_vla_sim.eval.rollout import eval_policy

WORKERS, PER_WORKER = 2, 4
SERVER = ("import torch; torch.set_num_threads({threads}); "
          "from mobile_vla_sim.serving.server import ServeConfig, serve; "
          "serve(ServeConfig(policy={ckpt!r}, port=0, max_batch={max_batch}), log=lambda m: print(m, flush=True))")


def _serve(ckpt: Path, max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    """Start a server process on a free port; return it and its URL once it listens."""
    code = SERVER.format(ckpt=str(ckpt), max_batch=max_batch, threads=threads)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if found := re.search(r"ws://\S+:\d+", line):
            return proc, found.group(0)
    raise RuntimeError(f"policy server exited with code {proc.wait()} before listening")


def _rate(policy, specs, env_cfg) -> float:
    r = eval_policy(policy, specs, env_cfg, pool=PoolConfig(WORKERS, PER_WORKER), progress=False)
    policy.close()
    return 60.0 * len(r.results) / r.seconds


def run(episodes: int = 4, image_size: int = 112, threads: int = 1) -> dict:
    # torch is imported here, not at the top: spawned workers re-import the main module, and would pay for it
    import torch

    from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint
    from mobile_vla_sim.policies.remote.ws import RemotePolicy

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = tiny_checkpoint(Path(tmp), image_size)
        specs = episode_set(0, "easy", "both", episodes)
        env_cfg = EnvConfig(image_size=image_size)
        rates, latency = {}, {}
        default_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            rates["in-process"] = _rate(load_policy_checkpoint(ckpt), specs, env_cfg)
        finally:
            torch.set_num_threads(default_threads)
        for label, max_batch in (("remote, batched", 16), ("remote, batch 1", 1)):
            proc, url = _serve(ckpt, max_batch, threads)
            try:
                policy = RemotePolicy(url)
                rates[label] = _rate(policy, specs, env_cfg)
                latency[label] = policy.stats()["remote"]
            finally:
                proc.terminate()
                proc.wait()
    rows = [(f"{label}: episodes/min", f"{rate:.1f}") for label, rate in rates.items()]
    rows += [(f"{label}: round trip mean / p95, server inference (ms)",
              f"{s['latency_ms_mean']:.1f} / {s['latency_ms_p95']:.1f}, {s['server_infer_ms_mean']:.1f}")
             for label, s in latency.items()]
    rows.append(("remote, batched: mean server batch", f"{latency['remote, batched']['server_batch_size_mean']:.2f}"))
    rows.append(("server batching: batched / batch 1", f"{rates['remote, batched'] / rates['remote, batch 1']:.2f}"))
    return report(f"policy server, tiny VLA ({2 * episodes} easy episodes, {image_size}px, "
                  f"{WORKERS} workers x {PER_WORKER}, {threads} torch thread(s))", rows,
                  ("remote (batched) / in-process", rates["remote, batched"] / rates["in-process"], 0.8))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=4, help="per task (left and right)")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads, eval process and server")
    a = ap.parse_args()
    run(a.episodes, a.image_size, a.threads)
