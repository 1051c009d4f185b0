"""`genex new-plugin NAME`: name validation, no overwriting, --kinds, and a generated package that
passes its own tests, installs with pip, is discovered through its entry point and trains."""

from __future__ import annotations

import importlib
import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.cli import main as genex
from explorer.execute import run_foreground
from explorer.registry import Registry
from explorer.scaffold import parse_kinds, plugin_names, scaffold
from explorer.spec import parse_spec
from explorer.testing import check_plugin, check_training

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["Bad", "1abc", "my thing", "a--b", "a-", "-a", "a.b", "", "x" * 41, "génial"])
def test_a_bad_name_exits_2_with_one_clear_message_and_writes_nothing(tmp_path, capsys, name):
    assert genex(["new-plugin", "--dir", str(tmp_path), "--", name]) == 2
    err = capsys.readouterr().err
    assert "genex new-plugin: error:" in err and "not a valid plugin name" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_names_map_to_the_distribution_module_and_class_conventions():
    n = plugin_names("my_thing")
    assert (n["name"], n["dist"], n["module"], n["camel"]) == (
        "my-thing", "generative-explorer-my-thing", "generative_explorer_my_thing", "MyThing")
    assert plugin_names("generative-explorer-wgan-gp")["module"] == "generative_explorer_wgan_gp"
    assert "did you mean 'my-thing'" in str(pytest.raises(Exception, plugin_names, "My-Thing").value)


