"""Typed parameter declarations.

A component declares each parameter once (type, default, bounds or choices, help); that one
declaration drives spec validation, the sidebar widgets, the CLI listing and ``genex plugins --json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from explorer.errors import SpecError, choices_text, did_you_mean, shown

KINDS = ("int", "float", "bool", "str", "floats", "ints")


@dataclass(frozen=True)
class Param:
    """One parameter of a component.

    kind: ``int``, ``float``, ``bool``, ``str``, ``floats`` (a list of floats) or ``ints``.
    low/high: inclusive bounds for numbers (each list item for ``floats``/``ints``; a list may be empty only
    when its default is ``[]``).
    choices: the allowed values (for ``str``, ``int`` or ``float``).
    log: a hint for widgets that the value spans orders of magnitude (learning rates).
    label: the widget's label in the app, when the name alone would mislead (e.g. ``"M (0 = automatic)"``);
    default: the name with spaces for underscores.
    """

    name: str
    kind: str
    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    log: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Param {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if not self.name.isidentifier():
            raise ValueError(f"Param name {self.name!r} must be a valid identifier")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.default is not None:
            # The default must itself be valid: a bad declaration fails at import time.
            object.__setattr__(self, "default", self.validate(self.default, f"<default of {self.name}>"))

    # -- validation -------------------------------------------------------------------------
    def validate(self, value: Any, where: str) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise SpecError naming ``where``."""
        if value is None and self.default is None:
            return None
        if self.kind in ("floats", "ints"):
            if isinstance(value, Mapping):
                raise SpecError(where, f"expected a list of {self.kind[:-1]}s like [0.5, 0.999], got a table {shown(value)}")
            if not isinstance(value, (list, tuple)):
                raise SpecError(where, f"expected a list of {self.kind[:-1]}s, got {shown(value)}")
            item_kind = self.kind[:-1]
            out = [self._scalar(v, item_kind, f"{where}[{i}]") for i, v in enumerate(value)]
            if not out and self.default != []:  # a declared default of [] says "none" is meaningful
                raise SpecError(where, "expected at least one value")
            return out
        return self._scalar(value, self.kind, where)

    def _scalar(self, value: Any, kind: str, where: str) -> Any:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise SpecError(where, f"expected true or false, got {shown(value)}")
        if kind == "str":
            if not isinstance(value, str):
                raise SpecError(where, f"expected a string, got {shown(value)}")
            out: Any = value
        elif kind == "int":
            if isinstance(value, bool):
                raise SpecError(where, f"expected an integer, got {shown(value)}")
            try:
                out = int(value) if not isinstance(value, float) or value.is_integer() else None
            except (TypeError, ValueError):
                out = None
            if out is None:
                raise SpecError(where, f"expected an integer, got {shown(value)}")
        else:  # float
            if isinstance(value, bool):
                raise SpecError(where, f"expected a number, got {shown(value)}")
            try:
                out = float(value)
            except (TypeError, ValueError):
                raise SpecError(where, f"expected a number, got {shown(value)}") from None
            if not math.isfinite(out):
                raise SpecError(where, f"expected a finite number, got {shown(value)}")
        if self.choices is not None and out not in self.choices:
            raise SpecError(
                where,
                f"{shown(value)} is not a valid choice; choose one of: {choices_text(map(str, self.choices))}"
                + did_you_mean(value, map(str, self.choices)),
            )
        if kind in ("int", "float"):
            if self.low is not None and out < self.low:
                raise SpecError(where, f"{shown(value)} is below the minimum {self.low:g} (allowed: {self.bounds_text()})")
            if self.high is not None and out > self.high:
                raise SpecError(where, f"{shown(value)} is above the maximum {self.high:g} (allowed: {self.bounds_text()})")
        return out

    def bounds_text(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{lo} .. {hi}"

    def to_json(self) -> dict[str, Any]:
        """The declaration as plain data (``genex plugins --json``, the Plugins page)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "default": self.default, "help": self.help}
        if self.low is not None:
            out["low"] = self.low
        if self.high is not None:
            out["high"] = self.high
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.log:
            out["log"] = True
        if self.label:
            out["label"] = self.label
        return out


def resolve_params(params: Sequence[Param], given: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """Validate ``given`` against the declarations and fill in defaults.

    Unknown keys are an error that lists the valid names (and suggests a close match).
    """
    given = dict(given or {})
    at = (lambda key: f"{where}.{key}") if where else (lambda key: key)
    by_name = {p.name: p for p in params}
    for key in given:
        if key not in by_name:
            valid = choices_text(by_name) or "(this component takes no parameters)"
            raise SpecError(at(key), f"unknown parameter; valid parameters: {valid}" + did_you_mean(key, by_name))
    return {p.name: (p.validate(given[p.name], at(p.name)) if p.name in given else _copy(p.default)) for p in params}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def check_declarations(params: Sequence[Param]) -> None:
    """Raise ValueError if a component's declarations are malformed (used at registration)."""
    seen: set[str] = set()
    for p in params:
        if not isinstance(p, Param):
            raise ValueError(f"params must hold Param objects, found {p!r}")
        if p.name in seen:
            raise ValueError(f"parameter {p.name!r} is declared twice")
        if p.name == "name":
            raise ValueError("'name' is reserved for the component name and cannot be a parameter")
        seen.add(p.name)


__all__ = ["Param", "resolve_params", "check_declarations", "KINDS", "field"]
