"""The plugin registry: one pluggy PluginManager, entry-point discovery, per-plugin isolation.

Built-in plugins (``plugins/``) and third-party packages register through the same
``generative_explorer`` entry-point group. Each plugin is imported and each of its hooks is called
on its own, so a plugin that fails to import, raises in a hook or registers a bad component is
recorded as a :class:`LoadError` (with its traceback) and every other plugin keeps working
(unlike pluggy's default loader, where one failure takes all down: llm issues #875, #1280).

Environment switches:
  GENEX_LOAD_PLUGINS   comma list of third-party plugins (entry-point or distribution names) to load;
                       set but empty = built-ins only. Unset = everything installed.
  GENEX_BLOCK_PLUGINS  comma list of plugins (entry-point, module or distribution names) never to load.
  GENEX_STRICT_PLUGINS=1  re-raise the first plugin failure instead of recording it (for plugin authors).

A third-party plugin is first imported in a separate Python process, once per installed version
(the verdict is remembered in ``~/.cache/generative-explorer/plugin-import-checks.json``, or under
``$XDG_CACHE_HOME``): a plugin whose import ends the process (``os._exit``, a crash) or hangs is
reported by name, with the ``GENEX_BLOCK_PLUGINS`` line that leaves it out, and never imported here,
so it cannot take ``genex plugins`` or the app server down with it.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import pluggy

from explorer import hookspecs
from explorer.components import BASES, KINDS, NAME_RE, Component
from explorer.errors import PluginError, SpecError, choices_text, did_you_mean
from explorer.params import check_declarations

PROJECT = "generative_explorer"
BUILTIN_DIST = "generative-explorer"
HOOK_KINDS = {
    "register_samplers": "sampler",
    "register_architectures": "architecture",
    "register_objectives": "objective",
    "register_metrics": "metric",
}
# Used only when the generative-explorer distribution is not installed (running from a bare checkout);
# the installed package registers the same modules through its entry points (pyproject.toml).
DEFAULT_PLUGINS: dict[str, str] = {
    "noise": "plugins.noise",
    "inverse-transform": "plugins.inverse_transform",
    "rejection": "plugins.rejection",
    "metropolis-hastings": "plugins.metropolis_hastings",
    "mixture-1d": "plugins.mixture_1d",
    "toys-2d": "plugins.toys2d",
    "drawn": "plugins.drawn",
    "images": "plugins.images",
    "mlp": "plugins.mlp",
    "dcgan": "plugins.dcgan",
    "gan-objectives": "plugins.gan_objectives",
    "mmd": "plugins.mmd",
    "metrics-samples": "plugins.metrics_samples",
    "metrics-1d": "plugins.metrics_1d",
    "metrics-2d": "plugins.metrics_2d",
    "metrics-images": "plugins.metrics_images",
}


@dataclass(frozen=True)
class ComponentInfo:
    """A registered component and where it came from."""

    kind: str
    name: str
    cls: type[Component]
    plugin: str
    dist: str | None
    version: str | None

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST

    @property
    def source(self) -> str:
        """'plugin (dist version)' for listings."""
        if self.dist:
            return f"{self.plugin} ({self.dist} {self.version or '?'})"
        return self.plugin

    def describe(self) -> dict[str, Any]:
        out = self.cls.describe()
        out.update(plugin=self.plugin, distribution=self.dist, version=self.version)
        return out


@dataclass
class PluginInfo:
    name: str
    module: str
    dist: str | None
    version: str | None
    components: list[tuple[str, str]] = field(default_factory=list)

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST


@dataclass
class LoadError:
    """A plugin failure: which plugin, at which stage (import, hook, register), why, and the traceback."""

    plugin: str
    dist: str | None
    version: str | None
    stage: str
    message: str
    traceback: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin, "distribution": self.dist, "version": self.version,
            "stage": self.stage, "message": self.message, "traceback": self.traceback,
        }


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


def _strict() -> bool:
    return os.environ.get("GENEX_STRICT_PLUGINS", "") not in ("", "0", "false", "False")


class Registry:
    """Components by kind and name, the plugins they came from, and the plugins that failed."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.components: dict[str, dict[str, ComponentInfo]] = {k: {} for k in KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.errors: list[LoadError] = []
        self.skipped: dict[str, str] = {}  # plugin -> why it was not loaded (blocked / not selected)

    # -- loading ------------------------------------------------------------------------------
    def load_installed(self) -> "Registry":
        """Discover and load every plugin in the entry-point group (honouring the env switches).

        Built-in plugins load first, so a third-party package can never take a built-in name: its
        duplicate is the one reported. A plugin is matched by the switches through its entry-point
        name, its module or its distribution name (``-``/``_`` and case do not matter).
        """
        load_only = _env_list("GENEX_LOAD_PLUGINS")
        blocked = {_norm(b) for b in _env_list("GENEX_BLOCK_PLUGINS") or []}
        selected = {_norm(s) for s in load_only} if load_only is not None else None
        eps = list(md.entry_points(group=PROJECT))
        have_builtin_eps = any(_is_builtin(ep) for ep in eps)
        if not have_builtin_eps:
            for name, module in DEFAULT_PLUGINS.items():
                if {_norm(name), _norm(module)} & blocked:
                    self.skipped[name] = "blocked by GENEX_BLOCK_PLUGINS"
                    continue
                self.load_module(module, name=name, dist=BUILTIN_DIST, version=_version(BUILTIN_DIST))
        eps.sort(key=lambda e: (not _is_builtin(e), _norm(e.dist.name) if e.dist else "", e.name))
        seen: set[tuple[str, str, str]] = set()
        chosen: list[md.EntryPoint] = []
        for ep in eps:
            dist = ep.dist.name if ep.dist else None
            key = (_norm(dist or ""), ep.name, ep.value)
            if key in seen:  # the same distribution found twice on sys.path (e.g. a stale egg-info)
                continue
            seen.add(key)
            names = {_norm(n) for n in (ep.name, ep.value, ep.module, dist or "") if n}
            if names & blocked:
                self.skipped[ep.name] = "blocked by GENEX_BLOCK_PLUGINS"
                continue
            if not _is_builtin(ep) and selected is not None and not names & selected:
                self.skipped[ep.name] = "not listed in GENEX_LOAD_PLUGINS" if selected else "GENEX_LOAD_PLUGINS is empty (built-ins only)"
                continue
            chosen.append(ep)
        # Third-party plugins are first imported in a separate process: one that ends the process is named, not imported.
        killed = import_checks([ep for ep in chosen if not _is_builtin(ep)])
        for ep in chosen:
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            if killed.get(ep.name):
                self._fail(ep.name, dist, version, "import", killed[ep.name], None)
                continue
            self._load(lambda ep=ep: ep.load(), ep.name, dist, version)
        return self

    def load_module(self, module: str, name: str | None = None, dist: str | None = None, version: str | None = None) -> bool:
        """Import a module by name and register it as a plugin."""
        return self._load(lambda: importlib.import_module(module), name or module, dist, version)

    def _load(self, importer: Callable[[], Any], name: str, dist: str | None, version: str | None) -> bool:
        try:
            obj = importer()
        except BaseException as exc:  # noqa: BLE001 - an import may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._fail(name, dist, version, "import", f"{type(exc).__name__}: {exc}", exc)
            return False
        return self.add_plugin(obj, name=name, dist=dist, version=version)

    def add_plugin(self, obj: Any, name: str | None = None, dist: str | None = None, version: str | None = None) -> bool:
        """Register a module or object holding hook implementations, then call its hooks one by one.

        Each hook of each plugin is called on its own: a hook that raises is recorded and the
        components it registered before raising are withdrawn (a half-run hook cannot be trusted),
        while the plugin's other hooks and every other plugin keep their registrations.
        Returns False (and records a LoadError) when the plugin could not be registered at all.
        """
        name = name or getattr(obj, "__name__", None) or type(obj).__name__
        if name in self.plugins:
            other = self.plugins[name]
            where = f" from {other.dist} {other.version or ''}".rstrip() if other.dist else ""
            self._fail(name, dist, version, "register",
                       f"a plugin named {name!r} is already loaded (module {other.module}{where}); "
                       "rename the entry point or uninstall one of the two packages", None)
            return False
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # pluggy validates hook names and signatures here
            self._fail(name, dist, version, "register", f"{type(exc).__name__}: {exc}", exc)
            return False
        module = getattr(obj, "__name__", type(obj).__module__)
        info = PluginInfo(name=name, module=module, dist=dist, version=version)
        self.plugins[name] = info
        problem = self._hook_problems(obj)
        if problem:
            self._fail(name, dist, version, "register", problem, None)
        for hook_name, kind in HOOK_KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not obj:
                    continue
                before = len(info.components)
                registrar = self._registrar(kind, info)
                try:
                    impl.function(**{arg: registrar for arg in impl.argnames})
                except Exception as exc:
                    for ckind, cname in info.components[before:]:
                        self.components[ckind].pop(cname, None)
                    del info.components[before:]
                    self._fail(name, dist, version, "hook", f"{hook_name} raised {type(exc).__name__}: {exc}", exc)
        return True

    def _hook_problems(self, obj: Any) -> str:
        """Mistakes pluggy lets through silently: a misspelt hook name, a hook missing ``@hookimpl``."""
        problems = []
        hooked = False
        for attr in dir(obj):
            value = getattr(obj, attr, None)
            if not callable(value):
                continue
            marked = self.pm.parse_hookimpl_opts(obj, attr) is not None
            if marked and attr in HOOK_KINDS:
                hooked = True
            elif marked:
                problems.append(f"unknown hook {attr!r}{did_you_mean(attr, HOOK_KINDS)}; hooks are: {', '.join(HOOK_KINDS)}")
            elif attr in HOOK_KINDS:
                problems.append(f"{attr} is not decorated with @hookimpl (from explorer import hookimpl), so it is never called")
        if not hooked and not problems:
            problems.append(f"it defines no hooks; decorate one of {', '.join(HOOK_KINDS)} with @hookimpl")
        return "; ".join(problems)

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin and its components (tests register a plugin in a fixture and remove it after)."""
        info = self.plugins.pop(name, None)
        if info is None:
            return
        for kind, cname in info.components:
            self.components[kind].pop(cname, None)
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)

    def _registrar(self, kind: str, info: PluginInfo) -> Callable[[type], None]:
        def register(cls: type) -> None:
            try:
                self._check(kind, cls, info)
            except Exception as exc:
                what = getattr(cls, "name", None) or getattr(cls, "__name__", repr(cls))
                self._fail(info.name, info.dist, info.version, "register", f"{kind} {what!r} rejected: {exc}", exc)
                return
            self.components[kind][cls.name] = ComponentInfo(kind, cls.name, cls, info.name, info.dist, info.version)
            info.components.append((kind, cls.name))

        return register

    def _check(self, kind: str, cls: type, info: PluginInfo) -> None:
        base = BASES[kind]
        if not isinstance(cls, type) or not issubclass(cls, base):
            raise TypeError(f"register_{kind}s must register a subclass of explorer.{base.__name__}, got {cls!r}")
        if not isinstance(getattr(cls, "name", None), str) or not NAME_RE.match(cls.name):
            raise ValueError(f"component name must be kebab-case (like 'ring8' or 'wgan-gp'), got {cls.name!r}")
        check_declarations(cls.params)
        existing = self.components[kind].get(cls.name)
        if existing is not None:
            raise ValueError(f"duplicate {kind} name {cls.name!r}: already registered by plugin {existing.source}; "
                             "choose another name (prefixing it with your package's name avoids clashes)")
        from explorer import contract  # local: contract checks import torch-heavy helpers lazily

        contract.check_class(kind, cls)

    def _fail(self, plugin: str, dist: str | None, version: str | None, stage: str, message: str, exc: BaseException | None) -> None:
        """Record a plugin failure; with GENEX_STRICT_PLUGINS=1 raise it instead (for plugin authors)."""
        if _strict():
            if exc is not None:
                raise exc
            raise PluginError(f"plugin {plugin!r} [{stage}]: {message}")
        tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
        self.errors.append(LoadError(plugin, dist, version, stage, message, tb))

    # -- lookup -------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str, where: str | None = None) -> ComponentInfo:
        """The component, or a SpecError naming the field, the bad value and the valid choices."""
        found = self.components[kind].get(name)
        if found is not None:
            return found
        where = where or kind
        failed = [e.plugin for e in self.errors]
        extra = f" (plugins that failed to load: {', '.join(failed)}; see `genex plugins`)" if failed else ""
        raise SpecError(
            where,
            f"unknown {kind} {name!r}; choose one of: {choices_text(self.components[kind])}"
            + did_you_mean(name, self.components[kind]) + extra,
        )

    def create(self, kind: str, name: str, params: Mapping[str, Any] | None = None, where: str | None = None) -> Component:
        """Instantiate a component with validated parameters; a plugin's own failure names the plugin."""
        info = self.get(kind, name, where)
        try:
            return info.cls(**dict(params or {}))
        except SpecError as exc:
            if where and not exc.field.startswith(where):
                raise SpecError(f"{where}.{exc.field}" if exc.field else where, exc.message) from None
            raise
        except Exception as exc:
            raise PluginError(
                f"{kind} {name!r} from plugin {info.source} failed to start: {type(exc).__name__}: {exc}"
            ) from exc

    def blame(self, exc: BaseException) -> ComponentInfo | None:
        """The component whose code raised ``exc`` (following ``raise ... from``), or None.

        Walking the traceback from the outside in, the innermost plugin frame decides: a method of a
        registered component (its ``self``) names that component exactly; other code is matched by
        module (e.g. the network an architecture built), then by the plugin's package (its helpers).
        """
        by_cls: dict[type, ComponentInfo] = {}
        by_module: dict[str, ComponentInfo] = {}
        for kind in KINDS:
            for info in self.components[kind].values():
                by_cls[info.cls] = info
                by_module.setdefault(info.cls.__module__, info)
        by_package: dict[str, ComponentInfo] = {}
        for plugin in self.plugins.values():
            first = next((self.components[k][n] for k, n in plugin.components if n in self.components[k]), None)
            if first is not None and plugin.module.split(".")[0] not in ("explorer", "torch"):
                by_package.setdefault(plugin.module.split(".")[0], first)
        found: ComponentInfo | None = None
        for tb in _tracebacks(exc):
            frame = tb.tb_frame
            owner = frame.f_locals.get("self")
            if owner is not None and type(owner) in by_cls:
                found = by_cls[type(owner)]
                continue
            mod = frame.f_globals.get("__name__") or ""
            if mod in by_module:
                if found is None or found.cls.__module__ != mod:
                    found = by_module[mod]
                continue
            cand = by_package.get(mod.split(".")[0])
            if cand is not None and (found is None or found.plugin != cand.plugin):
                found = cand
        return found

    def describe(self) -> dict[str, Any]:
        """Everything ``genex plugins --json`` prints."""
        return {
            "components": {k: [self.components[k][n].describe() for n in self.names(k)] for k in KINDS},
            "plugins": [
                {"name": p.name, "module": p.module, "distribution": p.dist, "version": p.version,
                 "components": [f"{k}:{n}" for k, n in p.components]}
                for p in self.plugins.values()
            ],
            "errors": [e.describe() for e in self.errors],
            "skipped": dict(self.skipped),
        }


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _is_builtin(ep: md.EntryPoint) -> bool:
    return ep.dist is not None and _norm(ep.dist.name) == _norm(BUILTIN_DIST)


