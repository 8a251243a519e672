"""The real project's checkpoints, both ways: RoboVLMs-style PyTorch Lightning `.ckpt` files of its Kosmos-2 + LSTM
policy in (`load_lightning_policy`), this package's checkpoints out in that layout (`export_checkpoint`).

The layout (the real project's RoboVLMs `RoboKosMos` model inside a Lightning trainer, saved by `ModelCheckpoint`):
`state_dict` with `model.backbone.*` (Hugging Face Kosmos-2 under `Kosmos2ForConditionalGeneration`'s names; PEFT's
`base_layer` / `lora_A.<adapter>` / `lora_B.<adapter>` keys where LoRA was on), `model.action_token` (D,),
`model.act_head.rnn.*` (`nn.LSTM` D -> hidden, `num_layers`, batch first) and `model.act_head.velocities.mlp.*`
(`MLPTanhHead`: Linear + ReLU layers, then a Linear to `fwd_pred_next_n x action_dim` and tanh), and the training
config under `hyper_parameters` (flat, or under `configs`: what `save_hyperparameters()` stores for a trainer whose one
argument is the config).

Reading runs no code from the file: `torch.load(weights_only=True, mmap=True)` with an explicit allow-list
(`allowed_globals`), after a scan that refuses, unread, a file whose pickle names any other global. The tensors stay
memory-mapped and are assigned into a model built without initialising its weights, so a 6.4 GB checkpoint is never
held twice (`benchmarks/bench_ckpt_load.py` measures it).

Mapped onto `VLAModel`: the backbone as is (LoRA adapters injected exactly where the file has them, scaled by
`train_setup.lora_alpha / r`), the head as `ActionHead` with `HeadConfig(mlp=<widths from the file>,
activation="relu", history="trim")` (the real head's LSTM history grows frame by frame up to the window), actions
(linear_x, linear_y) = dims (0, 1) of the omni drive, unnormalised per `norm_action` / `norm_min` / `norm_max`. Frames
are squashed to the model's square input (the real loader's resize of 16:9 camera frames) and normalised with the
config's `image_mean` / `image_std`. The prefix layout (image tokens, then the instruction, then the action token)
is this package's (`policies.backbone`), which really shows the instruction to the decoder.

An exported checkpoint describes where this package's head differs from their stock head (`act_head` fields
`mlp_hidden`, `mlp_activation`, `history`, `action_dims`, `action_scale`, input standardisation tensors) and carries
its own `mvla_sim` block, so that importing it here reproduces the original bit for bit; `export_checkpoint` returns
the differences that keep their unmodified code from loading it.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobile_vla_sim.envs.actions import LAYOUT_DIMS
from mobile_vla_sim.errors import BackboneNotFoundError, CheckpointError, require_file
from mobile_vla_sim.io import AtomicFile
from mobile_vla_sim.policies.backbone import TINY_BACKBONES, Backbone
from mobile_vla_sim.policies.config import DEFAULT_BACKBONE, DTYPES, check_device, check_dtype
from mobile_vla_sim.policies.deploy import AXES, resize_frames
from mobile_vla_sim.policies.vla import INFERENCE_BATCH, HeadConfig, VLAModel
from mobile_vla_sim.policies.vla_policy import VLAPolicy

BACKBONE, TOKEN, HEAD = "model.backbone.", "model.action_token", "model.act_head."
RNN, MLP = "rnn.", "velocities.mlp."
#: PEFT's `get_peft_model` wrapper prefix inside the backbone, and the wrapper's alias of the backbone in the trainer
#: (`self.model = get_peft_model(...)` on the RoboVLMs model registers the same modules a second time).
PEFT_PREFIX, PEFT_ALIAS = "base_model.model.", "model.model."
#: `Kosmos2ForConditionalGeneration`'s language-model head: tied to the token embeddings, unused for features.
LM_HEAD = "text_model.lm_head.weight"
EMBED_TOKENS = "text_model.model.embed_tokens.weight"
#: The real head: RoboVLMs' `MLPTanhHead` hidden widths (the December 2025 variant has three layers, later four).
REAL_MLPS = ((1024, 512, 256), (1024, 512))
REAL_HEAD_TYPE, OUR_HEAD_TYPE = "MobileVLALSTMDecoder", "MvlaSimLSTMDecoder"
#: The Lightning checkpoint layout written: Lightning reads this key to decide which migrations a file needs.
LIGHTNING_LAYOUT = "2.0.0"
_FIX = "export one with `mvla-sim export-checkpoint`, or use a checkpoint of the real project's Kosmos-2 + LSTM policy"


def allowed_globals() -> dict[str, Any]:
    """What a Lightning checkpoint of this policy may name beyond torch's own weights-only set, by the name its pickle
    uses: Lightning's `AttributeDict` hyper-parameters (read as plain dicts) and NumPy numbers and arrays (a callback's
    best score, a config value). Everything else is refused."""
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out: dict[str, Any] = {f"{module}.AttributeDict": dict for module in (
        "lightning.fabric.utilities.data", "lightning_fabric.utilities.data", "pytorch_lightning.utilities.parsing")}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[f"{module}.scalar"], out[f"{module}._reconstruct"] = core.scalar, core._reconstruct
    out["numpy.ndarray"], out["numpy.dtype"] = np.ndarray, np.dtype
    for kind in ("Bool", "Float16", "Float32", "Float64", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16",
                 "UInt32", "UInt64"):
        out[f"numpy.dtypes.{kind}DType"] = getattr(np.dtypes, f"{kind}DType")
    return out


def read_lightning(path: str | Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, tensors memory-mapped; nothing outside `allowed_globals` is unpickled."""
    path = Path(path)
    require_file(path, "checkpoint", _FIX, CheckpointError)
    allowed = allowed_globals()
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # a zip that is not a torch archive, a truncated one...: the scan cannot read it
        raise CheckpointError(f"{path} is a zip archive but not a readable torch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:80] if str(exc) else ''}); {_FIX}") from None
    unsafe = sorted(set(names) - set(allowed))
    if unsafe:
        more = f" and {len(unsafe) - 1} more" if len(unsafe) > 1 else ""
        raise CheckpointError(f"{path} was refused unread: its pickle names {unsafe[0]}{more}, which is code or an "
                              "object type, not tensors and plain data; a checkpoint is data, never code (re-save its "
                              "state_dict and hyper_parameters as tensors and plain Python types)")
    try:
        with torch.serialization.safe_globals([(obj, name) for name, obj in allowed.items()]):
            ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file",
                                                                "Check the documentation"))), lines[0] if lines else "")
        raise CheckpointError(f"{path} cannot be read as data only ({reason[:160]}); a checkpoint is data, never "
                              "code") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt ({type(exc).__name__}: {str(exc).splitlines()[0][:80]}); "
                              f"{_FIX}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path} is a torch checkpoint but not a PyTorch Lightning one (no state_dict); {_FIX}")
    return ckpt


