"""Instruction sentences of the real robot project (SPEC §2), used verbatim as default templates."""

from __future__ import annotations

TASKS = ("left", "right")

#: Named templates; `{side}` is replaced by the task. "bottle" is the real project's main sentence.
INSTRUCTION_TEMPLATES: dict[str, str] = {
    "bottle": "Navigate around obstacles and reach the front of the beverage bottle on the {side}",
    "cup": "Navigate around the obstacle on the {side} side and reach the cup",
}


def check_task(task: str) -> str:
    """Return `task` if it is "left" or "right", else raise a ValueError saying so."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: use 'left' or 'right'")
    return task


def instruction_for(task: str, template: str = "bottle") -> str:
    """The instruction for `task`; `template` is a name in INSTRUCTION_TEMPLATES or a string with `{side}`."""
    text = INSTRUCTION_TEMPLATES.get(template, template)
    if "{side}" not in text:
        raise ValueError(f"unknown instruction template {template!r}: use one of {sorted(INSTRUCTION_TEMPLATES)} "
                         "or a format string containing '{side}'")
    return text.format(side=check_task(task))
