"""Train a VLA policy (frozen or LoRA Kosmos-2 + LSTM head) on a dataset folder; write the best `.ckpt` by val loss.

Frozen mode runs the VLM once per (episode, frame) and keeps the decoder's image + instruction keys/values; each
step then only runs the action token through the frozen decoder (so the action token still learns) and the head.
LoRA mode recomputes the backbone for the unique frames of every batch. Training is resumable: after each epoch a
`<out>.resume.pt` (tensors and plain types only, loaded with `weights_only=True`) holds the trainable weights,
optimizer and RNG state; it is deleted when training completes.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from mobile_vla_sim.datasets.reader import EpisodeDataset
from mobile_vla_sim.datasets.windows import future_actions, window_indices
from mobile_vla_sim.envs.actions import LAYOUT_DIMS, check_drive
from mobile_vla_sim.policies.backbone import DEFAULT_BACKBONE, TINY_BACKBONES, Prefix, load_backbone
from mobile_vla_sim.policies.checkpoint import save_checkpoint
from mobile_vla_sim.policies.vla import (LORA_TARGETS, HeadConfig, LoraSettings, VLAModel, chunk_loss,
                                         count_parameters)

MODES = ("frozen", "lora")
#: Held-out share of episodes when the dataset has no val split (e.g. a handful of real episodes).
FALLBACK_VAL_FRACTION = 0.15
#: LSTM (hidden, layers): the real project's, and a head sized to the tiny backbone (D=128) so CPU tests stay fast.
REAL_HEAD = (512, 4)
TINY_HEAD = (128, 2)
#: LoRA dropout: peft's usual 0.05, and none for the tiny backbone, where drawing the dropout masks on CPU took 2/3
#: of each step (1.3 s vs 0.45 s for 16 windows) and a 0.6 M-parameter model on thousands of frames needs none.
LORA_DROPOUT, TINY_LORA_DROPOUT = 0.05, 0.0


@dataclass
class TrainConfig:
    """Defaults are the real project's (SPEC §2)."""

    data: Path
    mode: str = "frozen"
    backbone: str = DEFAULT_BACKBONE
    epochs: int = 10
    batch_size: int = 16
    window: int = 8
    chunk: int = 10
    hidden: int | None = None  # None: 512 (SPEC §2), or TINY_HEAD's for the tiny backbone
    lstm_layers: int | None = None  # None: 4 (SPEC §2), or TINY_HEAD's for the tiny backbone
    lr_head: float = 1e-4
    lr_lora: float = 1e-5
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float | None = None  # None: 0.05 (peft's usual), or 0 for the tiny backbone (see TINY_LORA_DROPOUT)
    lora_targets: tuple[str, ...] = field(default=LORA_TARGETS)
    seed: int = 0
    device: str = "cpu"
    out: Path = Path("vla.ckpt")
    cache_features: bool = True  # frozen mode only; False recomputes the backbone every step (to measure speed-up)
    #: Windows per run of consecutive windows of one episode in a batch. Runs share frames, so when the backbone is
    #: recomputed (LoRA) a batch of 16 windows needs ~30 frames instead of ~128 (an epoch 4.7x faster, measured).
    #: None: `window` for LoRA, 1 (independent windows, the real project's sampling) for frozen.
    consecutive: int | None = None
    resume: bool = True

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        hidden, layers = TINY_HEAD if self.backbone in TINY_BACKBONES else REAL_HEAD
        self.hidden = hidden if self.hidden is None else int(self.hidden)
        self.lstm_layers = layers if self.lstm_layers is None else int(self.lstm_layers)
        if self.lora_dropout is None:
            self.lora_dropout = TINY_LORA_DROPOUT if self.backbone in TINY_BACKBONES else LORA_DROPOUT
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        for key in ("epochs", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("lr_head", "lr_lora", "weight_decay", "grad_clip", "lora_dropout"):
            value = float(getattr(self, key))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0, got {value}")
        self.lora_targets = tuple(self.lora_targets)
        if self.consecutive is None:
            self.consecutive = 1 if self.mode == "frozen" else self.window
        if int(self.consecutive) < 1:
            raise ValueError(f"consecutive must be >= 1, got {self.consecutive}")

    def lora(self) -> LoraSettings | None:
        if self.mode != "lora":
            return None
        return LoraSettings(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout, targets=self.lora_targets)

    def fingerprint(self) -> str:
        """What must not change between an interrupted run and its resumption."""
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("epochs", "device", "resume", "cache_features", "consecutive")}
        return json.dumps(keep, default=str, sort_keys=True)