def training_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The training config a Lightning checkpoint embeds: `hyper_parameters`, or its `configs` entry."""
    hp = ckpt.get("hyper_parameters") or {}
    return dict(hp["configs"] if isinstance(hp.get("configs"), dict) else hp)


# --- parsing: what the file holds, checked, before any model is built ---------------------------------------------
@dataclass
class Layout:
    """A Lightning checkpoint's tensors mapped to this package's names, and the model they describe."""

    backbone: dict[str, torch.Tensor]  # Kosmos2Model state-dict names (PEFT-injected names for LoRA layers)
    token: torch.Tensor
    head: dict[str, torch.Tensor]  # ActionHead state-dict names
    head_cfg: HeadConfig
    scale: list[float]
    lora: dict[str, Any] | None  # r, alpha, modules (full names)
    spec: str  # where the processor comes from: a tiny backbone name, a folder or a hub id
    config: dict[str, Any]  # the training config
    metadata: dict[str, Any]  # the policy's metadata (this package's checkpoint-config keys)


def _fail(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}; {_FIX}")


def _split(path: Path, state: dict[str, torch.Tensor]) -> tuple[dict, torch.Tensor, dict]:
    """Backbone tensors under Kosmos2Model names, the action token, and the head's tensors (prefix removed)."""
    backbone, head, token = {}, {}, None
    for key, tensor in state.items():
        if key.startswith(BACKBONE):
            name = key[len(BACKBONE):].removeprefix(PEFT_PREFIX)
            if "lora_magnitude" in name or "lora_embedding" in name:
                raise _fail(path, f"tensor {key!r} is a DoRA/embedding adapter, which is not supported (plain LoRA "
                                  "on linear layers only)")
            if name != LM_HEAD:
                backbone[re.sub(r"\.(lora_[AB])\.[^.]+\.weight$", r".\1.default.weight", name)] = tensor
        elif key == TOKEN:
            token = tensor
        elif key.startswith(HEAD):
            head[key[len(HEAD):]] = tensor
        elif not key.startswith(PEFT_ALIAS):
            raise _fail(path, f"tensor {key!r} is not part of the Kosmos-2 + LSTM policy this importer maps (it "
                              "could change the policy's actions)")
    if token is None or not backbone:
        raise _fail(path, f"no {TOKEN!r}" if token is None else f"no {BACKBONE}* tensors")
    return backbone, token, head


