"""The registry: discovery through entry points, the env switches, per-plugin isolation of broken
plugins, blame for components that raise during a run, and provenance of the components in a spec."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from explorer import Metric, Objective, Param, Sampler, SpecError, hookimpl
from explorer.cli import main as genex
from explorer.errors import PluginError
from explorer.registry import Registry, set_registry
from explorer.spec import parse_spec

BUILTIN_PLUGINS = {"noise", "inverse-transform", "rejection", "metropolis-hastings", "mixture-1d", "toys-2d", "images",
                   "mlp", "dcgan", "gan-objectives", "mmd", "metrics-samples", "metrics-1d", "metrics-2d", "metrics-images"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("GENEX_LOAD_PLUGINS", "GENEX_BLOCK_PLUGINS", "GENEX_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)


# -- small plugins ----------------------------------------------------------------------------------
class Flat(Sampler):
    name = "test-flat"
    summary = "uniform on [0, 1]"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.shape = (1,)

    def sample(self, n, generator, device):
        return torch.rand(n, 1, generator=generator, device=device)


def plugin(**hooks) -> types.SimpleNamespace:
    """A plugin object whose hooks register the given classes (or call the given functions)."""
    ns = types.SimpleNamespace()
    for hook, body in hooks.items():
        def impl(register, body=body):
            if callable(body) and not isinstance(body, type):
                return body(register)
            for cls in body:
                register(cls)
        setattr(ns, hook, hookimpl(impl))
    return ns


def sampler_named(name: str, **attrs) -> type:
    return type(f"S_{name.replace('-', '_')}", (Flat,), {"name": name, **attrs})


def write_module(folder: Path, module: str, source: str) -> None:
    (folder / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site folder on sys.path where tests install fake distributions (dist-info + module)."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    added: list[str] = []

    def install(dist: str, version: str, entry: str, module: str, source: str) -> None:
        info = folder / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[generative_explorer]\n{entry} = {module}\n")
        write_module(folder, module, source)
        added.append(module)

    yield install
    for module in added:
        sys.modules.pop(module, None)


GOOD_SOURCE = """
    import torch
    from explorer import Sampler, hookimpl

    class FakeUniform(Sampler):
        name = "fake-uniform"
        summary = "uniform on [0, 1] from a fake package"
        def __init__(self, **kw):
            super().__init__(**kw)
            self.shape = (1,)
        def sample(self, n, generator, device):
            return torch.rand(n, 1, generator=generator, device=device)

    @hookimpl
    def register_samplers(register):
        register(FakeUniform)
