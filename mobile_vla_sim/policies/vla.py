"""The VLA model: Kosmos-2 backbone → action-token feature per frame → LSTM over a window → tanh MLP action chunks.

Matches the real project: window 8, LSTM hidden 512 × 4 layers, `fwd_pred_next_n` = 10 future actions
predicted at every frame of the window, Huber loss on actions normalised to [-1, 1] by a per-dim scale stored with
the model. At inference the first action of the chunk predicted at the last frame is executed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mobile_vla_sim.policies.backbone import Backbone, Prefix
from mobile_vla_sim.policies.config import LORA_TARGETS

#: Rows of every batch-invariant inference call (`VLAModel.invariant_*`): CPU and GPU kernels pick their blocking,
#: hence their float summation order, from the shapes, so one fixed shape gives every row the same bits.
INFERENCE_BATCH = 8
#: Batch-invariant prefixes are right-padded to their own token count rounded up to a multiple of this, so the padded
#: length depends on the instruction alone; coarse enough that the left/right instructions share one length.
TEXT_QUANTUM = 32

Out = TypeVar("Out", torch.Tensor, tuple[torch.Tensor, ...])


def in_fixed_batches(fn: Callable[[list[int]], Out], rows: list[int], batch: int) -> Out:
    """`fn(index)` on chunks of exactly `batch` of `rows` (the last padded by repeating its first row), concatenated.

    `fn` maps a list of row indices to a tensor, or a tuple of tensors, with one row per index; the padding rows
    are dropped. Every call has the same shape, so a row's result does not depend on the batch it came in.
    """
    parts = []
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        out = fn(chunk + chunk[:1] * (batch - len(chunk)))
        parts.append(tuple(o[:len(chunk)] for o in out) if isinstance(out, tuple) else out[:len(chunk)])
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)


#: Activations between the action MLP's layers: this package's (GELU) and RoboVLMs' `MLPTanhHead` (ReLU).
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}
#: How a window with fewer real frames than `window` (an episode's first frames) enters the LSTM: `zeros` = left-padded
#: with zero features (this package's training windows), `trim` = the real frames only (RoboVLMs' inference, whose
#: LSTM history grows frame by frame up to the window).
HISTORIES = ("zeros", "trim")


@dataclass
class HeadConfig:
    """Action head shape and the dataset dims it predicts (`LAYOUT_DIMS[drive]`).

    `mlp`: hidden widths of the tanh MLP after the LSTM ([default: one layer of `hidden`]; RoboVLMs' `MLPTanhHead`:
    1024, 512, 256); `activation` and `history`: see `ACTIVATIONS` and `HISTORIES`. The defaults are this package's
    head; the RoboVLMs variants exist for imported checkpoints (`policies.robovlms`).
    """

    window: int = 8
    chunk: int = 10
    hidden: int = 512
    layers: int = 4
    dims: tuple[int, ...] = (0, 2)
    mlp: tuple[int, ...] | None = None
    activation: str = "gelu"
    history: str = "zeros"

    def __post_init__(self) -> None:
        self.dims = tuple(int(d) for d in self.dims)
        self.mlp = (int(self.hidden),) if self.mlp is None else tuple(int(w) for w in self.mlp)
        for key in ("window", "chunk", "hidden", "layers"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"head {key} must be >= 1, got {getattr(self, key)}")
        if not self.mlp or min(self.mlp) < 1:
            raise ValueError(f"head MLP widths must be >= 1, got {list(self.mlp)}")
        if self.activation not in ACTIVATIONS or self.history not in HISTORIES:
            raise ValueError(f"head activation {self.activation!r} / history {self.history!r}: use one of "
                             f"{', '.join(ACTIVATIONS)} / {', '.join(HISTORIES)}")


@dataclass
class LoraSettings:
    """PEFT LoRA on Kosmos-2 linear layers (vision and text): the real project's planned r=8, alpha=16."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = field(default=LORA_TARGETS)

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        unknown = sorted(set(self.targets) - set(LORA_TARGETS))
        if unknown or not self.targets:
            raise ValueError(f"LoRA targets {unknown or '[]'} are not valid; choose among {', '.join(LORA_TARGETS)}")
        if self.r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