def _indexed(tensors: dict[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in tensors if (m := re.fullmatch(pattern, k))})


def _head(path: Path, config: dict, tensors: dict[str, torch.Tensor], dim: int
          ) -> tuple[HeadConfig, dict[str, torch.Tensor], list[float]]:
    """The head config, its state dict and the action scale, from the head's tensors and the training config."""
    act = config.get("act_head") or {}
    unknown = sorted(k for k in tensors if not k.startswith((RNN, MLP)) and k not in ("input_mean", "input_std"))
    if unknown:
        kind = "a classification head (action classes)" if unknown[0].startswith("logits") else f"{unknown[0]!r}"
        raise _fail(path, f"the action head holds {kind}, which is not supported: only the regression LSTM + tanh "
                          "MLP head")
    layers = _indexed(tensors, r"rnn\.weight_ih_l(\d+)")
    linears = _indexed(tensors, r"velocities\.mlp\.(\d+)\.weight")
    if not layers or not linears or linears != list(range(0, 2 * len(linears), 2)):
        raise _fail(path, f"the action head needs {HEAD}{RNN}weight_ih_l0.. and {HEAD}{MLP}0, 2, 4.. weights")
    lstm_in, hidden = tensors["rnn.weight_ih_l0"].shape[1], tensors["rnn.weight_hh_l0"].shape[1]
    if lstm_in != dim:
        raise _fail(path, f"the LSTM takes {lstm_in} inputs, the backbone gives {dim} per frame (latent query "
                          "pooling or several action tokens are not supported)")
    widths = [tensors[f"{MLP}{i}.weight"].shape[0] for i in linears]
    names = act.get("action_dims") or list(AXES[:int(act.get("action_dim", 2))])
    if not set(names) <= set(AXES):
        raise _fail(path, f"act_head.action_dims {names} must name among {', '.join(AXES)}")
    chunk, rest = divmod(widths[-1], len(names))
    if rest:
        raise _fail(path, f"the MLP outputs {widths[-1]} values, not a multiple of {len(names)} action dims")
    try:
        head_cfg = HeadConfig(window=int(config.get("window_size") or act.get("window_size") or 8), chunk=chunk,
                              hidden=hidden, layers=len(layers), dims=tuple(AXES.index(n) for n in names),
                              mlp=tuple(widths[:-1]), activation=act.get("mlp_activation", "relu"),
                              history=act.get("history", "trim"))
    except (ValueError, TypeError) as exc:
        raise _fail(path, f"its act_head config is not usable ({exc})") from None
    state = {"lstm." + k[len(RNN):]: v for k, v in tensors.items() if k.startswith(RNN)}
    state |= {"mlp." + k[len(MLP):]: v for k, v in tensors.items() if k.startswith(MLP)}
    state |= {k: tensors.get(k, torch.full((dim,), float(k == "input_std"))) for k in ("input_mean", "input_std")}
    return head_cfg, state, _scale(path, config, len(names))


def _scale(path: Path, config: dict, dims: int) -> list[float]:
    """Per-dim action scale: predictions in [-1, 1] times it are actions; `norm_action` maps [norm_min, norm_max]."""
    def per_dim(value) -> np.ndarray:
        try:
            return np.broadcast_to(np.asarray(value, np.float64), (dims,))
        except (ValueError, TypeError):
            raise _fail(path, f"action scale / norm range {value!r} is not one number or {dims}") from None

    given = (config.get("act_head") or {}).get("action_scale")
    if given is None and config.get("norm_action"):
        low, high = per_dim(config.get("norm_min", -1.0)), per_dim(config.get("norm_max", 1.0))
        if not np.allclose(low, -high):
            raise _fail(path, f"norm_min {low.tolist()} / norm_max {high.tolist()} are not symmetric; only ranges "
                              "[-m, m] map onto this package's action scale")
        given = high
    scale = [float(s) for s in per_dim(1.0 if given is None else given)]
    if not all(np.isfinite(s) and s > 0 for s in scale):
        raise _fail(path, f"action scale {scale} must be positive")
    return scale


