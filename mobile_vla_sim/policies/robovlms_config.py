"""`CheckpointExportConfig`: the `export-checkpoint` command's options, free of torch so the CLI starts fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobile_vla_sim.config import check_knobs, knob


@dataclass
class CheckpointExportConfig:
    """A checkpoint of this package written in another stack's layout."""

    checkpoint: Path = knob(help="a .ckpt from `mvla-sim train`", argument=True)
    out: Path = knob(help="the .ckpt to write")
    format: str = knob("robovlms", "robovlms: the real project's PyTorch Lightning layout (RoboVLMs Kosmos-2 + LSTM "
                       "policy: state_dict model.backbone / model.action_token / model.act_head, config under "
                       "hyper_parameters)", choices=("robovlms",))

    def __post_init__(self) -> None:
        check_knobs(self)
        self.checkpoint, self.out = Path(self.checkpoint), Path(self.out)
