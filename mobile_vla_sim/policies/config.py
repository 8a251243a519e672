"""Training configs, kept free of torch so that the command line starts fast."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mobile_vla_sim.config import check_knobs, knob
from mobile_vla_sim.errors import ConfigError

DEFAULT_BACKBONE = "microsoft/kosmos-2-patch14-224"
TINY = "tiny"
#: The tiny model pretrained in the sim by image-text matching of scene facts (never actions), so that frozen it
#: still means something.
TINY_PRETRAINED = "tiny-pretrained"
#: The built-in tiny backbones: built in-process, offline; their weights go into checkpoints.
TINY_NAMES = (TINY, TINY_PRETRAINED)
#: CLIP's pixel mean and std (RGB): the Kosmos-2 image processor's.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODES = ("frozen", "lora")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
#: LSTM (hidden, layers): the real project's, and a head sized to the tiny backbone (D=128) so CPU tests stay fast.
REAL_HEAD = (512, 4)
TINY_HEAD = (128, 2)
#: LoRA dropout: peft's usual 0.05, and none for the tiny backbone, where drawing the dropout masks on CPU took 2/3
#: of each step (1.3 s vs 0.45 s for 16 windows) and a 0.6 M-parameter model on thousands of frames needs none.
LORA_DROPOUT, TINY_LORA_DROPOUT = 0.05, 0.0
_LORA_KNOBS = ("lr_lora", "lora_r", "lora_alpha", "lora_dropout", "lora_targets")
#: Longest frame window and action chunk: a policy runs its LSTM over the whole window at every step and predicts the
#: whole chunk (the real project: 8 and 10; `window: 100000` made every step run 100,000 LSTM steps).
MAX_WINDOW, MAX_CHUNK = 256, 256
#: Backbone dtypes (`--dtype`); the head, the loss and LoRA adapters are float32 whatever this is.
DTYPES = ("float32", "bfloat16", "float16")
CHECKPOINTING = ("auto", "on", "off")


def device_type(device: str) -> str:
    """`cuda:1` -> `cuda`."""
    return device.split(":")[0]


def check_dtype(dtype: str, device: str) -> str:
    """float16 only on CUDA: CPU float16 kernels are missing or slow; bfloat16 is the half-size dtype on CPU."""
    if dtype == "float16" and device_type(device) != "cuda":
        raise ConfigError(f"--dtype float16 needs --device cuda (float16 on {device} is unsupported or slow); use "
                          "--dtype bfloat16 or float32 on this device")
    return dtype


def auto_dtype(backbone: str, device: str) -> str:
    """`--dtype auto`: bfloat16 for a hub/local Kosmos-2 on CUDA, float32 otherwise.

    bfloat16 halves the weights (3.3 GB instead of 6.7 GB for 1.66 B parameters), runs on tensor cores, and has
    float32's exponent range, so training needs no loss scaling. float32 elsewhere: the tiny backbone is cheap, its
    frame-to-frame feature differences are a small fraction of the feature norm (bfloat16 keeps 8 significant bits),
    and CPU inference is measured and tested in float32 (batch invariance included).
    """
    return "bfloat16" if device_type(device) == "cuda" and not is_tiny(backbone) else "float32"


def is_tiny(backbone: str) -> bool:
    """The built-in tiny backbones (random init or pretrained in the sim), as opposed to a hub id or a folder."""
    return backbone in TINY_NAMES and not Path(backbone).exists()


def check_device(device: str) -> str:
    """A torch device this machine has, or a one-line error with the fix (torch is imported only here)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this torch build has no usable CUDA (torch {torch.__version__}); use "
                          "--device cpu or install a CUDA build of torch")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device}: unsupported device type {dev.type!r}; use cpu or cuda")
    return device