class ActionHead(nn.Module):
    """LSTM over per-frame features; at every frame a tanh MLP predicts `chunk` normalised future actions.

    Inputs are standardised with training-set statistics (`set_input_stats`): decoder hidden states share a large
    common component and differ between frames by a small fraction of their norm, which the LSTM alone learns
    from far too slowly (the head then collapses to the mean action). Imported RoboVLMs heads keep the identity.
    """

    def __init__(self, input_dim: int, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))
        self.lstm = nn.LSTM(input_dim, cfg.hidden, cfg.layers, batch_first=True)
        widths = (cfg.hidden, *cfg.mlp)
        hidden = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), ACTIVATIONS[cfg.activation]())]
        self.mlp = nn.Sequential(*hidden, nn.Linear(widths[-1], cfg.chunk * len(cfg.dims)), nn.Tanh())

    def forward(self, feats: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, W, D), frame_mask (B, W) → predictions (B, W, chunk, dims) and h_n (B, hidden).

        Windows are left-padded (the episode start). With history `zeros` padded frames enter the LSTM as zeros, at
        train and test time; with `trim` each window runs over its real frames only (rows grouped by their count;
        predictions at padded positions are zeros).
        """
        if self.cfg.history == "zeros":
            return self._run(feats, frame_mask)
        width = feats.shape[1]
        pred = feats.new_zeros(*feats.shape[:2], self.cfg.chunk, len(self.cfg.dims))
        h_n = feats.new_zeros(len(feats), self.cfg.hidden)
        counts = frame_mask.sum(1)
        for n in counts.unique().tolist():
            rows = (counts == n).nonzero().squeeze(1)
            pred[rows, width - n:], h_n[rows] = self._run(feats[rows, width - n:], frame_mask[rows, width - n:])
        return pred, h_n

    def _run(self, feats: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (feats - self.input_mean) / self.input_std
        out, (h_n, _) = self.lstm(x * frame_mask.unsqueeze(-1).to(feats.dtype))
        pred = self.mlp(out).view(*out.shape[:2], self.cfg.chunk, len(self.cfg.dims))
        return pred, h_n[-1]

    @torch.no_grad()
    def set_input_stats(self, feats: torch.Tensor) -> None:
        """Per-dim mean and std of (N, D) training features (std floored so constant dims stay finite)."""
        self.input_mean.copy_(feats.mean(0))
        self.input_std.copy_(feats.std(0).clamp_min(1e-4))


class VLAModel(nn.Module):
    """Backbone + learnable action token + action head + the action normalisation scale."""

    def __init__(self, backbone: Backbone, head_cfg: HeadConfig, scale: torch.Tensor | np.ndarray):
        super().__init__()
        scale = torch.as_tensor(np.asarray(scale, dtype=np.float32))
        if scale.shape != (len(head_cfg.dims),) or not torch.isfinite(scale).all() or (scale <= 0).any():
            raise ValueError(f"action scale must be {len(head_cfg.dims)} positive finite values, got {scale.tolist()}")
        self.backbone = backbone
        self.head_cfg = head_cfg
        self.lora: LoraSettings | None = None
        std = float(getattr(backbone.model.config.text_config, "init_std", 0.02))
        self.action_token = nn.Parameter(torch.randn(backbone.hidden_size) * std)
        self.head = ActionHead(backbone.hidden_size, head_cfg)
        self.register_buffer("scale", scale)

    # --- training modes ----------------------------------------------------------------------------------------
    def freeze_backbone(self) -> None:
        """Frozen mode: no VLM weight learns and dropout is off, so per-frame prefixes can be cached."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def add_lora(self, settings: LoraSettings) -> None:
        """Inject PEFT LoRA adapters into the backbone; only they (plus token and head) stay trainable."""
        config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=list(settings.targets))
        inject_adapter_in_model(config, self.backbone.model)
        for name, p in self.backbone.named_parameters():
            if "lora_" in name:  # float32 adapters on a bfloat16/float16 base, as peft's get_peft_model makes them:
                p.data = p.data.float()  # updates of lr 1e-5 would vanish in bfloat16 (8 significant bits)
            p.requires_grad_("lora_" in name)
        self.lora = settings

    def train(self, mode: bool = True) -> VLAModel:
        super().train(mode)
        if self.lora is None:  # a frozen backbone stays in eval mode
            self.backbone.eval()
        return self

    # --- features ----------------------------------------------------------------------------------------------
    def encode_frames(self, images: np.ndarray | torch.Tensor, instructions: list[str],
                      text_length: int | None = None) -> tuple[torch.Tensor, Prefix]:
        """Context vectors (N, 64, D) and decoder prefixes of N frames, each with its own instruction."""
        context = self.backbone.image_features(self.backbone.pixel_values(images))
        return context, self.backbone.prefix(context, instructions, text_length)

    def action_features(self, prefix: Prefix) -> torch.Tensor:
        """(N, D) head inputs: the decoder's last hidden state at the action token."""
        return self.backbone.action_features(prefix, self.action_token)

    def frame_features(self, images: np.ndarray | torch.Tensor, instructions: list[str],
                       text_length: int | None = None) -> torch.Tensor:
        """(N, D) head inputs of N frames in one backbone call (its bits depend on N and the longest instruction).

        While gradient checkpointing is active (LoRA training) the decoder runs once over prefix + action token
        (`Backbone.sequence_features`): checkpointed layers keep no KV cache.
        """
        if self.backbone.checkpointing and self.backbone.training:
            context = self.backbone.image_features(self.backbone.pixel_values(images))
            return self.backbone.sequence_features(context, instructions, self.action_token, text_length)
        return self.action_features(self.encode_frames(images, instructions, text_length)[1])

    # --- batch-invariant inference -----------------------------------------------------------------------------
    def invariant_frame_features(self, images: np.ndarray | torch.Tensor, instructions: list[str],
                                 batch: int = INFERENCE_BATCH) -> torch.Tensor:
        """`frame_features`, bit-identical for a frame whatever else is in the call and where.

        Frames are grouped by padded text length (own prefix length rounded up to `TEXT_QUANTUM`) and each group
        runs `in_fixed_batches`: every backbone call has shape (`batch`, length), whatever N is. Attention uses
        the composite (math) kernel: the fused CPU kernel gives a 1-query row (the action token) different bits
        depending on the thread that computes it, i.e. on the row's position.
        """
        lengths = [-(-self.backbone.text_length(s) // TEXT_QUANTUM) * TEXT_QUANTUM for s in instructions]
        out = torch.empty(len(instructions), self.backbone.hidden_size, device=self.scale.device)
        with sdpa_kernel(SDPBackend.MATH):
            for length in sorted(set(lengths)):
                rows = [i for i, n in enumerate(lengths) if n == length]
                def features(idx: list[int], length: int = length) -> torch.Tensor:
                    return self.frame_features(images[idx], [instructions[i] for i in idx], length)

                out[rows] = in_fixed_batches(features, rows, batch)
        return out

    def invariant_head(self, feats: torch.Tensor, frame_mask: torch.Tensor, batch: int = INFERENCE_BATCH
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """`head(feats, frame_mask)` in LSTM calls of exactly `batch` windows (see `in_fixed_batches`); with history
        `trim`, windows with the same number of real frames are grouped, so that every LSTM call has one shape."""
        counts = frame_mask.sum(1).tolist() if self.head_cfg.history == "trim" else [0] * len(feats)
        pred = feats.new_zeros(*feats.shape[:2], self.head_cfg.chunk, len(self.head_cfg.dims))
        h_n = feats.new_zeros(len(feats), self.head_cfg.hidden)
        for n in sorted(set(counts)):
            rows = [i for i, c in enumerate(counts) if c == n]
            pred[rows], h_n[rows] = in_fixed_batches(lambda idx: self.head(feats[idx], frame_mask[idx]), rows, batch)
        return pred, h_n

    # --- actions -----------------------------------------------------------------------------------------------
    def normalise(self, actions3: torch.Tensor) -> torch.Tensor:
        """[..., 3] dataset actions → [..., len(dims)] in [-1, 1]."""
        return (actions3[..., list(self.head_cfg.dims)] / self.scale).clamp(-1.0, 1.0)

    def denormalise(self, pred: torch.Tensor) -> torch.Tensor:
        """[..., len(dims)] normalised predictions → [..., 3] dataset actions (zeros outside the layout's dims)."""
        out = pred.new_zeros(*pred.shape[:-1], 3)
        out[..., list(self.head_cfg.dims)] = pred * self.scale
        return out


def chunk_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Huber loss over (B, W, chunk, dims), averaged over valid (frame, future step) pairs only."""
    per = F.huber_loss(pred, target, reduction="none").mean(-1)
    mask = mask.to(per.dtype)
    return (per * mask).sum() / mask.sum().clamp_min(1.0)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
