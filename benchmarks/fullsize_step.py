"""Full-size Kosmos-2 (1.66 B, random weights, offline) + the real LSTM head: time and peak memory of one eval step,
one frozen training step and one LoRA training step (gradient checkpointing on or off).

`Kosmos2Config()`'s defaults are microsoft/kosmos-2-patch14-224's sizes. The hub's tokenizer cannot be downloaded, so
the real Kosmos-2 processor runs over the tiny backbone's tokenizer at 224 px: the same prefix layout (`<s> <image>`,
64 image tokens, `</image>`, the instruction, `</s>`) through the package's own code path (`VLAModel`, `VLAPolicy`),
with the instruction in ~14 tokens instead of the XLM-R tokenizer's count. One step kind per run, so that the
process's peak RSS (or, on CUDA, `torch.cuda.max_memory_allocated`) belongs to that step:

    python -m benchmarks.fullsize_step --step eval
    python -m benchmarks.fullsize_step --step frozen                      # the real batch: 16 windows x 8
    python -m benchmarks.fullsize_step --step lora --windows 1 --window 2 --checkpointing on
    python -m benchmarks.fullsize_step --step lora --device cuda          # on a GPU: the real batch
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import peak_rss_mib
from benchmarks.memory import tree_rss_mib

INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the left"


def build_model(dtype: str, device: str, lora: bool, checkpointing: bool):
    """The full-size VLA model with random weights (init skipped, then N(0, 0.02) matrices: ~10x faster)."""
    import numpy as np
    import torch
    from transformers import Kosmos2Config, Kosmos2Model
    from transformers.initialization import no_init_weights

    from mobile_vla_sim.policies.backbone import Backbone
    from mobile_vla_sim.policies.config import LORA_DROPOUT, REAL_HEAD
    from mobile_vla_sim.policies.tiny_kosmos import build_tiny_processor
    from mobile_vla_sim.policies.vla import HeadConfig, LoraSettings, VLAModel

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))  # built in its dtype: no float32 copy of 6.7 GB on the way
    try:
        with no_init_weights():
            kosmos = Kosmos2Model(Kosmos2Config())
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for name, p in kosmos.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)  # layer norms: identity; biases: 0
    backbone = Backbone(kosmos, build_tiny_processor(224), "kosmos-2-random")
    hidden, layers = REAL_HEAD
    model = VLAModel(backbone, HeadConfig(window=8, chunk=10, hidden=hidden, layers=layers), np.ones(2, np.float32))
    model.freeze_backbone()
    if lora:
        model.add_lora(LoraSettings(dropout=LORA_DROPOUT))
        if checkpointing:
            backbone.enable_checkpointing()
    return model.to(device)


def memory_mib(device: str) -> float:
    import torch

    return torch.cuda.memory_allocated() / 2**20 if device.startswith("cuda") else tree_rss_mib()


def peak_mib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else peak_rss_mib()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def frames(n: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


def eval_step(model, window: int, device: str) -> dict:
    """A deployed policy (`VLAPolicy`, one slot, fixed-shape calls of 1 row): `window` steps, each one new frame
    through the backbone and the LSTM over the frames so far; the last one sees a full window."""
    from mobile_vla_sim.policies.vla_policy import VLAPolicy

    model.head_cfg.window = window
    policy = VLAPolicy(model.eval(), {"drive": "diff", "mode": "lora"}, batch=1)
    policy.reset(INSTRUCTION)
    seconds = []
    for image in frames(window):
        start = time.perf_counter()
        chunk = policy.act_chunk_batch({"image": image[None]}, [0])
        sync(device)
        seconds.append(time.perf_counter() - start)
    return {"chunk_shape": list(chunk.shape), "first_step_s": seconds[0], "step_s": seconds[-1],
            "steps_s": seconds, "prefix_tokens": model.backbone.text_length(INSTRUCTION)}


def train_step(model, windows: int, window: int, device: str, lora: bool, cached_frames: int) -> dict:
    """One optimizer step on `windows` windows of `window` frames, each frame distinct (shuffled windows, the
    costliest case for LoRA). LoRA: the backbone runs on every frame with gradients (`VLAModel.frame_features`, the
    trainer's path). Frozen: the trainer's cached-prefix path; the prefixes of `cached_frames` frames are computed
    (timed apart, it is the one-off cache build) and reused for the batch's other frames (same cost per step)."""
    import numpy as np
    import torch

    from mobile_vla_sim.policies.backbone import Prefix
    from mobile_vla_sim.policies.train import TrainConfig, make_optimizer
    from mobile_vla_sim.policies.vla import chunk_loss

    n = windows * window
    model.head_cfg.window = window
    opt = make_optimizer(model, TrainConfig(data=".", mode="lora" if lora else "frozen", window=window))
    trainable = [p for group in opt.param_groups for p in group["params"]]
    out: dict = {"frames_per_step": n}
    if not lora:
        start = time.perf_counter()
        with torch.no_grad():
            cached = model.encode_frames(frames(cached_frames), [INSTRUCTION] * cached_frames)[1]
        sync(device)
        out["cache_build_s_per_frame"] = (time.perf_counter() - start) / cached_frames
        prefix = cached.select(torch.as_tensor(np.arange(n) % cached_frames, device=cached.kv.device))
        out["cached_prefix_mib"] = prefix.kv.numel() * prefix.kv.element_size() / 2**20
    model.train()
    before = memory_mib(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    feats = (model.frame_features(frames(n), [INSTRUCTION] * n) if lora
             else model.action_features(Prefix(prefix.kv, prefix.mask)))
    pred, _ = model.head(feats.view(windows, window, -1), torch.ones(windows, window, dtype=torch.bool,
                                                                      device=device))
    target = torch.zeros_like(pred)
    loss = chunk_loss(pred, target, torch.ones(pred.shape[:3], dtype=torch.bool, device=device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt.step()
    sync(device)
    out.update(step_s=time.perf_counter() - start, loss=loss.item(), memory_before_mib=before,
               peak_mib=peak_mib(device), trainable_params=sum(p.numel() for p in trainable))
    out["step_extra_mib"] = out["peak_mib"] - before
    return out


def run(step: str, windows: int, window: int, checkpointing: str, dtype: str, device: str,
        cached_frames: int) -> dict:
    import torch

    from mobile_vla_sim.policies.config import check_device, check_dtype

    check_dtype(dtype, check_device(device))
    lora = step == "lora"
    start = time.perf_counter()
    model = build_model(dtype, device, lora, checkpointing == "on")
    sync(device)
    result = {"step": step, "device": device, "dtype": dtype, "torch_threads": torch.get_num_threads(),
              "backbone_params": sum(p.numel() for n, p in model.backbone.model.named_parameters() if "lora_" not in n),
              "build_s": time.perf_counter() - start, "model_mib": memory_mib(device),
              "build_peak_mib": peak_mib(device)}
    if step == "eval":
        result.update(eval_step(model, window, device), peak_mib=peak_mib(device))
    else:
        result.update(windows=windows, window=window, checkpointing=checkpointing if lora else "n/a",
                      **train_step(model, windows, window, device, lora, cached_frames))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", choices=("eval", "frozen", "lora"), required=True)
    ap.add_argument("--windows", type=int, default=16, help="windows per training step (the real batch: 16)")
    ap.add_argument("--window", type=int, default=8, help="frames per window (the real window: 8)")
    ap.add_argument("--checkpointing", choices=("on", "off"), default="on", help="LoRA: gradient checkpointing")
    ap.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cached-frames", type=int, default=2, help="frozen: frames whose prefixes are really computed")
    a = ap.parse_args()
    run(a.step, a.windows, a.window, a.checkpointing, a.dtype, a.device, a.cached_frames)
