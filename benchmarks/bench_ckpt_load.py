"""Importing a full-size RoboVLMs Lightning checkpoint: load time and peak memory (RSS), and one inference step.

The checkpoint is the CPU-only, random-weight, full-size model of `benchmarks.fullsize_step` (Kosmos-2, 1.66 B
parameters, float32, built offline) with the real head (LSTM 2048 -> 512 x 4 layers, `MLPTanhHead` 1024-512-256 ->
10 x 2), written in the real project's Lightning layout (`state_dict` `model.backbone.*` / `model.action_token` /
`model.act_head.*`, config under `hyper_parameters`): ~6.7 GB. As in `fullsize_step`, the real processor's tokenizer
cannot be downloaded here, so the checkpoint's tokenizer path names a folder holding the Kosmos-2 processor over the
tiny tokenizer at 224 px. Each phase runs in its own process, so each peak RSS belongs to that phase alone:

    python -m benchmarks.bench_ckpt_load                     # write to a temporary folder, import, delete
    python -m benchmarks.bench_ckpt_load --dir /data/ckpt    # keep the checkpoint there (written once, reused)

RSS counts the checkpoint's pages once they are touched: memory-mapped, they are file-backed (`RssFile`, the page
cache's, reclaimable) rather than a private copy (`RssAnon`); both are printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import peak_rss_mib, report

CKPT, PROCESSOR = "fullsize_robovlms.ckpt", "processor"


def _status_mib() -> dict[str, float]:
    """This process's resident memory now, by kind (Linux /proc): total, anonymous (private) and file-backed."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "RssAnon", "RssFile")}


def write(folder: Path) -> dict:
    """Build the full-size model (float32) and save it in the Lightning layout with the real head's shapes."""
    import torch
    from torch import nn

    from benchmarks.fullsize_step import build_model
    from mobile_vla_sim.policies.config import CLIP_MEAN, CLIP_STD
    from mobile_vla_sim.policies.tiny_kosmos import build_tiny_processor

    start = time.perf_counter()
    model = build_model("float32", "cpu", lora=False, checkpointing=False)
    kosmos, dim = model.backbone.model, model.backbone.hidden_size
    torch.manual_seed(1)
    rnn = nn.LSTM(dim, 512, 4, batch_first=True)
    head = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 256),
                         nn.ReLU(), nn.Linear(256, 10 * 2), nn.Tanh())
    state = {"model.backbone." + k: v for k, v in kosmos.state_dict().items()}
    state["model.backbone.text_model.lm_head.weight"] = kosmos.text_model.model.embed_tokens.weight
    state["model.action_token"] = torch.randn(dim) * 0.02
    state |= {"model.act_head.rnn." + k: v for k, v in rnn.state_dict().items()}
    state |= {"model.act_head.velocities.mlp." + k: v for k, v in head.state_dict().items()}
    build_tiny_processor(224).save_pretrained(folder / PROCESSOR)
    configs = {"robovlm_name": "RoboKosMos", "model": "kosmos", "image_size": 224, "image_mean": list(CLIP_MEAN),
               "image_std": list(CLIP_STD), "window_size": 8, "fwd_pred_next_n": 10,
               "train_setup": {"freeze_backbone": True, "lora_enable": False},
               "act_head": {"type": "MobileVLALSTMDecoder", "hidden_size": 512, "action_dim": 2, "latent": 1,
                            "fwd_pred_next_n": 10, "window_size": 8},
               "tokenizer": {"type": "AutoProcessor", "pretrained_model_name_or_path": str(folder / PROCESSOR),
                             "max_text_len": 256},
               "norm_action": True, "norm_min": -1.0, "norm_max": 1.0}
    built = time.perf_counter() - start
    start = time.perf_counter()
    torch.save({"state_dict": state, "hyper_parameters": {"configs": configs}, "epoch": 9,
                "pytorch-lightning_version": "2.5.5"}, folder / CKPT)
    return {"build_s": built, "write_s": time.perf_counter() - start, "peak_mib": peak_rss_mib()}


def load(folder: Path) -> dict:
    """Import the checkpoint as `mvla-sim eval --policy` does, then one inference step (one 224 px frame)."""
    import numpy as np
    import torch

    from mobile_vla_sim.policies.checkpoint import load_policy_checkpoint

    torch.set_num_threads(2)
    before = _status_mib()
    start = time.perf_counter()
    policy = load_policy_checkpoint(folder / CKPT, batch=1)
    out = {"load_s": time.perf_counter() - start, "before_mib": before, "after_load_mib": _status_mib(),
           "load_peak_mib": peak_rss_mib(), "policy": policy.name,
           "backbone_params": sum(p.numel() for p in policy.model.backbone.parameters())}
    policy.reset("Navigate around obstacles and reach the front of the beverage bottle on the left")
    frame = np.random.default_rng(0).integers(0, 256, (1, 720, 1280, 3), dtype=np.uint8)  # the real camera's 16:9
    start = time.perf_counter()
    action = policy.act_batch({"image": frame}, [0])
    out.update(step_s=time.perf_counter() - start, action=action.tolist(), after_step_mib=_status_mib(),
               step_peak_mib=peak_rss_mib())
    return out


def _phase(name: str, folder: Path) -> dict:
    """Run one phase in a fresh Python process and return its JSON result."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_ckpt_load", "--phase", name, "--dir", str(folder)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(folder: Path | None = None) -> dict:
    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return run(Path(tmp))
    written = None if (folder / CKPT).is_file() else _phase("write", folder)
    loaded = _phase("load", folder)
    file_mib = (folder / CKPT).stat().st_size / 2**20
    rows = [("checkpoint (float32, Lightning layout)", f"{file_mib:,.0f} MiB")]
    if written:
        rows.append(("write: build + torch.save, peak RSS", f"{written['build_s']:.0f} s + {written['write_s']:.0f} s, "
                                                             f"{written['peak_mib']:,.0f} MiB"))
    after = loaded["after_load_mib"]
    rows += [("import (load_policy_checkpoint): time", f"{loaded['load_s']:.1f} s"),
             ("import: peak RSS; RSS after (anon / file-backed)",
              f"{loaded['load_peak_mib']:,.0f} MiB; {after['VmRSS']:,.0f} ({after['RssAnon']:,.0f} / "
              f"{after['RssFile']:,.0f}) MiB"),
             ("first step (one 1280x720 frame): time, peak RSS", f"{loaded['step_s']:.1f} s, "
                                                                f"{loaded['step_peak_mib']:,.0f} MiB"),
             ("after the step: anon / file-backed RSS", f"{loaded['after_step_mib']['RssAnon']:,.0f} / "
                                                        f"{loaded['after_step_mib']['RssFile']:,.0f} MiB")]
    return report("import of a full-size RoboVLMs Lightning checkpoint (CPU)", rows,
                  ("peak RSS over the import and first step / file size", loaded["step_peak_mib"] / file_mib, None))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=None, help="folder for the checkpoint (kept; reused when present)")
    ap.add_argument("--phase", choices=("write", "load"), default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase:
        a.dir.mkdir(parents=True, exist_ok=True)
        print(json.dumps((write if a.phase == "write" else load)(a.dir)))
    else:
        run(a.dir)
