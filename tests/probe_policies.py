"""Policies for the probe tests, loaded as `--policy probe_policies:FACTORY` plugins (tests/ is on sys.path)."""

from __future__ import annotations

import numpy as np

from mobile_vla_sim.envs.expert import ScriptedExpert
from mobile_vla_sim.envs.tasks.detour import INSTRUCTION_SETS
from mobile_vla_sim.envs.expert import ExpertPolicy

#: Every built-in sentence -> its side, so the policy understands any instruction set.
SIDES = {sentence: side for sides in INSTRUCTION_SETS.values() for side, sentence in sides.items()}


class InstructedExpert(ExpertPolicy):
    """Plans like the expert but takes the side from the instruction sentence, not from the privileged state: a
    perfectly grounded policy. It stands still for a sentence it does not know ("Stop", "")."""

    name = "instructed-expert"

    def reset(self, instruction: str, slot: int = 0) -> None:
        side = SIDES.get(instruction)
        expert = None if side is None else ScriptedExpert(drive=self.drive, seed=self.seed)
        if expert is not None:
            expert.reset(side)
        self._experts[slot] = expert

    def act_batch(self, obs, slots):
        dims = 2 if self.drive == "diff" else 3
        return np.stack([np.zeros(dims, np.float32) if self._experts[s] is None
                         else self._experts[s].act({"state": obs["state"][i]}) for i, s in enumerate(slots)])


def instructed(drive, device):
    return InstructedExpert(drive=drive)


#: How many times `counted` was called: the probe must load its policy once.
LOADS = []


def counted(drive, device):
    """The instructed expert, counting every load."""
    LOADS.append(drive)
    return InstructedExpert(drive=drive)