def _lora(path: Path, config: dict, backbone: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """Rank, alpha and the full names of the layers that carry LoRA adapters, or None."""
    modules = sorted({k[:-len(".lora_A.default.weight")] for k in backbone if k.endswith(".lora_A.default.weight")})
    if not modules:
        return None
    ranks = {backbone[m + ".lora_A.default.weight"].shape[0] for m in modules}
    setup = config.get("train_setup") or {}
    if len(ranks) != 1 or "lora_alpha" not in setup:
        raise _fail(path, "LoRA adapters need one rank and train_setup.lora_alpha in hyper_parameters (their scale "
                          f"is alpha / r); found ranks {sorted(ranks)}, alpha {setup.get('lora_alpha')}")
    return {"r": ranks.pop(), "alpha": float(setup["lora_alpha"]), "modules": modules}


def _spec(config: dict) -> str:
    """Where the Kosmos-2 processor comes from: the config's tokenizer (or VLM) path, else the real model's hub id."""
    for section in ("tokenizer", "vlm"):
        spec = (config.get(section) or {}).get("pretrained_model_name_or_path")
        if spec:
            return str(spec)
    return DEFAULT_BACKBONE


def parse(path: str | Path) -> Layout:
    """Read and check a Lightning checkpoint; build nothing."""
    path = Path(path)
    ckpt = read_lightning(path)
    config = training_config(ckpt)
    backbone, token, head_tensors = _split(path, ckpt["state_dict"])
    if EMBED_TOKENS not in backbone:
        raise _fail(path, f"no {BACKBONE}{EMBED_TOKENS!r}: not a Hugging Face Kosmos-2 backbone")
    dim = backbone[EMBED_TOKENS].shape[1]
    if token.numel() != dim:
        raise _fail(path, f"{TOKEN!r} has {token.numel()} values, the backbone's width is {dim}")
    head_cfg, head, scale = _head(path, config, head_tensors, dim)
    ours = config.get("mvla_sim") or {}
    drive = ours.get("drive") or ("omni" if 1 in head_cfg.dims else "diff")
    if drive not in LAYOUT_DIMS or not set(head_cfg.dims) <= set(LAYOUT_DIMS[drive]):
        raise _fail(path, f"action dims {head_cfg.dims} do not fit drive {drive!r}")
    lora = _lora(path, config, backbone)
    spec = _spec(config)
    metadata = {
        "format": "robovlms", "mode": "lora" if lora else "frozen", "drive": drive, "backbone": spec,
        "head": {**vars(head_cfg), "dims": list(head_cfg.dims), "mlp": list(head_cfg.mlp)},
        "lora": None if lora is None else {k: lora[k] for k in ("r", "alpha")}, "scale": scale,
        "dataset_config": {"drive": drive}, "image_resize": "squash",
        **{k: config[k] for k in ("exp_name", "window_size", "fwd_pred_next_n", "image_mean", "image_std")
           if k in config},
        "max_text_len": (config.get("tokenizer") or {}).get("max_text_len"),
        **{k: ckpt[k] for k in ("epoch", "global_step") if isinstance(ckpt.get(k), int)},
        **{k: v for k, v in ours.items() if k not in ("head", "lora", "scale", "backbone", "format")},
    }
    return Layout(backbone, token, head, head_cfg, scale, lora, spec, config, metadata)


def read_lightning_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint-config view (drive, mode, dataset_config, ...) of a Lightning checkpoint, tensors unread."""
    return parse(path).metadata


# --- building the model -------------------------------------------------------------------------------------------
def _processor_and_config(path: Path, layout: Layout):
    """The Kosmos-2 processor and model config: built in code for the tiny backbones, else a local folder's or the
    hub's (cache first, then one short hub check), with every size the tensors determine taken from them."""
    from transformers import Kosmos2Config

    embedded = (layout.config.get("vlm") or {}).get("config")
    if layout.spec in TINY_BACKBONES:
        model, processor = TINY_BACKBONES[layout.spec]()
        config = model.config
    else:
        folder = next((p for p in (Path(layout.spec).expanduser(), path.parent / layout.spec) if p.is_dir()), None)
        hub = layout.config.get("model_url", "").removeprefix("https://huggingface.co/") or DEFAULT_BACKBONE
        processor = _load_processor(path, str(folder) if folder else hub, folder is None)
        config = Kosmos2Config.from_pretrained(str(folder)) if folder and (folder / "config.json").is_file() \
            else Kosmos2Config()  # microsoft/kosmos-2-patch14-224's sizes are the defaults
    if isinstance(embedded, dict):
        config = Kosmos2Config.from_dict(embedded)
    for (section, key), value in _sizes(path, layout.backbone).items():
        target = config if section is None else getattr(config, section)
        if getattr(target, key) != value and isinstance(embedded, dict):
            raise _fail(path, f"vlm.config says {key}={getattr(target, key)}, the tensors {value}")
        setattr(target, key, value)
    return processor, config


def _load_processor(path: Path, source: str, hub: bool):
    """The processor of a local folder, or of a hub id: from the cache, else downloaded after one short hub check."""
    from transformers import AutoProcessor

    from mobile_vla_sim.policies.backbone import check_hub

    try:
        return AutoProcessor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        if not hub:
            raise CheckpointError(f"{path} names the processor folder {source}, which is incomplete "
                                  f"({type(exc).__name__}); save it again with processor.save_pretrained") from None
    try:
        check_hub(source)
    except BackboneNotFoundError as exc:
        raise CheckpointError(f"{path} needs the Kosmos-2 processor (tokenizer, image settings) of {source!r}, which "
                              "is neither a local folder named by the checkpoint's tokenizer path nor in the Hugging "
                              f"Face cache ({str(exc).split(';')[0]}); download it where there is network "
                              f"(AutoProcessor.from_pretrained({source!r})) or run from the folder holding that path"
                              ) from None
    return AutoProcessor.from_pretrained(source)


def _sizes(path: Path, tensors: dict[str, torch.Tensor]) -> dict[tuple[str | None, str], int]:
    """The Kosmos-2 config values that the weights' shapes determine."""
    def shape(name: str) -> tuple[int, ...]:
        tensor = tensors.get(name, tensors.get(name.replace(".weight", ".base_layer.weight")))
        if tensor is None:
            raise _fail(path, f"its backbone has no {BACKBONE}{name}: not a Hugging Face Kosmos-2")
        return tuple(tensor.shape)

    text, vision = "text_model.model.", "vision_model.model."
    layers = {part: len(_indexed(tensors, re.escape(prefix) + r"layers\.(\d+)\..*"))
              for part, prefix in (("text", text), ("vision", vision + "encoder."))}
    patch = shape(vision + "embeddings.patch_embedding.weight")
    positions = shape(vision + "embeddings.position_embedding.weight")[0] - 1
    return {("text_config", "vocab_size"): shape(EMBED_TOKENS)[0], ("text_config", "embed_dim"): shape(EMBED_TOKENS)[1],
            ("text_config", "layers"): layers["text"],
            ("text_config", "ffn_dim"): shape(text + "layers.0.ffn.fc1.weight")[0],
            ("vision_config", "hidden_size"): patch[0], ("vision_config", "patch_size"): patch[-1],
            ("vision_config", "image_size"): patch[-1] * round(positions ** 0.5),
            ("vision_config", "intermediate_size"): shape(vision + "encoder.layers.0.mlp.fc1.weight")[0],
            ("vision_config", "num_hidden_layers"): layers["vision"],
            (None, "latent_query_num"): shape("image_to_text_projection.latent_query")[0]}


def _kosmos(path: Path, layout: Layout, config, dtype: torch.dtype):
    """Kosmos2Model with the file's tensors assigned in place (no copy unless `dtype` differs from the file's): built
    without initialising its weights, LoRA adapters injected where the file has them (kept float32)."""
    from transformers import Kosmos2Model

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the uninitialised parameters are never touched, so they cost no memory
    try:
        with no_init_weights():
            kosmos = Kosmos2Model(config)
    finally:
        torch.set_default_dtype(default)
    if layout.lora:
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(r=layout.lora["r"], lora_alpha=layout.lora["alpha"], lora_dropout=0.0,
                                           target_modules=layout.lora["modules"]), kosmos)
    # Buffers Hugging Face no longer saves (position ids, sinusoidal tables) are rebuilt by the model, not loaded.
    skip = set(dict(kosmos.named_buffers())) - set(kosmos.state_dict())
    state = {k: v.float() if "lora_" in k else v.to(dtype) if v.is_floating_point() else v
             for k, v in layout.backbone.items() if k not in skip}
    try:
        kosmos.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        problem = re.search(r"(Missing key\(s\)|Unexpected key\(s\)|size mismatch)[^\n]{0,120}", str(exc))
        raise _fail(path, f"its backbone does not fit Kosmos-2 ({problem.group(0) if problem else exc})") from None
    return kosmos