@dataclass
class TrainResult:
    checkpoint: Path
    best_val_loss: float
    best_epoch: int
    history: list[dict]  # per epoch: epoch, train_loss, val_loss, seconds
    trainable_params: int
    total_params: int
    cache_seconds: float  # frozen mode: time to compute the feature cache (0 otherwise)


@dataclass
class EpisodeTargets:
    """One episode held for training: instruction, images (kept only when features are not cached), targets."""

    instruction: str
    images: np.ndarray | None
    future: np.ndarray  # (T, chunk, 3) actions t+1..t+chunk for each frame t
    future_mask: np.ndarray  # (T, chunk) bool

    @property
    def num_frames(self) -> int:
        return len(self.future)


def load_episodes(ds: EpisodeDataset, indices: list[int], chunk: int, progress: bool = False
                  ) -> list[EpisodeTargets]:
    """Read episodes and their per-frame future-action targets (clean expert labels where noise was injected)."""
    out = []
    for i in tqdm(indices, desc="reading episodes", disable=not progress, leave=False):
        rec = ds[i]
        pairs = [future_actions(rec.targets, t, chunk) for t in range(rec.num_frames)]
        out.append(EpisodeTargets(rec.instruction, rec.images, np.stack([p[0] for p in pairs]).astype(np.float32),
                                  np.stack([p[1] for p in pairs])))
    return out


def epoch_order(windows: np.ndarray, consecutive: int, generator: torch.Generator) -> np.ndarray:
    """A shuffled order of `windows` (rows of `all_windows`) in which runs of `consecutive` windows of one episode
    stay together; `consecutive=1` is a plain shuffle."""
    if consecutive == 1:
        return windows[torch.randperm(len(windows), generator=generator).numpy()]
    starts = np.flatnonzero((np.diff(windows[:, 1], prepend=-1) != 1) | (np.diff(windows[:, 0], prepend=-1) != 0))
    runs = [r for a, b in zip(starts, [*starts[1:], len(windows)]) for r in np.split(np.arange(a, b),
                                                                                     range(consecutive, b - a, consecutive))]
    return windows[np.concatenate([runs[i] for i in torch.randperm(len(runs), generator=generator).tolist()])]


def all_windows(episodes: list[EpisodeTargets]) -> np.ndarray:
    """(N, 2) (episode, t) for every frame with at least one future action (as `WindowDataset`)."""
    return np.array([(e, t) for e, ep in enumerate(episodes) for t in range(ep.num_frames - 1)],
                    dtype=np.int64).reshape(-1, 2)


@dataclass
class WindowBatch:
    frames: np.ndarray  # (B, W, 2) (episode, frame) of each window position
    frame_mask: torch.Tensor  # (B, W) bool
    targets: torch.Tensor  # (B, W, chunk, 3) raw actions
    mask: torch.Tensor  # (B, W, chunk) bool: valid frame and valid future step


def window_batch(episodes: list[EpisodeTargets], windows: np.ndarray, window: int) -> WindowBatch:
    frames, fmasks, targets, masks = [], [], [], []
    for e, t in windows:
        idx, fmask = window_indices(int(t), window)
        ep = episodes[e]
        frames.append(np.stack([np.full_like(idx, e), idx], axis=-1))
        fmasks.append(fmask)
        targets.append(ep.future[idx])
        masks.append(ep.future_mask[idx] & fmask[:, None])
    return WindowBatch(np.stack(frames), torch.from_numpy(np.stack(fmasks)),
                       torch.from_numpy(np.stack(targets)), torch.from_numpy(np.stack(masks)))


