"""Kosmos-2 backbone: loading (hub id, local directory or `tiny`), context vectors and action-token features.

The action-token feature is computed in two steps so that frozen training can cache the expensive part:

1. `prefix`: the text decoder runs over `<s> <image> [64 image embeddings] </image> instruction` exactly as the
   Kosmos-2 processor lays it out (one image span marked by `image_embeds_position_mask`, the instruction after it,
   untouched) and returns its keys/values.
2. `action_features`: one extra position, the learnable action token, attends to those keys/values; its last-layer
   hidden state is the head input. This is mathematically the same as running the whole sequence at once, which
   `sequence_features` does when gradient checkpointing is on (Hugging Face's checkpointed layers keep no cache).

The backbone may run in bfloat16/float16 (`load_backbone(dtype=...)`); pixels go in and features come out in
float32, so the head and the loss never see the backbone's dtype.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoProcessor, Kosmos2Model
from transformers.cache_utils import DynamicCache

from mobile_vla_sim.errors import BackboneNotFoundError
from mobile_vla_sim.policies.config import DEFAULT_BACKBONE, TINY, TINY_PRETRAINED
from mobile_vla_sim.policies.tiny_kosmos import build_tiny_kosmos, build_tiny_pretrained

#: Offline backbones built in-process (`TINY_NAMES`): their weights go into checkpoints, which are then
#: self-contained.
TINY_BACKBONES = {TINY: build_tiny_kosmos, TINY_PRETRAINED: build_tiny_pretrained}


@dataclass
class Prefix:
    """Decoder keys/values of the image + instruction prefix for N frames, right-padded to a common length L."""

    kv: torch.Tensor  # (N, layers, 2, heads, L, head_dim)
    mask: torch.Tensor  # (N, L) long, 1 = real token

    def __len__(self) -> int:
        return int(self.kv.shape[0])

    def select(self, index: torch.Tensor | list[int]) -> Prefix:
        return Prefix(self.kv[index], self.mask[index])

    def to(self, device: torch.device | str) -> Prefix:
        return Prefix(self.kv.to(device), self.mask.to(device))

    @staticmethod
    def cat(parts: list[Prefix]) -> Prefix:
        """Concatenate along frames, padding every part to the longest prefix (padding is masked out)."""
        length = max(p.kv.shape[-2] for p in parts)
        kv = [F.pad(p.kv, (0, 0, 0, length - p.kv.shape[-2])) for p in parts]
        mask = [F.pad(p.mask, (0, length - p.mask.shape[-1])) for p in parts]
        return Prefix(torch.cat(kv), torch.cat(mask))


class Backbone(nn.Module):
    """A `Kosmos2Model` with its processor, and the two feature types the VLA policy uses."""

    def __init__(self, model: Kosmos2Model, processor, spec: str):
        super().__init__()
        self.model = model
        self.processor = processor
        self.spec = spec
        ip = processor.image_processor
        self.register_buffer("_mean", torch.tensor(ip.image_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("_std", torch.tensor(ip.image_std, dtype=torch.float32).view(1, 3, 1, 1), False)
        self._text_cache: dict[str, tuple[list[int], list[int]]] = {}
        self.checkpointing = False

    def enable_checkpointing(self) -> None:
        """Hugging Face gradient checkpointing on every vision and text layer (non-reentrant: no input needs
        `requires_grad`, and dropout masks are replayed); active in training mode only."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns there
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.checkpointing = True

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.embed_dim)

    @property
    def num_image_tokens(self) -> int:
        return int(self.model.config.latent_query_num)

    @property
    def image_size(self) -> int:
        return int(self.processor.image_processor.crop_size["height"])

    @property
    def device(self) -> torch.device:
        return self._mean.device

    def pixel_values(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """CLIP preprocessing of uint8 RGB frames (N, H, W, 3), batched in torch.

        Resize the shortest edge to the processor's size (bicubic, antialiased), centre-crop, CLIP mean/std: the
        processor's own steps, without a PIL round trip per frame. Float frames are taken as already normalised
        (by a deployment adapter, rightly or not) and are only resized and cropped.
        """
        x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
        if not (x.dtype == torch.uint8 or x.is_floating_point()) or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3) RGB, got {x.dtype} {tuple(x.shape)}")
        normalised = x.is_floating_point()
        x = x.to(self.device).permute(0, 3, 1, 2).float()
        if not normalised:
            x = x / 255.0
        size = self.image_size
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=new_h < h, align_corners=False)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top:top + size, left:left + size]
        return x if normalised else (x.clamp(0.0, 1.0) - self._mean) / self._std

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Context vectors (N, 64, D): `Kosmos2Model.get_image_features` (ViT → LN → L2 → latent-query projection)."""
        return self.model.get_image_features(pixel_values=pixel_values.to(self.dtype)).pooler_output

    def _encode_one(self, instruction: str) -> tuple[list[int], list[int]]:
        if instruction not in self._text_cache:
            dummy = np.zeros((self.image_size, self.image_size, 3), np.uint8)
            enc = self.processor(text=instruction, images=dummy, num_image_tokens=self.num_image_tokens)
            self._text_cache[instruction] = (list(enc["input_ids"]), list(enc["image_embeds_position_mask"]))
        return self._text_cache[instruction]

    def text_length(self, instruction: str) -> int:
        """Tokens of the decoder prefix (`<s> <image> [image] </image> instruction`) for this instruction."""
        return len(self._encode_one(instruction)[0])

    def encode_text(self, instructions: list[str], length: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`input_ids`, `attention_mask`, `image_embeds_position_mask` (N, L), from the processor.

        Right-padded to `length`, or to the longest instruction when None (then L depends on the batch).
        """
        encoded = [self._encode_one(s) for s in instructions]
        longest = max(len(ids) for ids, _ in encoded)
        if length is not None and length < longest:
            raise ValueError(f"text length {length} is shorter than the longest prefix ({longest} tokens)")
        length = longest if length is None else length
        pad = self.processor.tokenizer.pad_token_id
        ids = torch.full((len(encoded), length), pad, dtype=torch.long)
        attn = torch.zeros((len(encoded), length), dtype=torch.long)
        img = torch.zeros((len(encoded), length), dtype=torch.long)
        for i, (tok, img_mask) in enumerate(encoded):
            ids[i, :len(tok)] = torch.tensor(tok)
            attn[i, :len(tok)] = 1
            img[i, :len(tok)] = torch.tensor(img_mask)
        return ids.to(self.device), attn.to(self.device), img.to(self.device)

    def prefix(self, image_embeds: torch.Tensor, instructions: list[str], length: int | None = None) -> Prefix:
        """Run the decoder over image + instruction for each frame; keep its keys/values for the action token.

        `length`: pad every prefix to this many tokens (see `encode_text`).
        """
        if len(instructions) != len(image_embeds):
            raise ValueError(f"{len(instructions)} instructions for {len(image_embeds)} frames; give one per frame")
        ids, attn, img_mask = self.encode_text(instructions, length)
        out = self.model.text_model(input_ids=ids, attention_mask=attn, image_embeds=image_embeds,
                                    image_embeds_position_mask=img_mask, use_cache=True)
        layers = (out["cache"] if "cache" in out else out["past_key_values"]).layers
        kv = torch.stack([torch.stack([layer.keys, layer.values], dim=1) for layer in layers], dim=1)
        return Prefix(kv, attn)

    def action_features(self, prefix: Prefix, action_embed: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden state (N, D) of the action token appended after each frame's prefix."""
        n = len(prefix)
        cache = DynamicCache()
        for layer in range(prefix.kv.shape[1]):
            cache.update(prefix.kv[:, layer, 0], prefix.kv[:, layer, 1], layer)
        mask = torch.cat([prefix.mask, prefix.mask.new_ones(n, 1)], dim=1)
        # The token right after each (unpadded) prefix, in Kosmos-2's position numbering (starts at pad id + 1).
        pad = self.model.config.text_config.pad_token_id
        positions = prefix.mask.sum(dim=1, keepdim=True) + pad + 1
        embeds = action_embed.to(self.dtype).view(1, 1, -1).expand(n, 1, -1)
        out = self.model.text_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                                    **{_cache_argument(type(self.model.text_model)): cache})
        return out.last_hidden_state[:, 0].float()

    def sequence_features(self, image_embeds: torch.Tensor, instructions: list[str], action_embed: torch.Tensor,
                          length: int | None = None) -> torch.Tensor:
        """`action_features(prefix(...))` in one decoder pass over prefix + action token, without a KV cache.

        Gradient checkpointing needs it: a checkpointed layer recomputed in backward would append to the cache a
        second time, so Hugging Face drops the cache in training. Same positions and mask as the two-step path
        (the action token after the right padding, which the mask hides).
        """
        ids, attn, img_mask = self.encode_text(instructions, length)
        n, text = len(ids), self.model.text_model
        embeds = torch.cat([text.get_input_embeddings()(ids), action_embed.to(self.dtype).view(1, 1, -1).expand(n, 1, -1)], 1)
        pad = self.model.config.text_config.pad_token_id
        positions = torch.cat([attn.cumsum(1) * attn, attn.sum(1, keepdim=True) + 1], dim=1) + pad
        out = text(inputs_embeds=embeds, attention_mask=F.pad(attn, (0, 1), value=1), image_embeds=image_embeds,
                   image_embeds_position_mask=F.pad(img_mask, (0, 1)), position_ids=positions, use_cache=False)
        return out.last_hidden_state[:, -1].float()

    def save_pretrained(self, directory: str | Path) -> None:
        """Model and processor in one directory, loadable with `load_backbone(directory)`."""
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)