def build_model(path: str | Path, device: str = "cpu", dtype: str | None = None,
                layout: Layout | None = None) -> tuple[VLAModel, dict[str, Any]]:
    """The `VLAModel` (eval mode, no gradients) of a Lightning checkpoint, and its metadata."""
    path = Path(path)
    layout = parse(path) if layout is None else layout
    device = check_device(str(device))
    stored = str(layout.backbone[EMBED_TOKENS].dtype).removeprefix("torch.")
    dtype = dtype or (stored if stored in DTYPES and (stored != "float16" or device.startswith("cuda")) else "float32")
    check_dtype(dtype, device)
    processor, config = _processor_and_config(path, layout)
    backbone = Backbone(_kosmos(path, layout, config, getattr(torch, dtype)), processor, layout.spec)
    for name, key in (("_mean", "image_mean"), ("_std", "image_std")):
        if key in layout.config:
            getattr(backbone, name).copy_(torch.tensor(layout.config[key], dtype=torch.float32).view(1, 3, 1, 1))
    model = VLAModel(backbone, layout.head_cfg, np.asarray(layout.scale, np.float32))
    model.head.load_state_dict({k: v.float() for k, v in layout.head.items()})
    model.action_token.data = layout.token.reshape(-1).float()
    model.requires_grad_(False)
    return model.to(device).eval(), {**layout.metadata, "dtype": dtype}