class FrameFeatures:
    """Action-token features of (episode, frame) pairs: from cached decoder prefixes, or recomputed each call."""

    def __init__(self, model: VLAModel, episodes: list[EpisodeTargets], cache: bool, progress: bool = False,
                 batch_frames: int = 64):
        self.model, self.episodes = model, episodes
        self.prefixes: list[Prefix] | None = None
        self.cache_seconds = 0.0
        if cache:
            start = time.perf_counter()
            with torch.no_grad():
                self.prefixes = [self._prefix_of_episode(ep, batch_frames)
                                 for ep in tqdm(episodes, desc="caching features", disable=not progress, leave=False)]
            self.cache_seconds = time.perf_counter() - start
            for ep in episodes:  # images are no longer needed
                ep.images = None

    def _prefix_of_episode(self, ep: EpisodeTargets, batch_frames: int) -> Prefix:
        chunks = [ep.images[s:s + batch_frames] for s in range(0, ep.num_frames, batch_frames)]
        return Prefix.cat([self.model.encode_frames(c, [ep.instruction] * len(c))[1] for c in chunks])

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """frames (..., 2) → features (..., D); each distinct frame goes through the model once."""
        flat = frames.reshape(-1, 2)
        unique, inverse = np.unique(flat, axis=0, return_inverse=True)
        if self.prefixes is not None:
            prefix = Prefix.cat([self.prefixes[e].select(torch.as_tensor(unique[unique[:, 0] == e, 1]))
                                 for e in np.unique(unique[:, 0])])
        else:
            images = np.stack([self.episodes[e].images[t] for e, t in unique])
            prefix = self.model.encode_frames(images, [self.episodes[e].instruction for e, _ in unique])[1]
        feats = self.model.action_features(prefix.to(self.model.scale.device))
        return feats[torch.as_tensor(inverse.reshape(-1))].view(*frames.shape[:-1], -1)


def set_head_input_stats(model: VLAModel, features: FrameFeatures, batch_frames: int = 256) -> None:
    """Standardise the head's inputs with the initial features of every training frame."""
    frames = np.array([(e, t) for e, ep in enumerate(features.episodes) for t in range(ep.num_frames)])
    with torch.no_grad():
        feats = torch.cat([features(frames[s:s + batch_frames]) for s in range(0, len(frames), batch_frames)])
    model.head.set_input_stats(feats)


def batch_loss(model: VLAModel, features: FrameFeatures, batch: WindowBatch) -> torch.Tensor:
    device = model.scale.device
    feats = features(batch.frames)
    pred, _ = model.head(feats, batch.frame_mask.to(device))
    return chunk_loss(pred, model.normalise(batch.targets.to(device)), batch.mask.to(device))


def mean_loss(model: VLAModel, features: FrameFeatures, windows: np.ndarray, window: int, batch_size: int) -> float:
    """Masked Huber loss over all valid (frame, future step) pairs of `windows`, whatever the batch size."""
    model.eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, len(windows), batch_size):
            batch = window_batch(features.episodes, windows[s:s + batch_size], window)
            valid = float(batch.mask.sum())
            total += float(batch_loss(model, features, batch)) * valid
            count += valid
    return total / max(count, 1.0)


def _splits(data: Path) -> tuple[EpisodeDataset, list[int], list[int], str | None]:
    """Train and val episode indices of one `EpisodeDataset` ('all'); falls back to a held-out tail without val."""
    ds = EpisodeDataset(data, "all", only_success=True)  # never imitate a demo the expert failed (noise)
    train_idx = [i for i, e in enumerate(ds.entries) if e.get("split", "train") == "train"]
    val_idx = [i for i, e in enumerate(ds.entries) if e.get("split") == "val"]
    note = None
    if not val_idx:
        n_val = max(1, round(FALLBACK_VAL_FRACTION * len(ds)))
        if len(ds) < 2:
            raise ValueError(f"{data} has {len(ds)} episode; training needs at least 2 (train + val): generate more")
        train_idx, val_idx = list(range(len(ds) - n_val)), list(range(len(ds) - n_val, len(ds)))
        note = f"no val split in {data}: holding out its last {n_val} episodes"
    return ds, train_idx, val_idx, note


def action_scale(episodes: list[EpisodeTargets], dims: tuple[int, ...]) -> np.ndarray:
    """Per-dim max |action| over the training targets (1 where a dim is always 0), so targets fill [-1, 1]."""
    peak = np.max(np.stack([np.abs(ep.future).reshape(-1, 3).max(0) for ep in episodes]), axis=0)[list(dims)]
    return np.where(peak > 1e-6, peak, 1.0).astype(np.float32)


def build_model(cfg: TrainConfig, drive: str, scale: np.ndarray) -> VLAModel:
    torch.manual_seed(cfg.seed)
    head = HeadConfig(window=cfg.window, chunk=cfg.chunk, hidden=cfg.hidden, layers=cfg.lstm_layers,
                      dims=LAYOUT_DIMS[drive])
    model = VLAModel(load_backbone(cfg.backbone, cfg.device), head, scale)
    model.freeze_backbone()
    if cfg.mode == "lora":
        model.add_lora(cfg.lora())
    return model.to(cfg.device)


