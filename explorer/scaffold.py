"""``genex new-plugin NAME``: scaffold a ready plugin package ``generative-explorer-NAME``.

The package has a pyproject.toml with the entry point in the ``generative_explorer`` group, a
module ``generative_explorer_NAME`` with one working stub component per kind asked for (a sampler
that really samples, a network that trains, a loss with gradients, a metric with numbers), and a
test that runs the contract checks of :mod:`explorer.testing` and a short training run. It installs
with ``pip install -e`` and then shows up in ``genex plugins`` and the app.
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from explorer import __version__
from explorer.hookspecs import KINDS  # not explorer.components: `genex new-plugin --help` needs no torch
from explorer.errors import ExplorerError, choices_text, did_you_mean

NAME_RE = re.compile(r"^[a-z][a-z0-9]*([-_][a-z0-9]+)*$")
PREFIXES = ("generative-explorer-", "generative_explorer_")
#: what each stub is, for the README table
STUBS = {
    "sampler": "uniform on an annulus, with its exact log_prob",
    "architecture": "a small MLP for any input and output shape",
    "objective": "the non-saturating GAN loss with one-sided label smoothing",
    "metric": "distance between the means and ratio of spreads",
}
HOOKS = {"sampler": "register_samplers", "architecture": "register_architectures",
         "objective": "register_objectives", "metric": "register_metrics"}


class ScaffoldError(ExplorerError):
    """The plugin name or the target folder is not usable."""


MODULE_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


def plugin_names(name: str, module: str | None = None) -> dict[str, str]:
    """From ``NAME`` (kebab or snake case, e.g. ``my-thing``): the plugin, distribution, module and class
    names; ``module`` replaces the default module name ``generative_explorer_<name>``."""
    raw = name.strip()
    for prefix in PREFIXES:
        if raw.startswith(prefix):
            raw = raw[len(prefix):]
    if not NAME_RE.match(raw) or len(raw) > 40:
        hint = ""
        if raw.lower() != raw and NAME_RE.match(raw.lower()):
            hint = f" (did you mean {raw.lower()!r}?)"
        raise ScaffoldError(
            f"{name!r} is not a valid plugin name{hint}: use lowercase letters, digits and single - or _ "
            "between words, starting with a letter, at most 40 characters (e.g. 'my-samplers' or 'wgan_gp')")
    kebab = raw.replace("_", "-")
    words = kebab.split("-")
    if module is not None and (not MODULE_RE.match(module) or len(module) > 60 or keyword.iskeyword(module)):
        raise ScaffoldError(f"--module {module!r} is not a usable module name: use lowercase letters, digits and _, "
                            "starting with a letter or _ (e.g. 'my_samplers')")
    return {
        "name": kebab,
        "dist": f"generative-explorer-{kebab}",
        "module": module or f"generative_explorer_{kebab.replace('-', '_')}",
        "camel": "".join(w.capitalize() for w in words),
        "title": " ".join(words).capitalize(),
        "core_version": __version__,
    }


def parse_kinds(text: str | None) -> list[str]:
    """``sampler,objective`` -> ["sampler", "objective"] (in the canonical order); None = all four."""
    if text is None:
        return list(KINDS)
    asked = []
    for item in (k.strip().lower() for k in text.split(",")):
        if not item:
            continue
        kind = item[:-1] if item not in KINDS and item.endswith("s") and item[:-1] in KINDS else item
        if kind not in KINDS:
            raise ScaffoldError(f"--kinds: {item!r} is not a component kind; choose from: {choices_text(KINDS)}"
                                + did_you_mean(item, KINDS))
        asked.append(kind)
    if not asked:
        raise ScaffoldError(f"--kinds is empty; choose one or more of: {choices_text(KINDS)}")
    return [k for k in KINDS if k in asked]


def _template(path: str) -> Template:
    return Template(resources.files("explorer").joinpath("templates", "plugin", path).read_text(encoding="utf-8"))


def _spec(names: dict[str, str], kinds: list[str]) -> dict[str, object]:
    """A spec that trains with the stubs (and built-ins for the kinds not asked for)."""
    n = names["name"]
    spec: dict[str, object] = {"data": f"{n}-sampler" if "sampler" in kinds else "ring8"}
    if "architecture" in kinds:
        spec["generator"] = spec["discriminator"] = f"{n}-architecture"
    spec["objective"] = f"{n}-objective" if "objective" in kinds else "nonsaturating"
    spec["metrics"] = [f"{n}-metric"] if "metric" in kinds else "none"
    return spec


def scaffold(name: str, kinds: list[str] | None = None, parent: str | Path = ".", module: str | None = None) -> Path:
    """Write the package folder ``parent/generative-explorer-NAME`` and return its path (``module``:
    the Python package's name, default ``generative_explorer_<name>``).

    Raises ScaffoldError for a bad name or when the folder already exists (nothing is overwritten).
    """
    names = plugin_names(name, module)
    kinds = list(KINDS) if kinds is None else kinds
    parent = Path(parent)
    target = parent / names["dist"]
    if target.exists():
        raise ScaffoldError(f"{str(target)!r} already exists; choose another name or --dir, or remove the folder first")
    if parent.exists() and not parent.is_dir():
        raise ScaffoldError(f"--dir {str(parent)!r} is not a folder")
    mod = names["module"]
    spec = _spec(names, kinds)
    classes = {k: f"{names['camel']}{k.capitalize()}" for k in kinds}
    imports = "\n".join(f"from {mod}.{k} import {classes[k]}" for k in kinds)
    hooks = "".join(f"\n\n@hookimpl\ndef {HOOKS[k]}(register):\n    register({classes[k]})\n" for k in kinds)
    table = "| kind | name | what the stub does |\n|---|---|---|\n" + "\n".join(
        f"| {k} | `{names['name']}-{k}` | {STUBS[k]} |" for k in kinds)
    toml_lines = [f'{key} = {json.dumps(value)}' for key, value in spec.items()]
    values = dict(names, imports=imports, hooks=hooks, component_table=table, spec_toml="\n".join(toml_lines),
                  spec_dict="{\n" + "".join(f"    {json.dumps(k)}: {json.dumps(v)},\n" for k, v in spec.items()) + "}")
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{mod}/__init__.py": "module/__init__.py.tmpl",
        "tests/test_plugin.py": "tests/test_plugin.py.tmpl",
        **{f"{mod}/{k}.py": f"module/{k}.py.tmpl" for k in kinds},
    }
    rendered = {rel: _template(tmpl).substitute(values) for rel, tmpl in files.items()}
    target.mkdir(parents=True)
    for rel, text in rendered.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    return target


# -- the `genex new-plugin` command ----------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Scaffold a ready plugin package generative-explorer-NAME with working stub components."
    parser.add_argument("name", metavar="NAME", help="plugin name in kebab or snake case, e.g. my-samplers")
    parser.add_argument("--kinds", metavar="KINDS",
                        help=f"comma list of the stubs to write, among {', '.join(KINDS)} (default: all four)")
    parser.add_argument("--dir", default=".", help="folder to create the package in (default: the current folder)")
    parser.add_argument("--module", metavar="MODULE",
                        help="the Python package's name (default: generative_explorer_NAME with - as _)")


def run(args: argparse.Namespace) -> int:
    kinds = parse_kinds(args.kinds)
    target = scaffold(args.name, kinds, args.dir, args.module)
    names = plugin_names(args.name, args.module)
    print(f"created {target}/ with " + ", ".join(f"{k} {names['name']}-{k}" for k in kinds))
    print("next:")
    print(f"  pip install -e {target}")
    print(f"  genex plugins          # its components, tagged [{names['name']} ({names['dist']} 0.1.0)]")
    print(f"  pytest {target}")
    return 0