class RoboVLMsPolicy(VLAPolicy):
    """A Lightning checkpoint's policy: uint8 frames are first squashed to the model's square input, as the real loader
    resized its 16:9 camera frames (bilinear; here antialiased), then normalised with the checkpoint's mean/std."""

    def __init__(self, model: VLAModel, metadata: dict[str, Any], batch: int = INFERENCE_BATCH):
        super().__init__(model, metadata, batch)
        self.name = f"robovlms-{metadata['mode']}"

    def act_chunk_batch(self, obs: dict[str, np.ndarray], slots) -> np.ndarray:
        images = np.asarray(obs["image"])
        if images.dtype == np.uint8:
            images = resize_frames(images, "squash", self.model.backbone.image_size)
        return super().act_chunk_batch({**obs, "image": images}, slots)


def load_lightning_policy(path: str | Path, device: str = "cpu", batch: int = INFERENCE_BATCH,
                          dtype: str | None = None) -> VLAPolicy:
    """The evaluation policy of a Lightning checkpoint: `RoboVLMsPolicy` for the real project's, the plain
    `VLAPolicy` for this package's exports (whose frames were never squashed), so they evaluate as the original."""
    model, metadata = build_model(path, device, dtype)
    cls = VLAPolicy if metadata.get("image_resize") == "none" else RoboVLMsPolicy
    return cls(model, metadata, batch)


# --- export -------------------------------------------------------------------------------------------------------
def head_differences(model: VLAModel) -> list[str]:
    """Where `model`'s action head differs from the real project's stock head (empty: their head class fits)."""
    cfg, stats, out = model.head_cfg, model.head.state_dict(), []
    if cfg.activation != "relu" or cfg.mlp not in REAL_MLPS:
        out.append(f"action MLP {'-'.join(map(str, cfg.mlp))} with {cfg.activation.upper()} (their MLPTanhHead: "
                   "ReLU 1024-512-256)")
    if not _identity_stats(stats):
        out.append("standardised LSTM inputs (model.act_head.input_mean / input_std; their head feeds raw features)")
    if cfg.history != "trim":
        out.append("zero features for missing history frames at an episode's start (theirs: the real frames only)")
    if cfg.dims != (0, 1):
        out.append(f"actions ({', '.join(AXES[d] for d in cfg.dims)}) (theirs: linear_x, linear_y)")
    if not torch.all(model.scale == 1.0):
        out.append(f"action scale {[round(s, 3) for s in model.scale.tolist()]} (their norm range: [-1, 1])")
    return out