def make_optimizer(model: VLAModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, weight decay 0.01; lr 1e-4 for head + action token, 1e-5 for LoRA adapters."""
    head = [model.action_token, *model.head.parameters()]
    groups = [{"params": head, "lr": cfg.lr_head}]
    lora = [p for p in model.backbone.parameters() if p.requires_grad]
    if lora:
        groups.append({"params": lora, "lr": cfg.lr_lora})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def _trainable_state(model: VLAModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume.pt")


def _save_resume(path: Path, model: VLAModel, opt: torch.optim.Optimizer, cfg: TrainConfig, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"fingerprint": cfg.fingerprint(), "weights": _trainable_state(model), "optimizer": opt.state_dict(),
                "rng": torch.get_rng_state(), **state}, tmp)
    os.replace(tmp, path)


def _load_resume(path: Path, model: VLAModel, opt: torch.optim.Optimizer, cfg: TrainConfig) -> dict | None:
    if not (cfg.resume and path.is_file()):
        return None
    try:
        state = torch.load(path, map_location=cfg.device, weights_only=True)
    except Exception as exc:  # any unreadable/foreign file: never unpickle beyond weights_only
        raise ValueError(f"cannot read resume state {path} ({type(exc).__name__}); delete it to start over") from exc
    if state.get("fingerprint") != cfg.fingerprint():
        raise ValueError(f"{path} was written by a run with other options; delete it to start over, or re-run "
                         "with the same options to resume")
    params = dict(model.named_parameters())
    for name, value in state["weights"].items():
        params[name].data.copy_(value)
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"].cpu())
    return state


def train(cfg: TrainConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train, keep the best checkpoint by val loss at `cfg.out`, return losses and timings."""
    log = log or (tqdm.write if progress else (lambda msg: None))
    ds, train_idx, val_idx, note = _splits(cfg.data)
    if note:
        log(note)
    drive = check_drive(((ds.manifest or {}).get("config") or {}).get("drive", "diff"))
    keep_images = not (cfg.mode == "frozen" and cfg.cache_features)
    train_eps = load_episodes(ds, train_idx, cfg.chunk, progress)
    val_eps = load_episodes(ds, val_idx, cfg.chunk, progress)
    model = build_model(cfg, drive, action_scale(train_eps, LAYOUT_DIMS[drive]))
    train_feats = FrameFeatures(model, train_eps, cache=not keep_images, progress=progress)
    val_feats = FrameFeatures(model, val_eps, cache=not keep_images, progress=progress)
    set_head_input_stats(model, train_feats)
    train_windows, val_windows = all_windows(train_eps), all_windows(val_eps)
    opt = make_optimizer(model, cfg)
    trainable = [p for group in opt.param_groups for p in group["params"]]
    resume = _resume_path(cfg.out)
    state = _load_resume(resume, model, opt, cfg) or {"epoch": 0, "best_val": math.inf, "best_epoch": 0,
                                                      "history": []}
    if state["epoch"]:
        log(f"resuming from epoch {state['epoch']} ({resume})")
    info = {"mode": cfg.mode, "drive": drive, "data": str(cfg.data), "seed": cfg.seed, "epochs": cfg.epochs,
            "lr_head": cfg.lr_head, "lr_lora": cfg.lr_lora, "batch_size": cfg.batch_size}
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = epoch_order(train_windows, cfg.consecutive, torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        total = 0.0
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for s in bar:
            windows = order[s:s + cfg.batch_size]
            loss = batch_loss(model, train_feats, window_batch(train_eps, windows, cfg.window))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}; lower --lr-head")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
            total += loss.item() * len(windows)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        train_loss = total / max(len(train_windows), 1)
        val_loss = mean_loss(model, val_feats, val_windows, cfg.window, cfg.batch_size)
        seconds = time.perf_counter() - start
        state["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "seconds": seconds})
        if val_loss < state["best_val"]:
            state.update(best_val=val_loss, best_epoch=epoch)
            save_checkpoint(cfg.out, model, {**info, "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        state["epoch"] = epoch
        _save_resume(resume, model, opt, cfg, state)
        log(f"epoch {epoch}/{cfg.epochs}: train_loss={train_loss:.4f} val_loss={val_loss:.4f} ({seconds:.1f}s)")
    resume.unlink(missing_ok=True)
    return TrainResult(cfg.out, state["best_val"], state["best_epoch"], state["history"],
                       count_parameters(model, trainable_only=True), count_parameters(model),
                       train_feats.cache_seconds + val_feats.cache_seconds)
