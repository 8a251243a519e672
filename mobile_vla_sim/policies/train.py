"""Train a VLA policy (frozen or LoRA Kosmos-2 + LSTM head) on a dataset folder; write the best `.ckpt` by val loss.

Frozen mode runs the VLM once per (episode, frame) and keeps the decoder's image + instruction keys/values; each
step then only runs the action token through the frozen decoder (so the action token still learns) and the head.
LoRA mode recomputes the backbone for the unique frames of every batch. Training is resumable: after each epoch a
`<out>.resume.pt` (tensors and plain types only, loaded with `weights_only=True`) holds the trainable weights,
optimizer and RNG state; it is deleted when training completes.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mobile_vla_sim.datasets.reader import EpisodeDataset, recorded_layout
from mobile_vla_sim.config import to_dict
from mobile_vla_sim.datasets.hdf5_format import instruction_from_episode_name
from mobile_vla_sim.datasets.windows import EpisodeTargets, window_index
from mobile_vla_sim.envs.actions import LAYOUT_DIMS, check_drive
from mobile_vla_sim.errors import DatasetError, Interrupted, OutputError, TrainingError
from mobile_vla_sim.io import atomic_write
from mobile_vla_sim.paths import check_output_file
from mobile_vla_sim.policies.backbone import Prefix, load_backbone
from mobile_vla_sim.policies.checkpoint import finish_checkpoint, read_checkpoint_config, save_checkpoint
from mobile_vla_sim.policies.config import TrainConfig
from mobile_vla_sim.policies.vla import HeadConfig, LoraSettings, VLAModel, chunk_loss, count_parameters
from mobile_vla_sim.progress import bar as progress_bar, write


@dataclass
class TrainResult:
    checkpoint: Path
    best_val_loss: float
    best_epoch: int
    history: list[dict]  # per epoch: epoch, train_loss, val_loss, seconds
    trainable_params: int
    total_params: int
    cache_seconds: float  # frozen mode: time to compute the feature cache (0 otherwise)
    val_episodes: list[str]  # names of the episodes the val loss is measured on (`datasets.splits`)


def load_episodes(ds: EpisodeDataset, chunk: int, progress: bool = False, instructions: str = "hdf5"
                  ) -> list[EpisodeTargets]:
    """Read every episode of `ds` with its per-frame future-action targets; `instructions` other than "hdf5" rebuilds
    each instruction from the file name with that instruction set (`TrainConfig.instructions`)."""
    out = []
    for i in progress_bar(range(len(ds)), desc="reading episodes", enabled=progress, leave=False):
        episode = ds[i]
        if instructions != "hdf5":
            episode.instruction = instruction_from_episode_name(ds.paths[i], instructions)
        out.append(EpisodeTargets.of(episode, chunk))
    return out


def all_windows(episodes: list[EpisodeTargets]) -> np.ndarray:
    """(N, 2) (episode, t) for every frame with an action to take after it (`window_index`)."""
    return window_index(ep.targeted_frames for ep in episodes)


def epoch_order(windows: np.ndarray, consecutive: int, generator: torch.Generator) -> np.ndarray:
    """A shuffled order of `windows` (rows of `all_windows`) in which runs of `consecutive` windows of one episode
    stay together; `consecutive=1` is a plain shuffle."""
    if consecutive == 1:
        return windows[torch.randperm(len(windows), generator=generator).numpy()]
    starts = np.flatnonzero((np.diff(windows[:, 1], prepend=-1) != 1) | (np.diff(windows[:, 0], prepend=-1) != 0))
    runs = [r for a, b in zip(starts, [*starts[1:], len(windows)]) for r in np.split(np.arange(a, b),
                                                                                     range(consecutive, b - a, consecutive))]
    return windows[np.concatenate([runs[i] for i in torch.randperm(len(runs), generator=generator).tolist()])]


@dataclass
class WindowBatch:
    frames: np.ndarray  # (B, W, 2) (episode, frame) of each window position
    frame_mask: torch.Tensor  # (B, W) bool
    targets: torch.Tensor  # (B, W, chunk, 3) raw actions
    mask: torch.Tensor  # (B, W, chunk) bool: valid frame and valid future step


def window_batch(episodes: list[EpisodeTargets], windows: np.ndarray, window: int) -> WindowBatch:
    """Stack the windows (rows (episode, t)) built by `EpisodeTargets.window`; frames stay (episode, frame) pairs
    so features come from the cache (or the backbone) once per distinct frame."""
    frames, fmasks, targets, masks = [], [], [], []
    for e, t in windows:
        idx, fmask, target, mask = episodes[e].window(int(t), window)
        frames.append(np.stack([np.full_like(idx, e), idx], axis=-1))
        fmasks.append(fmask)
        targets.append(target)
        masks.append(mask)
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
                                 for ep in progress_bar(episodes, desc="caching features", enabled=progress, leave=False)]
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
            feats = self.model.action_features(prefix.to(self.model.scale.device))
        else:
            images = np.stack([self.episodes[e].images[t] for e, t in unique])
            feats = self.model.frame_features(images, [self.episodes[e].instruction for e, _ in unique])
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


@torch.no_grad()
def dataset_loss(model: VLAModel, episodes: EpisodeDataset, batch_size: int = 32) -> float:
    """The training objective (masked Huber on normalised chunks) over every window of `episodes`: on the val
    split, the val loss training recorded for this model."""
    eps = load_episodes(episodes, model.head_cfg.chunk)
    windows = all_windows(eps)
    if len(windows) == 0:
        raise DatasetError(f"{episodes!r} has no frame with a next action; use longer episodes")
    return mean_loss(model.eval(), FrameFeatures(model, eps, cache=True), windows, model.head_cfg.window, batch_size)


def _drive_of_actions(episodes: list[EpisodeTargets], data: Path, log: Callable[[str], None]) -> str:
    """The action layout of episodes that record none (real data without dataset.json): omni when they move
    sideways (a diff-drive head would drop linear_y without a word), else diff."""
    if any(np.abs(ep.future[..., 1]).max(initial=0.0) > 0 for ep in episodes):
        log(f"{data} records no drive and its actions have linear_y: training the omni layout "
            "(linear_x, linear_y, angular_z)")
        return "omni"
    return "diff"


def action_scale(episodes: list[EpisodeTargets], dims: tuple[int, ...]) -> np.ndarray:
    """Per-dim max |action| over the training targets (1 where a dim is always 0), so targets fill [-1, 1]."""
    peak = np.max(np.stack([np.abs(ep.future).reshape(-1, 3).max(0) for ep in episodes]), axis=0)[list(dims)]
    return np.where(peak > 1e-6, peak, 1.0).astype(np.float32)


def build_model(cfg: TrainConfig, drive: str, scale: np.ndarray) -> VLAModel:
    torch.manual_seed(cfg.seed)
    head = HeadConfig(window=cfg.window, chunk=cfg.chunk, hidden=cfg.hidden, layers=cfg.lstm_layers,
                      dims=LAYOUT_DIMS[drive])
    model = VLAModel(load_backbone(cfg.backbone, cfg.device, cfg.dtype), head, scale)
    model.freeze_backbone()
    if cfg.mode == "lora":
        model.add_lora(LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                    targets=cfg.lora_targets))
        if cfg.gradient_checkpointing == "on":
            model.backbone.enable_checkpointing()
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
    """Serialised in memory, then written with plain file I/O: torch's own writer reports a full disk as a cryptic
    RuntimeError; here it is a one-line `OutputError` and the previous resume state stays whole."""
    data = io.BytesIO()
    torch.save({"fingerprint": cfg.fingerprint(), "weights": _trainable_state(model),
                "optimizer": opt.state_dict(), "rng": torch.get_rng_state(), **state}, data)
    try:
        atomic_write(path, data.getvalue())
    except OSError as err:
        raise OutputError(f"cannot write resume state {path} ({err.strerror or err}); free space and run the same "
                          "command again (it resumes from the last epoch saved)") from None


def _load_resume(path: Path, model: VLAModel, opt: torch.optim.Optimizer, cfg: TrainConfig) -> dict | None:
    if not (cfg.resume and path.is_file()):
        return None
    try:
        state = torch.load(path, map_location=cfg.device, weights_only=True)
    except Exception as exc:  # any unreadable/foreign file: never unpickle beyond weights_only
        raise TrainingError(f"cannot read resume state {path} ({type(exc).__name__}); delete it to start over") \
            from exc
    if not isinstance(state, dict) or state.get("fingerprint") != cfg.fingerprint():
        raise TrainingError(f"{path} was written by a run with other options; delete it to start over, or re-run "
                            "with the same options to resume")
    try:
        params = dict(model.named_parameters())
        for name, value in state["weights"].items():
            params[name].data.copy_(value)
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"].cpu())
        for key, kind in (("epoch", int), ("best_epoch", int), ("best_val", float), ("history", list)):
            if not isinstance(state[key], kind):
                raise TypeError(f"{key} is {type(state[key]).__name__}")
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise TrainingError(f"{path} is a damaged resume state ({type(exc).__name__}: {str(exc)[:100]}); delete "
                            "it to start over") from exc
    return state


def _finished_run(cfg: TrainConfig, log: Callable[[str], None]) -> TrainResult | None:
    """The result of a completed run of this same config at `cfg.out` (nothing to redo), None when there is none.

    A checkpoint of another run is never overwritten: it is finished work. One of this run marked unfinished
    without resume state (killed between writing the two) is not: training starts over.
    """
    check_output_file(cfg.out, "--out")
    if not cfg.out.exists() or _resume_path(cfg.out).exists():
        return None
    info = read_checkpoint_config(cfg.out)
    if info.get("fingerprint") != cfg.fingerprint():
        val_loss = info.get("val_loss")
        loss = f" (val loss {val_loss:.4f})" if isinstance(val_loss, (int, float)) else ""
        raise OutputError(f"--out {cfg.out} holds a checkpoint of another training run{loss}; choose another "
                          "--out, or delete it to replace it")
    if info.get("finished") is False:
        log(f"{cfg.out} is an unfinished checkpoint of this run without its resume state (the run was stopped "
            "between writing the two); training again from the start")
        return None
    if cfg.epochs > info.get("epochs", 0):
        raise OutputError(f"--out {cfg.out} finished {info.get('epochs')} epochs of this run; train longer into a "
                          "new --out")
    return TrainResult(cfg.out, info["val_loss"], info["epoch"], [], info["trainable_params"], info["total_params"],
                       0.0, info.get("val_episodes", []))


def train(cfg: TrainConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train, keep the best checkpoint by val loss at `cfg.out`, return losses and timings.

    Re-running a finished run returns its result without training; Ctrl-C raises `Interrupted` saying truly what is
    kept (the best checkpoint and `<out>.resume.pt` exist only after the first epoch).
    """
    log = log or (write if progress else (lambda msg: None))
    finished = _finished_run(cfg, log)
    if finished is not None:
        log(f"{cfg.out} already holds this finished run; nothing to do")
        return finished
    try:
        return _train(cfg, progress, log)
    except KeyboardInterrupt:
        resume = _resume_path(cfg.out)
        kept = (f"the best checkpoint so far is {cfg.out} and finished epochs are in {resume}"
                if resume.exists() else "no epoch had finished, so nothing was saved")
        raise Interrupted(f"training interrupted: {kept}; run the same command again to "
                          f"{'resume' if resume.exists() else 'start'}") from None