def _identity_stats(stats: dict[str, torch.Tensor]) -> bool:
    return bool(torch.all(stats["input_mean"] == 0) and torch.all(stats["input_std"] == 1))


def export_checkpoint(model: VLAModel, config: dict[str, Any], out: str | Path, source: str = "") -> list[str]:
    """Write a model of this package (`checkpoint.load_checkpoint`'s model and config, read from `source`) in the
    RoboVLMs Lightning layout at `out`, atomically.

    Returns the differences from the real project's stock policy (the head's, `head_differences`, and the backbone's);
    the file describes them, so `mvla-sim eval --policy OUT` reproduces the original exactly.
    """
    cfg, kosmos, stats = model.head_cfg, model.backbone.model, model.head.state_dict()
    state: OrderedDict[str, torch.Tensor] = OrderedDict((BACKBONE + k, v) for k, v in kosmos.state_dict().items())
    state[BACKBONE + LM_HEAD] = state[BACKBONE + EMBED_TOKENS]  # tied, as in Kosmos2ForConditionalGeneration
    state[TOKEN] = model.action_token.detach()
    for key, value in stats.items():
        if key.startswith("lstm."):
            state[HEAD + RNN + key[len("lstm."):]] = value
        elif key.startswith("mlp."):
            state[HEAD + MLP + key[len("mlp."):]] = value
        elif not _identity_stats(stats):
            state[HEAD + key] = value
    spec, scale, lora = model.backbone.spec, model.scale.tolist(), model.lora
    head_diffs = head_differences(model)
    differences = head_diffs + ([] if spec == DEFAULT_BACKBONE else
                                [f"backbone {spec!r} (their stack builds {DEFAULT_BACKBONE})"])
    configs = {
        "robovlm_name": "RoboKosMos", "model": "kosmos",
        "model_url": f"https://huggingface.co/{DEFAULT_BACKBONE}" if spec == DEFAULT_BACKBONE else spec,
        "image_size": model.backbone.image_size, "image_mean": model.backbone._mean.flatten().tolist(),
        "image_std": model.backbone._std.flatten().tolist(), "window_size": cfg.window, "fwd_pred_next_n": cfg.chunk,
        "train_setup": {"freeze_backbone": True, "train_vision": False, "lora_enable": lora is not None,
                        **({"lora_r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
                            "lora_bias": "none"} if lora else {})},
        "act_head": {"type": OUR_HEAD_TYPE if head_diffs else REAL_HEAD_TYPE,
                     "hidden_size": cfg.hidden, "num_layers": cfg.layers, "action_dim": len(cfg.dims),
                     "down_sample": "none", "latent": 1, "fwd_pred_next_n": cfg.chunk, "window_size": cfg.window,
                     "action_space": "continuous", "with_history": True, "history_type": "post",
                     "mlp_hidden": list(cfg.mlp), "mlp_activation": cfg.activation, "history": cfg.history,
                     "action_dims": [AXES[d] for d in cfg.dims], "action_scale": scale},
        "tokenizer": {"type": "AutoProcessor", "pretrained_model_name_or_path": spec, "tokenizer_type": "kosmos",
                      "max_text_len": 256},
        "vlm": {"type": "AutoModelForVision2Seq", "name": "kosmos", "pretrained_model_name_or_path": spec,
                "config": json.loads(kosmos.config.to_json_string())},
        "norm_action": True, "norm_min": -scale[0] if len(set(scale)) == 1 else [-s for s in scale],
        "norm_max": scale[0] if len(set(scale)) == 1 else scale,
        "mvla_sim": {**config, "image_resize": "none", "exported_from": source, "differences": differences},
    }
    out = Path(out)
    with AtomicFile(out) as tmp:
        torch.save({"state_dict": state, "hyper_parameters": {"configs": configs},
                    "pytorch-lightning_version": LIGHTNING_LAYOUT}, tmp)
    return differences
