"""Errors the evaluation harness raises for bad user input; the CLI shows their one-line message."""

from __future__ import annotations


class EvalError(ValueError):
    """Bad evaluation input (unknown option, unusable policy or data): the message says how to fix it."""