def test_an_existing_folder_is_never_overwritten(tmp_path, capsys):
    target = tmp_path / "generative-explorer-mine"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert genex(["new-plugin", "mine", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["keep.txt"] and (target / "keep.txt").read_text() == "mine"


def test_kinds_selects_the_stubs_and_a_bad_kind_is_explained(tmp_path, capsys):
    assert parse_kinds("objectives, sampler") == ["sampler", "objective"]
    assert genex(["new-plugin", "two", "--kinds", "sampler,objective", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sampler two-sampler, objective two-objective" in out and "pip install -e" in out
    pkg = tmp_path / "generative-explorer-two" / "generative_explorer_two"
    assert sorted(p.name for p in pkg.iterdir()) == ["__init__.py", "objective.py", "sampler.py"]
    init = (pkg / "__init__.py").read_text()
    assert "def register_samplers" in init and "def register_objectives" in init and "register_metrics" not in init
    assert genex(["new-plugin", "three", "--kinds", "sampler,objectiv", "--dir", str(tmp_path)]) == 2
    assert "did you mean 'objective'" in capsys.readouterr().err
    assert not (tmp_path / "generative-explorer-three").exists()


def test_the_pyproject_declares_the_entry_point_in_the_generative_explorer_group(tmp_path):
    import tomllib

    target = scaffold("pyproj", parent=tmp_path)
    meta = tomllib.loads((target / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "generative-explorer-pyproj"
    assert meta["project"]["entry-points"]["generative_explorer"] == {"pyproj": "generative_explorer_pyproj"}
    assert any(d.startswith("generative-explorer>=") for d in meta["project"]["dependencies"])


@pytest.fixture
def importable(monkeypatch):
    """Put a scaffolded package's folder on sys.path; forget its module afterwards."""
    added = []

    def use(folder: Path, module: str):
        monkeypatch.syspath_prepend(str(folder))
        added.append(module)
        return importlib.import_module(module)

    yield use
    for module in added:
        for key in [k for k in sys.modules if k == module or k.startswith(module + ".")]:
            del sys.modules[key]


def test_the_stubs_are_working_components_that_pass_the_kit_and_train(tmp_path, importable, monkeypatch):
    monkeypatch.setenv("GENEX_LOAD_PLUGINS", "")
    target = scaffold("stubby", parent=tmp_path)
    module = importable(target, "generative_explorer_stubby")
    registry = check_plugin(module)  # every stub passes the contract kit
    reg = Registry().load_installed()
    assert reg.load_module("generative_explorer_stubby", name="stubby") and reg.errors == []
    assert {n for kind in reg.components.values() for n in kind if n.startswith("stubby-")} == {
        "stubby-sampler", "stubby-architecture", "stubby-objective", "stubby-metric"}
    spec = parse_spec({"data": "stubby-sampler", "generator": "stubby-architecture", "discriminator": "stubby-architecture",
                       "objective": "stubby-objective", "metrics": ["stubby-metric"], "steps": 30, "batch_size": 64,
                       "log_every": 10, "snapshot_every": 30, "metric_every": 30, "device": "cpu"}, registry=reg)
    store, state = run_foreground(spec, root=tmp_path / "runs", registry=reg)
    assert state.view().status == "finished", state.view().error
    records = store.read_metrics()
    assert any("mean_gap" in r and "std_ratio" in r for r in records)
    assert store.read_spec()["provenance"]["data"] == "stubby"  # loaded from a folder: no distribution yet
    assert registry.get("sampler", "stubby-sampler").cls is module.StubbySampler


def test_a_partial_package_trains_with_builtins_for_the_other_slots(tmp_path, importable):
    target = scaffold("halfway", ["sampler", "metric"], parent=tmp_path)
    module = importable(target, "generative_explorer_halfway")
    check_training({"data": "halfway-sampler", "objective": "nonsaturating", "metrics": ["halfway-metric"]},
                   check_plugin(module), steps=10)


def _venv(tmp_path: Path) -> Path:
    """A throwaway virtual environment that sees *this* environment's packages (not the base
    interpreter's, which ``--system-site-packages`` would give when the tests run in a venv: an old
    setuptools there cannot build the package)."""
    venv = tmp_path / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"python -m venv is not available here: {made.stderr.strip()[:200]}")
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in {*site.getsitepackages(), site.getusersitepackages()} if os.path.isdir(p)]
    # addsitedir (not a bare path line) so this environment's own .pth files, editable installs among them, apply too
    Path(purelib, "_parent_env.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in ours))
    return python


def test_the_generated_package_installs_with_pip_shows_up_in_genex_plugins_and_passes_its_tests(tmp_path):
    # A throwaway virtual environment that sees this one's packages: the install never touches the
    # test environment, so nothing has to be uninstalled and parallel test runs are not disturbed.
    python = _venv(tmp_path)
    target = scaffold("piped", parent=tmp_path)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1", "PIP_ROOT_USER_ACTION": "ignore",
           "GENEX_LOAD_PLUGINS": "piped"}
    env.pop("GENEX_BLOCK_PLUGINS", None)
    run = lambda *args: subprocess.run([str(python), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    installed = run("-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(target))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = run("-m", "explorer", "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    info = json.loads(listed.stdout)
    assert info["errors"] == []
    ours = {c["name"]: c for kind in info["components"].values() for c in kind if c["plugin"] == "piped"}
    assert set(ours) == {"piped-sampler", "piped-architecture", "piped-objective", "piped-metric"}
    assert all(c["distribution"] == "generative-explorer-piped" and c["version"] == "0.1.0" for c in ours.values())
    tested = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(target))
    assert tested.returncode == 0 and "3 passed" in tested.stdout, tested.stdout[-3000:] + tested.stderr[-2000:]


def test_new_plugin_can_choose_the_module_name(tmp_path, capsys):
    assert genex(["new-plugin", "chosen", "--kinds", "metric", "--module", "my_metrics", "--dir", str(tmp_path)]) == 0
    target = tmp_path / "generative-explorer-chosen"
    assert (target / "my_metrics" / "__init__.py").is_file() and (target / "my_metrics" / "metric.py").is_file()
    assert 'chosen = "my_metrics"' in (target / "pyproject.toml").read_text()
    assert "import my_metrics as plugin" in (target / "tests" / "test_plugin.py").read_text()
    assert genex(["new-plugin", "other", "--module", "Not-A-Module", "--dir", str(tmp_path)]) == 2
    assert "not a usable module name" in capsys.readouterr().err
    assert not (tmp_path / "generative-explorer-other").exists()
