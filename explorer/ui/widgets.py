"""Param -> widget: the one place that turns a parameter declaration into a Streamlit input.

A third-party component gets its widgets with no UI code of its own: its ``params`` tuple says the
kind, default, bounds, choices and help, and :func:`param_widget` picks the input:

=============================  ==============================================================
declaration                    widget
=============================  ==============================================================
bool                           checkbox
choices (any kind)             selectbox
str                            text input
int with a range of <= 64      slider; otherwise a number input
float with ``log=True``        a slider over 1-2-5 steps per decade (learning rates)
float                          number input
floats / ints                  text input of comma-separated numbers
=============================  ==============================================================

Widgets keep their value across page switches (``persist_state="session"``). The value returned
is handed to the spec resolver, which reports any bad value with the field's name.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import streamlit as st

from explorer.params import Param

SLIDER_MAX_SPAN = 64
#: names whose plain spelling reads badly as a label
LABELS = {"k_d": "k_D (D steps per G step)", "lr": "learning rate"}


def label_for(param: Param) -> str:
    return param.label or LABELS.get(param.name, param.name.replace("_", " "))


def help_for(param: Param) -> str:
    parts = [param.help] if param.help else []
    if param.kind in ("int", "float", "floats", "ints") and (param.low is not None or param.high is not None):
        parts.append(f"allowed: {param.bounds_text()}")
    parts.append(f"default: {format_value(param.default)}")
    return " · ".join(parts)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def log_grid(low: float | None, high: float | None, value: float) -> list[float]:
    """1, 2, 5 per decade between the bounds (clipped to 1e-6 .. 10 when open), with ``value`` in it."""
    lo = max(low if low is not None and low > 0 else 1e-6, 1e-12)
    hi = high if high is not None else 10.0
    lo, hi = min(lo, value) if value > 0 else lo, max(hi, value)
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1.0, 2.0, 5.0):
            v = float(f"{m * 10.0**e:.12g}")
            if lo <= v <= hi:
                out.append(v)
    if value > 0 and value not in out:
        out.append(float(value))
    return sorted(set(out))


def _clamp(value: float, param: Param) -> float:
    if param.low is not None:
        value = max(value, param.low)
    if param.high is not None:
        value = min(value, param.high)
    return value


def _number_step(param: Param, value: float) -> float:
    """A step that moves the value by about a tenth of its magnitude (0.01 for values near 0)."""
    mag = abs(value)
    if mag == 0:
        if param.low is not None and param.high is not None and param.high > param.low:
            mag = (param.high - param.low) / 10
        else:
            return 0.01
    return float(f"{10 ** math.floor(math.log10(mag)) / 10:.1g}") or 0.01


def parse_list(text: str, kind: str) -> Any:
    """``"1, 2.5, 3"`` -> [1.0, 2.5, 3.0] (``ints``: [1, 2, 3]); text that does not parse is returned
    unchanged, so that the spec resolver reports it with the field's name."""
    items = [t for t in text.replace(";", ",").replace("[", "").replace("]", "").split(",") if t.strip()]
    try:
        values = [float(t) for t in items]
    except ValueError:
        return text
    if kind == "ints" and all(v.is_integer() for v in values):
        return [int(v) for v in values]
    return values


def param_widget(param: Param, key: str, value: Any = None, container: Any = None, disabled: bool = False) -> Any:
    """Draw the input for ``param`` (initial value ``value``, else its default) and return its value."""
    box = container if container is not None else st
    value = param.default if value is None else value
    label, help_ = label_for(param), help_for(param)
    common = dict(key=key, help=help_, disabled=disabled, persist_state="session")
    if param.kind == "bool":
        return box.checkbox(label, value=bool(value), **common)
    if param.choices is not None:
        options = list(param.choices)
        index = options.index(value) if value in options else 0
        return box.selectbox(label, options, index=index, format_func=format_value, **common)
    if param.kind == "str":
        return box.text_input(label, value=str(value or ""), **common)
    if param.kind in ("floats", "ints"):
        text = box.text_input(label, value=format_value(value), placeholder="comma-separated numbers", **common)
        return parse_list(text, param.kind)
    if param.kind == "int":
        value = int(_clamp(int(value), param))
        if param.low is not None and param.high is not None and param.high - param.low <= SLIDER_MAX_SPAN:
            return box.slider(label, min_value=int(param.low), max_value=int(param.high), value=value, step=1, **common)
        return box.number_input(
            label, min_value=None if param.low is None else int(param.low),
            max_value=None if param.high is None else int(param.high), value=value, step=1, **common,
        )
    # float
    value = float(_clamp(float(value), param))
    if param.log and value > 0:
        options = log_grid(param.low, param.high, value)
        return box.select_slider(label, options=options, value=value, format_func=lambda v: f"{v:g}", **common)
    return box.number_input(
        label, min_value=None if param.low is None else float(param.low),
        max_value=None if param.high is None else float(param.high), value=value,
        step=_number_step(param, value), format="%g", **common,
    )


def params_widgets(params: Sequence[Param], key_prefix: str, values: dict[str, Any] | None = None,
                   container: Any = None, skip: Sequence[str] = ()) -> dict[str, Any]:
    """A widget per declared parameter (keys ``<key_prefix>.<name>``); returns {name: value}."""
    values = values or {}
    out: dict[str, Any] = {}
    for p in params:
        if p.name in skip:
            continue
        out[p.name] = param_widget(p, f"{key_prefix}.{p.name}", values.get(p.name), container)
    return out
