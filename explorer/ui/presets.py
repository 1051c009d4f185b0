"""Known-good pipelines for the presets menu: every ``explorer/presets/*.toml``.

A preset is a spec file; its ``name`` field is the menu title and its ``notes`` say what to look for.
A file that fails to parse is listed with its error instead of breaking the menu.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer.errors import ExplorerError
from explorer.registry import Registry
from explorer.spec import load_spec_file, resolve

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
DEFAULT_PRESET = "ring8-nonsaturating"


@dataclass
class Preset:
    """One preset: its file stem (id), menu title, raw spec and, when it cannot be used here, why."""

    id: str
    title: str
    raw: dict[str, Any]
    notes: str = ""
    error: str | None = None
    resolved: dict[str, Any] = field(default_factory=dict)


_cache: dict[tuple[Any, ...], list[Preset]] = {}


def load_presets(registry: Registry, folder: Path | None = None) -> list[Preset]:
    """Every preset in ``folder`` (default ``explorer/presets``), the default one first, then by title.

    Parsed and resolved once per registry and set of files (every page run asks for them); callers
    must not change the presets they get.
    """
    folder = folder or PRESETS_DIR
    files = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.toml")))
    key = (registry, str(folder), files)  # the registry itself (by identity): presets resolve against it
    if key not in _cache:
        _cache.clear()
        _cache[key] = _load_presets(registry, folder)
    return list(_cache[key])


def _load_presets(registry: Registry, folder: Path) -> list[Preset]:
    out: list[Preset] = []
    for path in sorted(folder.glob("*.toml")):
        try:
            raw = load_spec_file(path)
        except ExplorerError as exc:
            out.append(Preset(path.stem, path.stem, {}, error=str(exc)))
            continue
        title = str(raw.get("name") or path.stem)
        preset = Preset(path.stem, title, raw, notes=str(raw.get("notes") or ""))
        try:
            preset.resolved = resolve(raw, registry).to_dict()
        except ExplorerError as exc:  # e.g. a preset that needs a plugin that is not installed
            preset.error = str(exc)
        out.append(preset)
    out.sort(key=lambda p: (p.id != DEFAULT_PRESET, p.error is not None, p.title))
    return out


def blank_preset(registry: Registry) -> Preset:
    """Every default, for an empty presets folder."""
    return Preset("defaults", "defaults", {}, resolved=resolve({}, registry).to_dict())