"""


# -- loading the installed plugins --------------------------------------------------------------------
def test_every_builtin_plugin_loads_without_errors(monkeypatch):
    monkeypatch.setenv("GENEX_LOAD_PLUGINS", "")
    reg = Registry().load_installed()
    assert reg.errors == []
    assert BUILTIN_PLUGINS <= set(reg.plugins)
    assert all(p.builtin and p.version for p in reg.plugins.values())
    assert reg.get("sampler", "ring8").source.startswith("toys-2d (generative-explorer ")


def test_an_installed_package_is_discovered_with_its_distribution_and_version(site):
    site("genex-fake-plugin", "1.2.3", "fake", "genex_fake_plugin_a", GOOD_SOURCE)
    reg = Registry().load_installed()
    info = reg.get("sampler", "fake-uniform")
    assert (info.plugin, info.dist, info.version) == ("fake", "genex-fake-plugin", "1.2.3")
    assert info.source == "fake (genex-fake-plugin 1.2.3)"
    assert not info.builtin and reg.plugins["fake"].components == [("sampler", "fake-uniform")]
    described = next(c for c in reg.describe()["components"]["sampler"] if c["name"] == "fake-uniform")
    assert described["distribution"] == "genex-fake-plugin" and described["version"] == "1.2.3"


def test_empty_load_list_loads_builtins_only(site, monkeypatch):
    site("genex-fake-plugin", "1.2.3", "fake", "genex_fake_plugin_b", GOOD_SOURCE)
    monkeypatch.setenv("GENEX_LOAD_PLUGINS", "")
    reg = Registry().load_installed()
    assert "fake-uniform" not in reg.components["sampler"] and "ring8" in reg.components["sampler"]
    assert "built-ins only" in reg.skipped["fake"]
    assert all(p.builtin for p in reg.plugins.values())


@pytest.mark.parametrize("selector", ["fake", "genex_fake_plugin_c", "genex-fake-plugin", "GENEX_FAKE_PLUGIN"])
def test_load_list_selects_a_plugin_by_entry_point_module_or_distribution_name(site, monkeypatch, selector):
    site("genex-fake-plugin", "1.2.3", "fake", "genex_fake_plugin_c", GOOD_SOURCE)
    site("genex-other", "0.1", "other", "genex_other_c", GOOD_SOURCE.replace("fake-uniform", "other-uniform"))
    monkeypatch.setenv("GENEX_LOAD_PLUGINS", selector)
    reg = Registry().load_installed()
    assert "fake-uniform" in reg.components["sampler"]
    assert "other-uniform" not in reg.components["sampler"]
    assert reg.skipped["other"] == "not listed in GENEX_LOAD_PLUGINS"
    assert "ring8" in reg.components["sampler"]  # built-ins always load


def test_block_list_leaves_out_third_party_and_builtin_plugins(site, monkeypatch):
    site("genex-fake-plugin", "1.2.3", "fake", "genex_fake_plugin_d", GOOD_SOURCE)
    monkeypatch.setenv("GENEX_BLOCK_PLUGINS", "genex-fake-plugin, toys-2d")
    reg = Registry().load_installed()
    assert "fake-uniform" not in reg.components["sampler"]
    assert not {"ring8", "grid25", "moons", "spiral"} & set(reg.components["sampler"])
    assert reg.skipped["fake"] == reg.skipped["toys-2d"] == "blocked by GENEX_BLOCK_PLUGINS"
    assert "gaussian" in reg.components["sampler"] and reg.errors == []


def test_an_installed_package_that_fails_to_import_is_reported_with_its_version_and_traceback(site):
    site("genex-broken", "0.2.0", "broken", "genex_broken_e", "import scipyy\n")
    reg = Registry().load_installed()
    err = next(e for e in reg.errors if e.plugin == "broken")
    assert (err.dist, err.version, err.stage) == ("genex-broken", "0.2.0", "import")
    assert "No module named 'scipyy'" in err.message and "import scipyy" in err.traceback
    assert "broken" not in reg.plugins and "ring8" in reg.components["sampler"]


def test_strict_mode_reraises_an_installed_plugins_failure(site, monkeypatch):
    site("genex-broken", "0.2.0", "broken", "genex_broken_f", "import scipyy\n")
    monkeypatch.setenv("GENEX_STRICT_PLUGINS", "1")
    with pytest.raises(ModuleNotFoundError, match="scipyy"):
        Registry().load_installed()


def test_a_third_party_plugin_cannot_take_a_builtin_name_even_when_it_sorts_first(site):
    # "aaa-..." sorts before "generative-explorer": built-ins still load first and keep their names.
    site("aaa-genex-squatter", "1.0", "squatter", "genex_squatter_g", GOOD_SOURCE.replace('"fake-uniform"', '"ring8"'))
    reg = Registry().load_installed()
    assert reg.get("sampler", "ring8").plugin == "toys-2d"
    err = next(e for e in reg.errors if e.plugin == "squatter")
    assert err.stage == "register" and "duplicate sampler name 'ring8'" in err.message and "toys-2d (generative-explorer" in err.message


# -- isolation of broken plugins ------------------------------------------------------------------------
@pytest.mark.parametrize("source, reason", [
    ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
    ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    ("def broken(:\n", "SyntaxError"),
])
def test_a_module_that_fails_to_import_is_reported_and_others_load(tmp_path, monkeypatch, source, reason):
    module = f"genex_bad_import_{abs(hash(source))}"
    write_module(tmp_path, module, source)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    assert reg.load_module(module, name="bad") is False
    assert reg.add_plugin(plugin(register_samplers=[Flat]), name="good")
    assert [(e.plugin, e.stage) for e in reg.errors] == [("bad", "import")]
    assert reason in reg.errors[0].message and reg.errors[0].traceback
    assert reg.names("sampler") == ["test-flat"]
    sys.modules.pop(module, None)


def test_a_hook_that_raises_is_reported_and_its_partial_registrations_withdrawn():
    class GoodLoss(Objective):
        name, summary, needs_discriminator = "test-loss", "a loss", False

        def generator_loss(self, D, real, fake):
            return fake.square().mean()

    def half_then_raise(register):
        register(Flat)
        raise ValueError("forgot a dependency")

    reg = Registry()
    reg.add_plugin(plugin(register_samplers=half_then_raise, register_objectives=[GoodLoss]), name="half")
    assert reg.names("sampler") == []                    # the raising hook's registrations are withdrawn
    assert reg.names("objective") == ["test-loss"]       # the plugin's other hook still counts
    assert reg.plugins["half"].components == [("objective", "test-loss")]
    (err,) = reg.errors
    assert err.stage == "hook" and "register_samplers raised ValueError: forgot a dependency" in err.message
    assert "forgot a dependency" in err.traceback


@pytest.mark.parametrize("raising_first", [True, False])
def test_one_plugins_exception_never_hides_another_plugins_registrations(raising_first):
    def boom(register):
        raise RuntimeError("boom")

    reg = Registry()
    plugins = [("boom", plugin(register_samplers=boom)), ("fine", plugin(register_samplers=[Flat]))]
    for name, obj in plugins if raising_first else plugins[::-1]:
        reg.add_plugin(obj, name=name)
    assert reg.names("sampler") == ["test-flat"]
    assert [e.plugin for e in reg.errors] == ["boom"]


def test_a_duplicate_component_name_keeps_the_first_and_names_the_plugin_that_has_it():
    reg = Registry()
    reg.add_plugin(plugin(register_samplers=[Flat]), name="first", dist="genex-first", version="1.0")
    reg.add_plugin(plugin(register_samplers=[sampler_named("test-flat"), sampler_named("test-other")]), name="second")
    assert reg.get("sampler", "test-flat").plugin == "first"
    assert "test-other" in reg.components["sampler"]    # the rest of the same hook still registers
    (err,) = reg.errors
    assert err.plugin == "second" and err.stage == "register"
    assert "duplicate sampler name 'test-flat'" in err.message and "first (genex-first 1.0)" in err.message


def test_a_duplicate_plugin_name_is_reported():
    reg = Registry()
    assert reg.add_plugin(plugin(register_samplers=[Flat]), name="same")
    assert not reg.add_plugin(plugin(register_samplers=[sampler_named("test-b")]), name="same")
    assert "already loaded" in reg.errors[0].message and reg.names("sampler") == ["test-flat"]


class NoKw(Flat):
    name = "no-kw"
    params = (Param("width", "float", 1.0, "width"),)

    def __init__(self):
        super().__init__()


class WrongSample(Flat):
    name = "wrong-sample"

    def sample(self, n):
        return torch.zeros(n, 1)


class BadMetric(Metric):
    name, summary, applies_to = "bad-metric", "applies to nothing known", ("3d",)

    def compute(self, real, fake, context):
        return {}


class NoDLoss(Objective):
    name, summary = "no-d-loss", "a GAN loss without the discriminator's side"

    def generator_loss(self, D, real, fake):
        return fake.mean()


@pytest.mark.parametrize("bad, reason", [
    (object, "must register a subclass of explorer.Sampler"),
    (NoDLoss, "must register a subclass of explorer.Sampler"),
    (sampler_named("Ring_8"), "kebab-case"),
    (sampler_named("no-summary", summary=""), "summary"),
    (sampler_named("dup-params", params=(Param("a", "int", 1, "a"), Param("a", "int", 2, "a"))), "declared twice"),
    (sampler_named("name-param", params=(Param("name", "str", "x", "reserved"),)), "reserved"),
    (type("NoSample", (Sampler,), {"name": "no-sample", "summary": "s"}), "does not implement sample()"),
    (NoKw, "__init__ must accept the declared parameters"),
    (WrongSample, "sample() must accept (n, generator, device)"),
])
def test_a_bad_sampler_is_rejected_with_the_reason_and_the_rest_registers(bad, reason):
    reg = Registry()
    reg.add_plugin(plugin(register_samplers=[bad, Flat]), name="mixed")
    assert reg.names("sampler") == ["test-flat"]
    (err,) = reg.errors
    assert err.plugin == "mixed" and err.stage == "register" and reason in err.message


@pytest.mark.parametrize("hook, bad, reason", [
    ("register_metrics", BadMetric, "applies_to must be a tuple of data kinds"),
    ("register_objectives", NoDLoss, "does not implement discriminator_loss()"),
])
def test_bad_metrics_and_objectives_are_rejected_with_the_reason(hook, bad, reason):
    reg = Registry()
    reg.add_plugin(plugin(**{hook: [bad]}), name="bad")
    assert reg.names(bad.kind) == [] and reason in reg.errors[0].message


def test_misspelt_and_undecorated_hooks_are_reported_instead_of_ignored():
    misspelt = types.SimpleNamespace(register_sampler=hookimpl(lambda register: register(Flat)))
    undecorated = types.SimpleNamespace(register_samplers=lambda register: register(Flat))
    reg = Registry()
    reg.add_plugin(misspelt, name="misspelt")
    reg.add_plugin(undecorated, name="undecorated")
    messages = {e.plugin: e.message for e in reg.errors}
    assert "unknown hook 'register_sampler' (did you mean 'register_samplers'?)" in messages["misspelt"]
    assert "not decorated with @hookimpl" in messages["undecorated"]


def test_strict_mode_raises_at_the_first_failure(monkeypatch):
    monkeypatch.setenv("GENEX_STRICT_PLUGINS", "1")

    def boom(register):
        raise RuntimeError("boom in a hook")

    with pytest.raises(RuntimeError, match="boom in a hook"):
        Registry().add_plugin(plugin(register_samplers=boom), name="boom")
    reg = Registry()
    reg.add_plugin(plugin(register_samplers=[Flat]), name="a")
    with pytest.raises(PluginError, match="already loaded"):
        reg.add_plugin(plugin(register_samplers=[Flat]), name="a")


def test_remove_plugin_takes_its_components_away():
    reg = Registry()
    reg.add_plugin(plugin(register_samplers=[Flat]), name="temp")
    reg.remove_plugin("temp")
    assert reg.names("sampler") == [] and "temp" not in reg.plugins
    assert reg.add_plugin(plugin(register_samplers=[Flat]), name="temp") and reg.errors == []


def test_unknown_component_names_the_plugins_that_failed():
    reg = Registry()
    reg.add_plugin(plugin(register_samplers=[Flat]), name="fine")
    reg.add_plugin(plugin(register_samplers=lambda register: 1 / 0), name="zero")
    with pytest.raises(SpecError, match=r"unknown sampler 'test-flta'.*did you mean 'test-flat'.*failed to load: zero"):
        reg.get("sampler", "test-flta", where="data")


# -- genex plugins shows failures --------------------------------------------------------------------
@pytest.fixture
def installed(monkeypatch):
    """Make ``reg`` the process-wide registry for the duration of a test."""
    def use(reg):
        set_registry(reg)
        return reg
    yield use
    set_registry(None)


def test_genex_plugins_lists_failed_plugins_with_version_reason_and_traceback(installed, capsys):
    reg = Registry()
    reg.add_plugin(plugin(register_samplers=[Flat]), name="fine", dist="genex-fine", version="1.0")
    reg.add_plugin(plugin(register_samplers=lambda register: {}["missing"]), name="broken", dist="genex-broken", version="0.2.0")
    installed(reg)
    assert genex(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "test-flat" in out and "[fine (genex-fine 1.0)]" in out
    assert "broken (genex-broken 0.2.0) [hook]: register_samplers raised KeyError: 'missing'" in out
    assert "--verbose shows the tracebacks" in out
    assert genex(["plugins", "--verbose"]) == 0
    assert "Traceback (most recent call last)" in capsys.readouterr().out
    assert genex(["plugins", "--json"]) == 0
    (err,) = json.loads(capsys.readouterr().out)["errors"]
    assert err["plugin"] == "broken" and err["version"] == "0.2.0" and err["stage"] == "hook" and err["traceback"]


# -- blame: a component that raises fails its run only, named ---------------------------------------------
class Exploding(Objective):
    name, summary = "test-exploding", "raises in generator_loss"

    def discriminator_loss(self, D, real, fake):
        return F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()

    def generator_loss(self, D, real, fake):
        return _explode(fake)


def _explode(fake):
    raise RuntimeError("the generator loss blew up")


class CrashingMetric(Metric):
    name, summary = "test-crashing", "raises in compute"

    def compute(self, real, fake, context):
        raise ValueError("metric blew up")


def test_a_component_that_raises_fails_its_run_with_the_plugin_named(tmp_path, monkeypatch):
    from explorer.execute import run_foreground

    monkeypatch.setenv("GENEX_LOAD_PLUGINS", "")
    reg = Registry().load_installed()
    reg.add_plugin(plugin(register_objectives=[Exploding], register_metrics=[CrashingMetric]), name="explosives",
                   dist="genex-explosives", version="6.6")
    base = dict(data="ring8", steps=5, batch_size=16, log_every=1, snapshot_every=5, checkpoint_every=0, device="cpu")
    spec = parse_spec(dict(base, objective="test-exploding", metrics="none"), registry=reg)
    store, state = run_foreground(spec, root=tmp_path, registry=reg)
    view = state.view()
    assert view.status == "failed" and store.read_status()["status"] == "failed"
    assert "objective 'test-exploding' from plugin explosives (genex-explosives 6.6)" in view.error
    assert "RuntimeError" in view.error and "the generator loss blew up" in view.error
    # A metric that raises fails only itself, named too: the run finishes; a healthy run beside it is unaffected.
    spec = parse_spec(dict(base, objective="nonsaturating", metrics=["test-crashing"], metric_every=2), registry=reg)
    _, state = run_foreground(spec, root=tmp_path, registry=reg)
    assert state.view().status == "finished" and "metric 'test-crashing' from plugin explosives" in state.view().error
    _, state = run_foreground(parse_spec(dict(base, metrics="none"), registry=reg), root=tmp_path, registry=reg)
    assert state.view().status == "finished"


def _raise_in(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("expected an exception")


def test_blame_names_the_exact_component_among_siblings_in_one_module():
    from plugins import gan_objectives, mlp

    reg = Registry()
    reg.add_plugin(gan_objectives, name="gan-objectives")
    reg.add_plugin(mlp, name="mlp")
    minimax = reg.create("objective", "minimax")
    exc = _raise_in(minimax.generator_loss, None, torch.zeros(2, 2), torch.zeros(2, 2))  # raises in a module helper
    assert reg.blame(exc).name == "minimax"
    net = reg.create("architecture", "mlp").build("generator", (2,), (2,))
    exc = _raise_in(net, torch.zeros(3, 5))                                             # raises in the built network
    assert reg.blame(exc).name == "mlp"
    # Through `raise ... from` (how the trainer wraps metric failures) and not for core code.
    try:
        try:
            minimax.generator_loss(None, torch.zeros(1, 2), torch.zeros(1, 2))
        except TypeError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert reg.blame(outer).name == "minimax"
    assert reg.blame(_raise_in(parse_spec, {"data": "nope"}, reg)) is None


# -- provenance -------------------------------------------------------------------------------------
def test_a_spec_records_each_components_plugin_and_says_what_is_missing_when_reopened():
    class Objective2(Exploding):
        name = "test-objective-two"

    full = Registry()
    from plugins import gan_objectives, mlp, noise, toys2d
    for module in (noise, toys2d, mlp, gan_objectives):
        full.add_plugin(module, name=module.__name__.split(".")[-1], dist="generative-explorer", version="0.1.0")
    full.add_plugin(plugin(register_samplers=[Flat], register_objectives=[Objective2]), name="fake", dist="genex-fake", version="9.9")
    spec = parse_spec({"data": "test-flat", "objective": "test-objective-two", "metrics": "none"}, registry=full)
    assert spec.provenance["data"] == "fake (genex-fake 9.9)"
    assert spec.provenance["generator"] == "mlp (generative-explorer 0.1.0)"
    without = Registry()
    for module in (noise, toys2d, mlp, gan_objectives):
        without.add_plugin(module, name=module.__name__.split(".")[-1])
    with pytest.raises(SpecError) as info:
        parse_spec(spec.to_dict(), registry=without)
    assert info.value.field == "data"
    assert "sampler 'test-flat' came from fake (genex-fake 9.9), which is not installed" in str(info.value)


def test_a_missing_metric_plugin_is_named_when_a_spec_is_reopened():
    class Probe(Metric):
        name, summary = "test-probe", "a probe"

        def compute(self, real, fake, context):
            return {"probe": 0.0}

    from plugins import gan_objectives, mlp, noise, toys2d
    full, without = Registry(), Registry()
    for module in (noise, toys2d, mlp, gan_objectives):
        full.add_plugin(module, name=module.__name__.split(".")[-1])
        without.add_plugin(module, name=module.__name__.split(".")[-1])
    full.add_plugin(plugin(register_metrics=[Probe]), name="probe", dist="genex-probe", version="2.0")
    spec = parse_spec({"metrics": ["test-probe"]}, registry=full)
    with pytest.raises(SpecError, match=r"probe \(genex-probe 2.0\)"):
        parse_spec(spec.to_dict(), registry=without)


def test_the_builtin_plugin_list_and_the_pyproject_entry_points_are_the_same():
    """A bare checkout registers DEFAULT_PLUGINS; an installed one the entry points: they must agree."""
    import tomllib
    from pathlib import Path

    from explorer.registry import DEFAULT_PLUGINS

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["entry-points"]["generative_explorer"] == DEFAULT_PLUGINS