@dataclass
class TrainConfig:
    """Training of a Kosmos-2 + LSTM VLA policy; defaults are the real project's."""

    data: Path = knob(help="dataset folder (`mvla-sim generate`, or real episodes in the same layout)")
    mode: str = knob("frozen", "frozen: only the action head learns; lora: LoRA adapters in the VLM learn too",
                     choices=MODES)
    backbone: str = knob(DEFAULT_BACKBONE, "Kosmos-2 hub id (a 1.66 B-parameter download on first use), a local "
                         "folder saved with save_pretrained, `tiny` (built in code, random init, offline) or `tiny-pretrained` (the tiny "
                         "model pretrained in the sim, shipped with the package)")
    epochs: int = knob(10, "passes over the training windows", min=1)
    batch_size: int = knob(16, "windows per step", min=1)
    window: int = knob(8, "frames the LSTM sees", min=1, max=MAX_WINDOW)
    chunk: int = knob(10, "future actions predicted per frame (fwd_pred_next_n)", min=1, max=MAX_CHUNK)
    hidden: int | None = knob(None, "LSTM hidden size [default: 512; 128 with a tiny backbone]", min=1)
    lstm_layers: int | None = knob(None, "LSTM layers [default: 4; 2 with a tiny backbone]", min=1)
    lr_head: float = knob(1e-4, "learning rate of the head and action token", min=0.0, max=1.0)
    lr_lora: float = knob(1e-5, "learning rate of the LoRA adapters", min=0.0, max=1.0)
    weight_decay: float = knob(0.01, "AdamW weight decay", min=0.0)
    grad_clip: float = knob(1.0, "gradient norm clip", min=0.0)
    lora_r: int = knob(8, "LoRA rank", min=1)
    lora_alpha: int = knob(16, "LoRA alpha (scaling alpha / r)", min=1)
    lora_dropout: float | None = knob(None, "LoRA dropout [default: 0.05; 0 with a tiny backbone]", min=0.0, max=1.0)
    lora_targets: tuple[str, ...] = knob(LORA_TARGETS, "comma list of layers that get LoRA adapters (vision and "
                                         f"text): among {','.join(LORA_TARGETS)}")
    consecutive: int | None = knob(None, "windows per run of consecutive windows of one episode in a batch; runs "
                                   "share frames, so recomputing the backbone (LoRA) costs less [default: --window "
                                   "for lora, 1 for frozen]", min=1)
    instructions: str = knob("hdf5", "each episode's instruction: hdf5 = its stored language_instruction; a named "
                             "instruction set (e.g. korean) or a {side} template = rebuilt from the file name's side, "
                             "as the real project's loader did")
    seed: int = knob(0, "seed of initialisation and sampling", min=0)
    device: str = knob("cpu", "torch device: cpu, cuda or cuda:N")
    dtype: str = knob("auto", "dtype of the backbone's weights and activations (the LSTM head, the loss and LoRA "
                      "adapters stay float32); auto = bfloat16 for a hub/local Kosmos-2 on CUDA, float32 otherwise; "
                      "float16 only on CUDA (with loss scaling)", choices=("auto", *DTYPES))
    gradient_checkpointing: str = knob("auto", "LoRA: keep only each backbone layer's input and recompute the rest in "
                                       "backward (far less activation memory, ~1/3 more compute); auto = on for a "
                                       "hub/local Kosmos-2", choices=CHECKPOINTING)
    out: Path = knob(Path("vla.ckpt"), "best checkpoint by val loss; an interrupted run resumes from <out>.resume.pt")
    cache_features: bool = knob(True, "frozen mode: compute the backbone once per frame (False recomputes it every "
                                "step, to measure the speed-up)", cli=False)
    resume: bool = knob(True, "resume from <out>.resume.pt when it exists", cli=False)

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self.lora_targets = tuple(self.lora_targets)
        check_knobs(self)
        if self.mode == "frozen":
            given = [f.name for f in dataclasses.fields(self) if f.name in _LORA_KNOBS
                     and getattr(self, f.name) != (f.default if f.default is not dataclasses.MISSING else None)]
            if given:
                raise ConfigError(f"{', '.join('--' + g.replace('_', '-') for g in given)} apply only with "
                                  "--mode lora; drop them or add --mode lora")
        unknown = sorted(set(self.lora_targets) - set(LORA_TARGETS))
        if unknown or not self.lora_targets:
            raise ConfigError(f"--lora-targets {','.join(unknown) or '(empty)'} not valid; choose among "
                              f"{','.join(LORA_TARGETS)}")
        if self.instructions != "hdf5" and "{side}" not in self.instructions:
            from mobile_vla_sim.envs.tasks import FAMILIES

            sets = {name for cls in FAMILIES.values() for name in cls.instruction_sets}
            if self.instructions not in sets:
                raise ConfigError(f"--instructions {self.instructions!r}: use hdf5 (the stored instructions), an "
                                  f"instruction set ({', '.join(sorted(sets))}) or a sentence containing '{{side}}'")
        tiny = is_tiny(self.backbone)
        hidden, layers = TINY_HEAD if tiny else REAL_HEAD
        self.hidden = hidden if self.hidden is None else int(self.hidden)
        self.lstm_layers = layers if self.lstm_layers is None else int(self.lstm_layers)
        if self.lora_dropout is None and self.mode == "lora":
            self.lora_dropout = TINY_LORA_DROPOUT if tiny else LORA_DROPOUT
        if self.consecutive is None:
            self.consecutive = 1 if self.mode == "frozen" else self.window
        check_device(self.device)
        self.dtype = check_dtype(auto_dtype(self.backbone, self.device) if self.dtype == "auto" else self.dtype,
                                 self.device)
        if self.mode == "frozen" and self.gradient_checkpointing == "on":
            raise ConfigError("--gradient-checkpointing on applies only to --mode lora (a frozen backbone keeps no "
                              "activations for backward); drop it or add --mode lora")
        if self.gradient_checkpointing == "auto":
            self.gradient_checkpointing = "on" if self.mode == "lora" and not tiny else "off"

    def fingerprint(self) -> str:
        """What must not change between an interrupted run and its resumption (the compute settings may: device,
        dtype, checkpointing; leaving the latter two out also keeps the fingerprints of runs made before them)."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("epochs", "device", "resume", "cache_features",
                                                                   "consecutive", "dtype", "gradient_checkpointing")}
        return json.dumps(keep, default=str, sort_keys=True)
