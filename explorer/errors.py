"""Errors meant for users: each message says what went wrong and what to do."""

from __future__ import annotations

import difflib
from typing import Iterable


class ExplorerError(Exception):
    """Base class for errors shown to users as one clear message (no traceback)."""


class SpecError(ExplorerError):
    """A pipeline spec or a parameter is invalid. ``field`` is the dotted path of the bad field."""

    def __init__(self, field: str, message: str):
        if not field.isprintable() or len(field) > 200:  # a hostile key never breaks the message's line
            field = shown(field, 80)
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class PluginError(ExplorerError):
    """A plugin broke its contract (bad registration, failure inside a component)."""


class TrainingError(ExplorerError):
    """A run failed (non-finite loss, a component raised during training)."""

    step: int | None = None  # the training step (counted from 1) that failed, when known

    @classmethod
    def at(cls, step: int, message: str) -> "TrainingError":
        err = cls(message)
        err.step = step
        return err


class CheckpointError(ExplorerError):
    """A checkpoint cannot be restored as asked (an optimiser or sampler state that does not fit)."""


class RunNotFound(ExplorerError):
    """No run with that id exists in the runs folder."""


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a hostile value never floods a message."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply>"
    return text if len(text) <= limit else text[: limit - 12] + f"... ({len(text):,} chars)"


def one_line(text: str) -> str:
    """A message safe for one terminal line: control characters (newlines, escapes, form feeds) escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """A ' (did you mean ...?)' hint for a mistyped name, or an empty string."""
    text = str(value)
    if len(text) > 200:  # difflib is quadratic: a hostile name gets no hint
        return ""
    matches = difflib.get_close_matches(text, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def choices_text(choices: Iterable[str]) -> str:
    """'a, b, c' in sorted order, for messages that list the valid choices."""
    return ", ".join(sorted(str(c) for c in choices))
