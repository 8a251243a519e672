"""Policies that fail on purpose, for the hostile tests, loaded as `--policy hostile_policies:FACTORY` plugins (tests/
is on sys.path; subprocesses get it on PYTHONPATH)."""

from __future__ import annotations

import os
import signal

import numpy as np

from mobile_vla_sim.envs.expert import ExpertPolicy

#: Environment variables naming the fault and the reset at which it strikes: the policy spec (and so the
#: evaluation's identity) stays the same, so the run after the fault resumes the one it hit.
FAULT, AT = "HOSTILE_FAULT", "HOSTILE_AT"


class FaultyExpert(ExpertPolicy):
    """The expert until its `HOSTILE_AT`-th reset (default 3: with one slot, two episodes have finished and been
    handed back), when `HOSTILE_FAULT` strikes: `sigterm` or `sigkill` (the process signals itself, as `kill` and
    `kill -9` would), or `raise` (every later act_batch raises, a plugin whose model fell over)."""

    name = "faulty-expert"

    def __init__(self, drive: str = "diff"):
        super().__init__(drive=drive)
        self.resets, self.broken = 0, False

    def reset(self, instruction: str, slot: int = 0) -> None:
        self.resets += 1
        fault = os.environ.get(FAULT)
        if fault and self.resets == int(os.environ.get(AT, "3")):
            if fault == "raise":
                self.broken = True
            else:
                os.kill(os.getpid(), getattr(signal, fault.upper()))
        super().reset(instruction, slot)

    def act_batch(self, obs, slots):
        if self.broken:
            raise RuntimeError("the model fell over")
        return super().act_batch(obs, slots)


def faulty(drive, device):
    return FaultyExpert(drive=drive)


#: What `garbage` returns instead of actions, for B slots of `dims` values.
OUTPUTS = {
    "wide": lambda b, dims: np.zeros((b, dims + 3), np.float32),
    "rows": lambda b, dims: np.zeros((b + 1, dims), np.float32),
    "strings": lambda b, dims: [["fast"] * dims] * b,
    "none": lambda b, dims: None,
    "dict": lambda b, dims: {"linear_x": 0.1},
    "ragged": lambda b, dims: [[0.1] * dims, [0.2]] * b,
}


class Garbage(ExpertPolicy):
    """The expert until its third reset (two episodes finished, with one slot), then `OUTPUTS[output]` instead of
    actions."""

    name = "garbage"

    def __init__(self, output: str, drive: str = "diff"):
        super().__init__(drive=drive)
        self.output, self.resets = output, 0

    def reset(self, instruction: str, slot: int = 0) -> None:
        self.resets += 1
        super().reset(instruction, slot)

    def act_batch(self, obs, slots):
        if self.resets < 3:
            return super().act_batch(obs, slots)
        return OUTPUTS[self.output](len(slots), 2 if self.drive == "diff" else 3)


def garbage(drive, device, output="wide"):
    return Garbage(output, drive=drive)


def with_secret(drive, device, token=None, api_key=None):
    """The expert, taking secrets as a hosted model's client would: they must never reach results files."""
    return ExpertPolicy(drive=drive)
