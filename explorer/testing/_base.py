"""Shared helpers of the contract checks: failure messages that name the component, seeded
generators, building a component, and the parameter-declaration check."""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from explorer.components import Component
from explorer.errors import ExplorerError
from explorer.params import Param

N = 256  # samples per check
RESERVED_KEYS = ("step", "time", "d_loss", "g_loss", "steps_per_s")


class _Fail:
    """Builds AssertionErrors that name the component: '<kind> <name> (<module.Class>): what. Fix: how.'"""

    def __init__(self, cls: type) -> None:
        self.label = f"{getattr(cls, 'kind', '?')} {getattr(cls, 'name', '?')!r} ({cls.__module__}.{cls.__qualname__})"

    def __call__(self, what: str, fix: str = "") -> AssertionError:
        return AssertionError(f"{self.label}: {what}" + (f". Fix: {fix}" if fix else ""))

    def check(self, ok: Any, what: str, fix: str = "") -> None:
        if not ok:
            raise self(what, fix)


def _gen(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _merged(params: Mapping[str, Any] | None, kw: Mapping[str, Any]) -> dict[str, Any]:
    return {**dict(params or {}), **kw}


def _build(cls: type[Component], params: Mapping[str, Any], fail: _Fail) -> Any:
    check_params(cls)
    try:
        obj = cls(**params)
    except ExplorerError as exc:
        raise fail(f"cls(**{params!r}) was refused: {exc}", "pass valid parameters to the check (its keyword arguments)") from exc
    except Exception as exc:
        raise fail(f"cls(**{params!r}) raised {type(exc).__name__}: {exc}", "the constructor must work with the declared defaults") from exc
    fail.check(isinstance(getattr(obj, "config", None), dict),
               "self.config is missing", "call super().__init__(**kw) first thing in __init__")
    fail.check(set(obj.config) == {p.name for p in cls.params},
               f"self.config holds {sorted(obj.config)}, not the declared parameters", "do not replace self.config")
    return obj


def _finite(x: Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def _same_device(x: Tensor, device: torch.device) -> bool:
    return x.device.type == device.type


def _own_rng(check: Callable[..., Any]) -> Callable[..., Any]:
    """Run a check on a copy of torch's global RNG state, so calling it never changes the caller's stream."""

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=gpus):
            return check(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------------
def check_params(cls: type[Component]) -> None:
    """Parameter declarations: Param objects, unique names, help text, defaults that pass their own
    bounds and choices, and a JSON-serialisable description (``genex plugins --json``)."""
    fail = _Fail(cls)
    fail.check(isinstance(cls.params, (tuple, list)), "params is not a tuple", "params = (Param(...), ...)")
    names = set()
    for p in cls.params:
        fail.check(isinstance(p, Param), f"params holds {p!r}", "declare each parameter with explorer.Param")
        fail.check(p.name not in names, f"parameter {p.name!r} is declared twice")
        fail.check(p.name != "name", "a parameter is called 'name'", "'name' is reserved for the component name")
        names.add(p.name)
        fail.check(p.help.strip(), f"parameter {p.name!r} has no help text", "it is the tooltip and the CLI help")
        if p.low is not None and p.high is not None:
            fail.check(p.low <= p.high, f"parameter {p.name!r} has low {p.low} above high {p.high}")
        if p.choices is not None:
            fail.check(p.default is None or p.default in p.choices,
                       f"the default {p.default!r} of {p.name!r} is not among its choices {p.choices}")
        try:
            p.validate(p.default, p.name)
        except ExplorerError as exc:
            raise fail(f"the default of {p.name!r} is invalid: {exc}", "make the default satisfy low/high/choices") from None
    try:
        json.dumps(cls.describe())
    except (TypeError, ValueError) as exc:
        raise fail(f"describe() is not JSON-serialisable: {exc}", "use plain numbers, strings and lists in Param") from None