def _train(cfg: TrainConfig, progress: bool, log: Callable[[str], None]) -> TrainResult:
    train_ds, val_ds = EpisodeDataset(cfg.data, "train"), EpisodeDataset(cfg.data, "val")
    if val_ds.note:
        log(val_ds.note)
    recorded, _ = recorded_layout(EpisodeDataset(cfg.data, "all"))  # and checked against dataset.json
    keep_images = not (cfg.mode == "frozen" and cfg.cache_features)
    train_eps = load_episodes(train_ds, cfg.chunk, progress, cfg.instructions)
    val_eps = load_episodes(val_ds, cfg.chunk, progress, cfg.instructions)
    drive = check_drive(recorded or _drive_of_actions(train_eps, cfg.data, log))
    model = build_model(cfg, drive, action_scale(train_eps, LAYOUT_DIMS[drive]))
    train_feats = FrameFeatures(model, train_eps, cache=not keep_images, progress=progress)
    val_feats = FrameFeatures(model, val_eps, cache=not keep_images, progress=progress)
    set_head_input_stats(model, train_feats)
    train_windows, val_windows = all_windows(train_eps), all_windows(val_eps)
    opt = make_optimizer(model, cfg)
    trainable = [p for group in opt.param_groups for p in group["params"]]
    # float16 activations underflow in backward without loss scaling (bfloat16 has float32's range: no scaler)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.dtype == "float16")
    resume = _resume_path(cfg.out)
    state = _load_resume(resume, model, opt, cfg) or {"epoch": 0, "best_val": math.inf, "best_epoch": 0,
                                                      "history": []}
    if state["epoch"]:
        log(f"resuming from epoch {state['epoch']} ({resume})")
    info = {"mode": cfg.mode, "drive": drive, "data": str(cfg.data), "seed": cfg.seed, "epochs": cfg.epochs,
            "lr_head": cfg.lr_head, "lr_lora": cfg.lr_lora, "batch_size": cfg.batch_size,
            "fingerprint": cfg.fingerprint(), "train_config": to_dict(cfg),
            "trainable_params": count_parameters(model, trainable_only=True), "total_params": count_parameters(model),
            # What the policy saw in training: eval warns when it is run on other images or another env.
            "dataset_config": {**(train_ds.manifest or {}).get("config", {}),
                               **({"instructions": cfg.instructions} if cfg.instructions != "hdf5" else {})},
            "val_episodes": val_ds.names}
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = epoch_order(train_windows, cfg.consecutive, torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        total = 0.0
        bar = progress_bar(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch}/{cfg.epochs}", enabled=progress,
                           leave=False)
        for s in bar:
            windows = order[s:s + cfg.batch_size]
            loss = batch_loss(model, train_feats, window_batch(train_eps, windows, cfg.window))
            if not torch.isfinite(loss):
                raise TrainingError(f"training diverged: the loss became {loss.item()} at epoch {epoch}; lower "
                                    "--lr-head (and --lr-lora)")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            total += loss.item() * len(windows)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        train_loss = total / max(len(train_windows), 1)
        val_loss = mean_loss(model, val_feats, val_windows, cfg.window, cfg.batch_size)
        seconds = time.perf_counter() - start
        state["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "seconds": seconds})
        if val_loss < state["best_val"]:
            state.update(best_val=val_loss, best_epoch=epoch)
            save_checkpoint(cfg.out, model, {**info, "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                             "finished": False})
        state["epoch"] = epoch
        _save_resume(resume, model, opt, cfg, state)
        log(f"epoch {epoch}/{cfg.epochs}: train_loss={train_loss:.4f} val_loss={val_loss:.4f} ({seconds:.1f}s)")
    if cfg.out.exists():
        finish_checkpoint(cfg.out)
    resume.unlink(missing_ok=True)
    return TrainResult(cfg.out, state["best_val"], state["best_epoch"], state["history"],
                       count_parameters(model, trainable_only=True), count_parameters(model),
                       train_feats.cache_seconds + val_feats.cache_seconds, val_ds.names)