def _tracebacks(exc: BaseException | None) -> Iterable[Any]:
    """Traceback entries of ``exc`` outermost first, then those of the exception it wraps (its
    ``__cause__``, or its ``__context__`` unless suppressed with ``from None``), which ran deeper."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            yield tb
            tb = tb.tb_next
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        from explorer import __version__

        return __version__


IMPORT_CHECK_TIMEOUT_S = 90.0
_IMPORT_CHECK_OK = "genex-import-check-ok"
_IMPORT_CHECK = f"""
import importlib, os, sys
for i, value in enumerate(sys.argv[1:]):
    module, _, attr = value.partition(":")
    try:
        obj = importlib.import_module(module.strip())
        for part in filter(None, attr.strip().split(".")):
            obj = getattr(obj, part)
    except BaseException:
        pass  # an ordinary failure is reported when the plugin is imported for real
    sys.stdout.write("{_IMPORT_CHECK_OK} %d\\n" % i)
    sys.stdout.flush()
os._exit(0)
"""


def _check_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "generative-explorer" / "plugin-import-checks.json"


def _check_key(ep: md.EntryPoint) -> str:
    dist = ep.dist
    where = getattr(dist, "_path", None)
    try:
        stamp = os.stat(where).st_mtime_ns if where else 0
    except OSError:
        stamp = 0
    return f"{dist.name if dist else ''}=={dist.version if dist else ''}|{ep.name}={ep.value}|{where}|{stamp}"


def import_checks(eps: list[md.EntryPoint]) -> dict[str, str]:
    """Import plugins' modules in a separate process first: {entry-point name: "" when that process
    lives through its import (an ordinary exception counts as living: it is reported when imported
    here), else why it is left out}. One process imports every plugin not checked before, in turn;
    when one ends it, that one is named and the rest are checked in a fresh process. The verdicts are
    remembered per installed version of each distribution."""
    cache_path = _check_cache_path()
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    verdicts: dict[str, str] = {}
    todo: list[tuple[md.EntryPoint, str]] = []
    for ep in eps:
        key = _check_key(ep)
        if isinstance(cache.get(key), str):
            verdicts[ep.name] = cache[key]
        else:
            todo.append((ep, key))
    if not todo:
        return verdicts
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if isinstance(p, str)))
    while todo:
        timed_out = False
        try:
            proc = subprocess.run([sys.executable, "-c", _IMPORT_CHECK, *(ep.value for ep, _ in todo)], env=env,
                                  capture_output=True, timeout=IMPORT_CHECK_TIMEOUT_S, stdin=subprocess.DEVNULL)
            out, code = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out, code, timed_out = exc.stdout or b"", None, True
        except OSError:
            break  # no way to run a check here: import them as before
        done = sum(1 for line in out.decode("utf-8", "replace").splitlines() if line.startswith(_IMPORT_CHECK_OK))
        for ep, key in todo[:done]:
            verdicts[ep.name] = cache[key] = ""
        if done >= len(todo):
            break
        ep, key = todo[done]
        label = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.name
        block = f"GENEX_BLOCK_PLUGINS={ep.name}"
        if timed_out:
            verdicts[ep.name] = (f"importing it ({label}) did not finish within {IMPORT_CHECK_TIMEOUT_S:g} s in a separate "
                                 f"check process, so it was not loaded; fix or uninstall it, or set {block} to leave it out")
        else:
            how = f"exit code {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"
            verdicts[ep.name] = cache[key] = (
                f"importing it ({label}) ends the Python process ({how}: os._exit() or a crash), so it was not loaded, "
                f"to keep this program alive; fix or uninstall it, or set {block} to leave it out")
        todo = todo[done + 1:]
    if len(cache) > 500:  # keep the newest verdicts
        cache = dict(list(cache.items())[-500:])
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        os.replace(tmp, cache_path)
    except OSError:
        pass  # an unwritable cache only means checking again next time
    return verdicts


_lock = threading.Lock()
_registry: Registry | None = None
_swapped = False  # the process-wide registry was set in code (set_registry), not loaded from the installed plugins


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry of installed plugins, loaded once."""
    global _registry, _swapped
    with _lock:
        if _registry is None or reload:
            _registry = Registry().load_installed()
            _swapped = False
        return _registry


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests)."""
    global _registry, _swapped
    with _lock:
        _registry = registry
        _swapped = registry is not None


def is_installed(registry: Registry) -> bool:
    """Whether ``registry`` is the one loaded from the installed plugins, which another process (a
    worker) can load again; one set in code may hold plugins that exist only in this process."""
    with _lock:
        return registry is _registry and not _swapped
