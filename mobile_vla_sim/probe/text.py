"""Text sensitivity: how a policy's actions change on recorded frames when only the instruction changes."""

from __future__ import annotations

import numpy as np

from mobile_vla_sim.envs.actions import LAYOUT_DIMS
from mobile_vla_sim.eval.offline import DIM_NAMES, predict_episodes
from mobile_vla_sim.policy import Policy

#: |lateral command| (env units) below which a frame has no lateral direction (as offline sign agreement).
LATERAL_EPS = 1e-3


def text_sensitivity(policy: Policy, episodes: list, sentences: dict[str, str]) -> dict:
    """How the actions change on recorded frames when only the instruction changes.

    Each episode's frames are replayed through the policy (frame history as in closed loop) once with the left
    sentence, once with the right one and once with "Stop". Reported per env action dim: mean |a(left) - a(right)|
    and mean |a(instruction) - a(Stop)| (left and right runs pooled); and the share of frames whose lateral command
    (angular_z for diff drive, linear_y for omni) points in opposite directions (both beyond LATERAL_EPS), plus the
    share that steers towards the instructed side under both sentences. An instruction-blind policy scores 0.
    """
    dims = list(LAYOUT_DIMS[policy.drive])
    run = {k: predict_episodes(policy, episodes, dims, [s] * len(episodes))[0] for k, s in sentences.items()}
    left, right, stop = run["left"], run["right"], run["stop"]
    names = [DIM_NAMES[d] for d in dims]

    def compare(a: np.ndarray, b: np.ndarray) -> dict:
        la, lb = a[:, 1], b[:, 1]
        directed = (np.abs(la) > LATERAL_EPS) & (np.abs(lb) > LATERAL_EPS)
        return {"mean_abs_delta": dict(zip(names, np.abs(a - b).mean(0).tolist())),
                "lateral_flip": float(np.mean(directed & (np.sign(la) != np.sign(lb))))}

    vs_stop = compare(np.concatenate([left, right]), np.concatenate([stop, stop]))
    return {"frames": int(len(left)), "episodes": len(episodes), "sentences": sentences,
            "left_vs_right": {**compare(left, right),
                              "toward_instructed": float(np.mean((left[:, 1] > LATERAL_EPS)
                                                                 & (right[:, 1] < -LATERAL_EPS)))},
            "vs_stop": vs_stop, "lateral": {"left": left[:, 1].tolist(), "right": right[:, 1].tolist()}}