def _is_local_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or Path(spec).expanduser().exists()


#: Seconds the one hub request may take before a backbone missing from the cache is reported (no retries).
HUB_CHECK_TIMEOUT_S = 3.0
_NO_HUB_FIX = ("download it where there is network and pass its local directory (model + processor), "
               "or use --backbone tiny")


def _from_pretrained(source: str, dtype: torch.dtype):
    """The local directory or hub cache first (no network); for a hub id not cached, one short hub check, then
    the download. Without network this fails in seconds instead of after the hub client's ~50 s of retries."""
    try:
        return _load_pretrained(source, True, dtype)
    except (OSError, ValueError) as exc:
        if Path(source).is_dir():
            raise BackboneNotFoundError(f"backbone directory {source!r} is incomplete ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0][:100]}); save it again with "
                                        "Kosmos2Model.save_pretrained + processor.save_pretrained") from exc
    check_hub(source)
    return _load_pretrained(source, False, dtype)


def _load_pretrained(source: str, local_only: bool, dtype: torch.dtype):
    return (Kosmos2Model.from_pretrained(source, local_files_only=local_only, dtype=dtype),
            AutoProcessor.from_pretrained(source, local_files_only=local_only))


def check_hub(repo_id: str) -> None:
    """Raise `BackboneNotFoundError` unless the hub answers for `repo_id` within HUB_CHECK_TIMEOUT_S, once."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        raise BackboneNotFoundError(f"backbone {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is "
                                    f"set; unset it to download, or {_NO_HUB_FIX}")
    try:
        HfApi().model_info(repo_id, timeout=HUB_CHECK_TIMEOUT_S)
    except RepositoryNotFoundError as exc:
        raise BackboneNotFoundError(f"backbone {repo_id!r} is neither a local directory nor a model on the hub; "
                                    "check the id or path, or use --backbone tiny") from exc
    except Exception as exc:  # DNS, refused, timeout, auth...: whichever, the hub cannot serve it now
        raise BackboneNotFoundError(
            f"backbone {repo_id!r} is not in the Hugging Face cache and the hub ({constants.ENDPOINT}) cannot be "
            f"reached ({type(exc).__name__}, waited at most {HUB_CHECK_TIMEOUT_S:g} s); {_NO_HUB_FIX}") from exc


def load_backbone(spec: str = DEFAULT_BACKBONE, device: str | torch.device = "cpu", dtype: str = "float32"
                  ) -> Backbone:
    """Kosmos-2 from a hub id (cached or downloadable), a local `save_pretrained` directory, or `"tiny"`, with its
    weights in `dtype` (float32, bfloat16 or float16)."""
    torch_dtype = getattr(torch, dtype)
    if spec in TINY_BACKBONES:
        model, processor = TINY_BACKBONES[spec]()
        model.to(torch_dtype)
    else:
        source = str(Path(spec).expanduser()) if _is_local_path(spec) else spec
        if _is_local_path(spec) and not Path(source).is_dir():
            raise BackboneNotFoundError(f"backbone directory {spec!r} does not exist; pass a directory saved with "
                                        "Backbone.save_pretrained / Kosmos2Model.save_pretrained, a hub id, or 'tiny'")
        try:
            model, processor = _from_pretrained(source, torch_dtype)
        except BackboneNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise BackboneNotFoundError(f"cannot load Kosmos-2 backbone {spec!r} ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0][:100]}); {_NO_HUB_FIX}") from exc
    return Backbone(model, processor, spec).to(device)


@functools.lru_cache(maxsize=None)
def _cache_argument(text_model: type[nn.Module]) -> str:
    """The decoder's KV-cache keyword: `cache` from transformers 5.x on (`past_key_values` still works there, with a
    deprecation warning in every log), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(text_model.forward).parameters else "past_key_values"
