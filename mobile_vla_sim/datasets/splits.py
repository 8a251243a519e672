"""The one train/validation split of a dataset, used by training, `compare` and offline metrics alike.

Why one function: a policy's val loss, the representations `compare` probes and the offline RMSE are only
comparable when they are measured on the same episodes. The rules:

* only successful demonstrations count (a failed expert run is noise that training never imitates, so it is no
  fair yardstick either);
* the hash split of the scene seed (`manifest.assign_split`) when it leaves both train and val episodes;
* otherwise (small datasets) a deterministic fallback: whole scenes (a left/right pair shares one) in the order of
  their split digest, so the scenes closest to the hash split's val share go first, until at least
  `FALLBACK_VAL_FRACTION` of the episodes and, with 4 or more, at least one episode per side are held out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from mobile_vla_sim.datasets.manifest import split_digest
from mobile_vla_sim.errors import NoEpisodesError

#: Held-out share of episodes when the hash split leaves train or val empty (e.g. a dozen episodes).
FALLBACK_VAL_FRACTION = 0.15
#: From this many successful episodes on, the fallback holds out at least one episode per side.
MIN_EPISODES_FOR_BOTH_SIDES = 4

_SIDE_RE = re.compile(r"_(left|right)(?=_|\.h5$)")


def scene_key(file: str, seed: Any) -> str:
    """Scene seed when the episode has one; otherwise the file name without its side, so left/right pairs of the
    same scene share a key."""
    return str(seed) if seed is not None else _SIDE_RE.sub("", file)


def episode_side(entry: dict[str, Any]) -> str | None:
    """'left' / 'right' from the entry's task, else from its file name (real episodes)."""
    if entry.get("task"):
        return str(entry["task"])
    match = _SIDE_RE.search(entry["file"])
    return match.group(1) if match else None


@dataclass(frozen=True)
class Split:
    """Indices (into the dataset's entry list) of the train and val episodes, and why the hash split was not used."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    #: None when the hash split was used; else a sentence for logs and reports.
    note: str | None = None


def split_entries(entries: Sequence[dict[str, Any]], source: str = "the dataset") -> Split:
    """The train/val split of manifest-style entries (`file`, `seed`, `split`, `success`, optional `task`)."""
    usable = [i for i, e in enumerate(entries) if e.get("success") is not False]
    if len(usable) < 2:
        raise NoEpisodesError(f"{source} has {len(usable)} successful episode(s); a train/val split needs at least "
                              "2: generate more with `mvla-sim generate --episodes N`")
    hashed = {i for i in usable if entries[i].get("split") == "val"}
    if hashed and len(hashed) < len(usable):
        return Split(tuple(i for i in usable if i not in hashed), tuple(sorted(hashed)))
    val = set(_fallback_val(entries, usable))
    reason = "no train" if hashed else "no val"
    note = (f"the hash split of {source} has {reason} episode among its {len(usable)} successful ones: validating on "
            f"{len(val)} held-out episode(s) instead")
    return Split(tuple(i for i in usable if i not in val), tuple(sorted(val)), note)


def _fallback_val(entries: Sequence[dict[str, Any]], usable: list[int]) -> tuple[int, ...]:
    scenes: dict[str, list[int]] = {}
    for i in usable:
        scenes.setdefault(scene_key(entries[i]["file"], entries[i].get("seed")), []).append(i)
    want = max(1, round(FALLBACK_VAL_FRACTION * len(usable)))
    sides = ({episode_side(entries[i]) for i in usable} - {None}
             if len(usable) >= MIN_EPISODES_FOR_BOTH_SIDES else set())
    val: list[int] = []
    for key in sorted(scenes, key=lambda k: (split_digest(k), k)):
        members = scenes[key]
        covered = {episode_side(entries[i]) for i in val}
        adds_side = bool(sides & ({episode_side(entries[i]) for i in members} - covered))
        if len(val) >= want and not adds_side:
            if sides <= covered:
                break
            continue
        if len(usable) - len(val) - len(members) >= 1:  # always keep an episode to train on
            val += members
    return tuple(sorted(val)) if val else (usable[-1],)  # a lone scene pair: splitting it is the only way
