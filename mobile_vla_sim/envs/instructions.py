"""Instruction sentences of the real robot project, kept verbatim as named sets.

A set maps each side to its exact sentence. English sets could be one `{side}` template, but the Korean training
sentences differ by a whole word ("왼쪽" / "오른쪽"), so every set is stored as `{"left": ..., "right": ...}`;
a user template with `{side}` is expanded into the same shape.
"""

from __future__ import annotations

from mobile_vla_sim.errors import ConfigError

TASKS = ("left", "right")
DEFAULT_INSTRUCTION_SET = "bottle"


def sides_from_template(template: str) -> dict[str, str]:
    """`{"left": ..., "right": ...}` from a format string containing `{side}`."""
    if "{side}" not in template:
        raise ConfigError(f"instruction template {template!r} is neither a set name nor has '{{side}}'; use one of "
                          f"{', '.join(INSTRUCTION_SETS)} or a sentence containing '{{side}}'")
    return {side: template.format(side=side) for side in TASKS}


#: The real project's sentences by name: "bottle" (main English, the default), "cup" (later English), "korean" (what
#: the real training loader fed the model, built from the file name), "inference" (what the deployed robot was sent),
#: "basket" (a later scene with a pot as the target).
INSTRUCTION_SETS: dict[str, dict[str, str]] = {
    "bottle": sides_from_template("Navigate around obstacles and reach the front of the beverage bottle on the {side}"),
    "cup": sides_from_template("Navigate around the obstacle on the {side} side and reach the cup"),
    "korean": {"left": "가장 왼쪽 외곽으로 돌아 컵까지 가세요", "right": "가장 오른쪽 외곽으로 돌아 컵까지 가세요"},
    "inference": sides_from_template("Navigate to the {side} bottle"),
    "basket": sides_from_template("Navigate to the brown pot on the {side}"),
}
#: The real training loader's sentence for a file name with no side in it.
KOREAN_FALLBACK = "컵까지 가세요"


def check_task(task: str) -> str:
    """Return `task` if it is "left" or "right", else raise a ValueError saying so."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: use 'left' or 'right'")
    return task


def instruction_set(name: str = DEFAULT_INSTRUCTION_SET) -> dict[str, str]:
    """Side -> sentence for a name in INSTRUCTION_SETS, or for a user template containing `{side}`."""
    return dict(INSTRUCTION_SETS[name]) if name in INSTRUCTION_SETS else sides_from_template(name)


def instruction_for(task: str, template: str = DEFAULT_INSTRUCTION_SET) -> str:
    """The instruction for `task`; `template` is a name in INSTRUCTION_SETS or a string with `{side}`."""
    return instruction_set(template)[check_task(task)]
