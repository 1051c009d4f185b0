"""A pipeline spec in the page URL, so that a link reproduces a set-up.

The spec travels as one query parameter, ``spec``: the spec minus every default (a field equal to
its declared default, a component parameter equal to the component's default), as compact JSON,
zlib-compressed, base64url without padding. A ring8 GAN with one changed learning rate is a few
dozen characters. Decoding is bounded (token length and inflated size) and never evaluates
anything; the caller validates the result with :func:`explorer.spec.resolve`.

Plain module (no streamlit import): ``spec_to_query`` returns a dict for ``st.query_params.update``
and ``spec_from_query`` takes ``st.query_params`` (or any mapping).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import zlib
from typing import Any, Mapping

from explorer.errors import SpecError
from explorer.params import resolve_params
from explorer.registry import Registry, get_registry
from explorer.spec import OPTIMIZER, SETTINGS, SLOTS, parse_text

QUERY_KEY = "spec"
MAX_TOKEN_CHARS = 8_000  # a URL stays well under browsers' limits
MAX_JSON_BYTES = 64_000  # inflated size bound (no zip bombs through a link)


def minimal_spec(spec_dict: Mapping[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    """The spec without the fields that equal their defaults (and without provenance).

    ``resolve(minimal_spec(d))`` gives the same spec as ``resolve(d)`` with the same plugins installed.
    """
    registry = registry or get_registry()
    raw = copy.deepcopy(dict(spec_dict))
    raw.pop("provenance", None)
    out: dict[str, Any] = {}
    for p in SETTINGS:
        if p.name in raw and raw[p.name] != p.default:
            out[p.name] = raw[p.name]
    for key, kind, default_name in SLOTS:
        if key not in raw or raw[key] is None:
            continue
        value = raw[key]
        name, params = (value, {}) if isinstance(value, str) else (value.get("name", default_name), {k: v for k, v in value.items() if k != "name"})
        try:
            defaults = resolve_params(registry.get(kind, name).cls.params, {}, key)
        except Exception:  # unknown component: keep it as given, resolve() will name the problem
            out[key] = value
            continue
        changed = {k: v for k, v in params.items() if k not in defaults or defaults[k] != v}
        if changed:
            out[key] = {"name": name, **changed}
        elif name != default_name:
            out[key] = name
    optim = raw.get("optim") or {}
    opt_defaults = {p.name: p.default for p in OPTIMIZER}
    small_optim = {}
    for role, section in optim.items():
        if isinstance(section, Mapping):
            changed = {k: v for k, v in section.items() if opt_defaults.get(k, object()) != v}
            if changed:
                small_optim[role] = changed
        else:
            small_optim[role] = section
    if small_optim:
        out["optim"] = small_optim
    if "metrics" in raw and not _metrics_are_auto(raw["metrics"], registry):
        out["metrics"] = raw["metrics"]
    for key in ("changes", "ema"):  # tables of their own: kept whole when set
        if raw.get(key):
            out[key] = raw[key]
    return out


def _metrics_are_auto(metrics: Any, registry: Registry) -> bool:
    if metrics == "auto":
        return True
    if not isinstance(metrics, list):
        return False
    names = [m if isinstance(m, str) else (m.get("name") if isinstance(m, Mapping) else None) for m in metrics]
    if sorted(n for n in names if n) != sorted(registry.names("metric")) or len(names) != len(registry.names("metric")):
        return False
    for m in metrics:  # every parameter at its default
        if isinstance(m, Mapping):
            try:
                defaults = resolve_params(registry.get("metric", m["name"]).cls.params, {}, "metrics")
            except Exception:
                return False
            if any(defaults.get(k) != v for k, v in m.items() if k != "name"):
                return False
    return True


def encode_spec(spec_dict: Mapping[str, Any], registry: Registry | None = None) -> str:
    """The URL token for a spec: base64url(zlib(compact JSON of the spec minus defaults))."""
    text = json.dumps(minimal_spec(spec_dict, registry), separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(zlib.compress(text.encode(), 9)).decode().rstrip("=")


def decode_spec(token: str) -> dict[str, Any]:
    """The raw spec dict in a URL token; SpecError with a plain message when the link is damaged."""
    bad = "the link's spec cannot be read (it may have been cut short or edited); copy the whole link again"
    if not isinstance(token, str) or not token.strip():
        raise SpecError("", f"{bad}: the spec parameter is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise SpecError("", f"{bad}: the spec parameter is {len(token)} characters, more than the {MAX_TOKEN_CHARS} allowed")
    token = token.strip()
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise SpecError("", f"{bad}: not base64url") from None
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(packed, MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES or inflater.unconsumed_tail:
            raise SpecError("", f"{bad}: the spec is larger than {MAX_JSON_BYTES} bytes")
        if not inflater.eof:
            raise SpecError("", f"{bad}: the compressed data is incomplete")
    except zlib.error:
        raise SpecError("", f"{bad}: not zlib data") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("", f"{bad}: not UTF-8 text") from None
    try:
        # The same checks as a spec file: syntax, duplicate keys, nesting depth (a 30,000-deep list
        # compresses to a few dozen characters), sizes.
        return parse_text(text, fmt="json", source="the link's spec")
    except SpecError as exc:
        raise SpecError(exc.field, f"{bad}: {exc.message}") from None


def spec_to_query(spec_dict: Mapping[str, Any], registry: Registry | None = None) -> dict[str, str]:
    """Query parameters that carry ``spec_dict`` (for ``st.query_params.update(...)``)."""
    return {QUERY_KEY: encode_spec(spec_dict, registry)}


def spec_from_query(query_params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The raw spec carried by a page's query parameters, or None when the URL has none.

    Raises SpecError for a damaged link; validate the result with ``explorer.spec.resolve`` (which
    names a bad field or a plugin that is not installed).
    """
    if QUERY_KEY not in query_params:
        return None
    token = query_params[QUERY_KEY]
    if isinstance(token, (list, tuple)):
        token = token[-1] if token else ""
    return decode_spec(token if isinstance(token, str) else "")
