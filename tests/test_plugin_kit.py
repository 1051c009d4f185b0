"""explorer.testing, the contract kit for plugin authors: every installed component passes it, it
catches each kind of broken component with a message that says what to fix, and the worked examples
of docs/plugins.md run and pass it."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer import Architecture, Metric, Objective, Param, Sampler, hookimpl
from explorer.registry import Registry
from explorer.testing import (check_architecture, check_component, check_metric, check_objective, check_params,
                              check_plugin, check_sampler, check_training,
                              reference_data)

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = Registry().load_installed()
ALL = [(kind, name) for kind in INSTALLED.components for name in INSTALLED.names(kind)]


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "faces.npz"
    np.savez(path, images=np.random.default_rng(0).integers(0, 256, (12, 20, 20), dtype=np.uint8))
    return path


@pytest.mark.parametrize("kind, name", ALL, ids=[f"{k}:{n}" for k, n in ALL])
def test_every_installed_component_passes_the_contract_kit(kind, name, npz_path):
    params = {"image-folder": {"path": str(npz_path), "size": 16}}.get(name, {})
    info = INSTALLED.get(kind, name)
    if kind == "metric" and not any(info.cls().applies(d) for d in reference_data()):
        # e.g. checkerboard-coverage: try it on the samplers of its own plugin, as check_plugin does
        own = [s.cls() for s in INSTALLED.components["sampler"].values() if s.plugin == info.plugin]
        params = {"data": reference_data() + own}
    check_component(info.cls, **params)


def test_the_kit_covers_the_builtins_of_every_kind():
    builtin = {(k, n) for k, n in ALL if INSTALLED.get(k, n).builtin}
    assert {k for k, _ in builtin} == {"sampler", "architecture", "objective", "metric"} and len(builtin) >= 25


# -- a good component of each kind, and broken variants ---------------------------------------------
class Square(Sampler):
    name, summary = "kit-square", "uniform on the unit square"
    params = (Param("side", "float", 1.0, "side length", low=0.1, high=10.0),)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.shape = (2,)

    def sample(self, n, generator, device):
        return self.config["side"] * torch.rand(n, 2, generator=generator, device=device)

    def log_prob(self, x):
        inside = ((x >= 0) & (x <= self.config["side"])).all(1)
        return torch.where(inside, -2 * torch.log(torch.tensor(self.config["side"])) * torch.ones(len(x)), -torch.inf)


def test_a_good_sampler_passes_and_is_returned():
    assert check_sampler(Square, side=2.0).config == {"side": 2.0}


def broken(base, **methods):
    return type(f"Broken{base.__name__}", (base,), methods)


@pytest.mark.parametrize("methods, message", [
    ({"sample": lambda self, n, g, d: torch.rand(n, 2, device=d)}, "global random stream"),
    ({"sample": lambda self, n, g, d: torch.rand(n, 2, generator=g, device=d, dtype=torch.float64)}, "return float32"),
    ({"sample": lambda self, n, g, d: torch.rand(n, 3, generator=g, device=d)}, "has shape (256, 3), expected (256, 2)"),
    ({"sample": lambda self, n, g, d: torch.rand(n, 2, generator=torch.Generator().manual_seed(7))}, "different seeds drew identical"),
    ({"sample": lambda self, n, g, d: torch.full((n, 2), float("nan"))}, "NaN or infinite"),
    ({"log_prob": lambda self, x: torch.zeros(len(x), 1)}, "one value per row"),
    ({"log_prob": lambda self, x: torch.full((len(x),), 1.0)}, "integrates to"),
    ({"log_prob": lambda self, x: torch.full((len(x),), -torch.inf)}, "-inf at some of its own samples"),
])
def test_the_kit_catches_a_broken_sampler_and_says_what_to_fix(methods, message):
    with pytest.raises(AssertionError, match=re.escape(message)) as info:
        check_sampler(broken(Square, **methods))
    assert "sampler 'kit-square'" in str(info.value)


class Walk(Square):
    """A stateful sampler: each batch continues from where the last one ended (like MCMC chains)."""

    name = "kit-walk"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.position = torch.zeros(2)

    def sample(self, n, generator, device):
        steps = torch.randn(n, 2, generator=generator, device=device)
        out = self.position.to(device) + steps.cumsum(0)
        self.position = out[-1].cpu()
        return out

    log_prob = Sampler.log_prob  # no density

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"].cpu()


def test_the_kit_checks_that_a_stateful_sampler_resumes_where_it_stopped():
    check_sampler(Walk)
    forgetful = broken(Walk, state_dict=lambda self: {})
    with pytest.raises(AssertionError, match="loaded with state_dict\\(\\) draws differently") as info:
        check_sampler(forgetful)
    assert "chain positions, cursors" in str(info.value)
    unsaveable = broken(Walk, state_dict=lambda self: {"position": object()})
    with pytest.raises(AssertionError, match="does not survive a checkpoint"):
        check_sampler(unsaveable)


def test_the_kit_requires_the_base_constructor_to_run():
    def no_super(self, **kw):
        self.shape = (2,)

    with pytest.raises(AssertionError, match=r"call super\(\).__init__\(\*\*kw\)"):
        check_sampler(broken(Square, __init__=no_super))


class Net(nn.Module):
    def __init__(self, d_in, out_shape, detach=False, unused=False, scale=1.0):
        super().__init__()
        self.out_shape, self.detach, self.scale = out_shape, detach, scale
        self.lin = nn.Linear(d_in, int(np.prod(out_shape)))
        self.spare = nn.Linear(3, 3) if unused else None

    def forward(self, x):
        x = x.reshape(len(x), -1)
        return self.lin(x.detach() if self.detach else x).reshape(len(x), *self.out_shape) * self.scale


def unseeded(net: Net) -> Net:
    with torch.no_grad():
        net.lin.bias.add_(float(np.random.rand()))  # numpy's global stream: not reproduced by the spec's seed
    return net


class Linear(Architecture):
    name, summary = "kit-linear", "one linear layer"
    options: dict = {}

    def supports(self, role, in_shape, out_shape):
        return None if len(in_shape) == 1 and len(out_shape) == 1 else "vectors only"

    def build(self, role, in_shape, out_shape):
        return Net(in_shape[0], out_shape, **self.options)


def test_a_good_architecture_passes():
    check_architecture(Linear)


@pytest.mark.parametrize("attrs, message", [
    ({"options": {"detach": True}}, "no gradient reaches the input"),
    ({"options": {"unused": True}}, "get no gradient"),
    ({"options": {"scale": float("inf")}}, "finite float32"),
    ({"build": lambda self, role, i, o: Net(i[0], (o[0] + 1,))}, "output shape"),
    ({"build": lambda self, role, i, o: nn.Linear(i[0], o[0]).requires_grad_(False)}, "no trainable parameters"),
    ({"build": lambda self, role, i, o: unseeded(Net(i[0], o))}, "differ"),
    ({"supports": lambda self, role, i, o: "never"}, "refuses every test shape"),
    ({"supports": lambda self, role, i, o: False}, "return None or a message"),
])
def test_the_kit_catches_a_broken_architecture(attrs, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_architecture(broken(Linear, **attrs))


def test_check_architecture_tries_only_the_shapes_it_is_given():
    check_architecture(broken(Linear, supports=lambda self, r, i, o: None if i == (4,) or o == (4,) else "no"),
                       shapes=[("generator", (3,), (4,)), ("discriminator", (4,), (1,))])


class LogLoss(Objective):
    name, summary = "kit-log-loss", "non-saturating GAN loss"

    def discriminator_loss(self, D, real, fake):
        return F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean(), {"d_real": torch.sigmoid(D(real)).mean().detach()}

    def generator_loss(self, D, real, fake):
        return F.softplus(-D(fake)).mean()


def test_a_good_objective_passes():
    check_objective(LogLoss)


@pytest.mark.parametrize("methods, message", [
    ({"generator_loss": lambda self, D, r, f: F.softplus(-D(f.detach())).mean()}, "no gradient reaches the fake samples"),
    ({"generator_loss": lambda self, D, r, f: (f * float("nan")).mean()}, "generator_loss is nan"),
    ({"generator_loss": lambda self, D, r, f: D(f)}, "must return a scalar tensor"),
    ({"generator_loss": lambda self, D, r, f: (D(f).mean(), {"g_loss": D(f).mean()})}, "is not a free name"),
    ({"generator_loss": lambda self, D, r, f: D(f).mean() + float(np.random.rand())}, "differs between two calls"),
    ({"discriminator_loss": lambda self, D, r, f: torch.tensor(1.0)}, "does not require grad"),
    ({"discriminator_loss": lambda self, D, r, f: (D(r).mean(), {"d_real": torch.ones(3)})}, "finite scalar tensor"),
    # the pipeline seeds self.generator; torch's global stream is shared and not reproduced by the spec's seed
    ({"generator_loss": lambda self, D, r, f: (torch.rand(len(f), 1) * F.softplus(-D(f))).mean()},
     "generator_loss drew from torch's global random stream"),
    ({"explanation": 3}, "explanation must be a string"),
])
def test_the_kit_catches_a_broken_objective(methods, message):
    with pytest.raises(AssertionError, match=re.escape(message)) as info:
        check_objective(broken(LogLoss, **methods))
    assert "objective 'kit-log-loss'" in str(info.value)


def test_an_objective_drawing_from_its_seeded_generator_passes():
    check_objective(broken(LogLoss, generator_loss=lambda self, D, r, f: (
        torch.rand(len(f), 1, generator=self.generator, device=f.device) * F.softplus(-D(f))).mean()))


def test_a_discriminator_only_architecture_passes_the_kit_and_check_plugin_takes_test_shapes():
    critic_only = broken(Linear, name="kit-critic-only",
                         supports=lambda self, role, i, o: None if role == "discriminator" and len(i) == 1 else "discriminators only")
    check_architecture(critic_only)
    plugin = types.SimpleNamespace(register_architectures=hookimpl(lambda register: register(critic_only)))
    check_plugin(plugin, name="critic-only", shapes={"kit-critic-only": [("discriminator", (5,), (1,))]})
    with pytest.raises(AssertionError, match="refuses every test shape"):
        check_plugin(plugin, name="critic-only", shapes={"kit-critic-only": [("generator", (5,), (5,))]})


class Envelope(Square):
    """A rejection sampler on [0, side]^2 seen through propose/envelope (target: uniform)."""

    name = "kit-envelope"

    def envelope(self, x):
        return torch.full(x.shape[:1], 1.25 / self.config["side"] ** 2, device=x.device)

    def propose(self, n, generator, device):
        x = self.sample(n, generator, device)
        y = torch.rand(n, generator=generator, device=device) * self.envelope(x)
        p = torch.full((n,), 1.0 / self.config["side"] ** 2, device=device)
        return x, y, p, y <= p


def test_the_kit_checks_the_capabilities_a_sampler_declares():
    from explorer.capabilities import capabilities

    assert capabilities(Envelope) == ["log_prob", "propose", "envelope"]
    check_sampler(Envelope)
    with pytest.raises(AssertionError, match="the envelope M q"):
        check_sampler(broken(Envelope, envelope=lambda self, x: torch.full(x.shape[:1], 0.5 / self.config["side"] ** 2)))
    with pytest.raises(AssertionError, match="only one of propose"):
        check_sampler(broken(Square, name="kit-half", envelope=lambda self, x: x[:, 0]))
    with pytest.raises(AssertionError, match="accepted must be the boolean mask"):
        check_sampler(broken(Envelope, propose=lambda self, n, g, d: (torch.zeros(n), torch.zeros(n), torch.ones(n), torch.zeros(n))))
    with pytest.raises(AssertionError, match=re.escape("labels() is defined but dataset() returns None")):
        check_sampler(broken(Square, name="kit-labels", labels=lambda self: torch.zeros(3, dtype=torch.long)))


def test_the_kit_honours_genex_torch_threads():
    import subprocess

    code = "import explorer.testing, torch; print(torch.get_num_threads())"
    env = {**__import__("os").environ, "GENEX_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_an_objective_without_discriminator_is_called_with_none():
    class Moments(Objective):
        name, summary, needs_discriminator = "kit-moments", "match the means", False

        def generator_loss(self, D, real, fake):
            assert D is None
            return (real.mean(0) - fake.mean(0)).square().sum()

    check_objective(Moments)


class MeanGap(Metric):
    name, summary = "kit-mean-gap", "distance between the means"
    directions = {"mean_gap": "lower", "gap": "lower", "other": "lower"}

    def compute(self, real, fake, context):
        return {"mean_gap": (real.mean(0) - fake.mean(0)).norm().item()}


def test_a_good_metric_passes_on_every_reference_data_set():
    check_metric(MeanGap)


@pytest.mark.parametrize("compute, message", [
    (lambda self, r, f, c: {"gap": (r.mean(0) - f.mean(0))}, "is a tensor of shape"),
    (lambda self, r, f, c: {"gap": "far"}, "return floats"),
    (lambda self, r, f, c: {"gap": float("inf")}, "is infinite"),
    (lambda self, r, f, c: {"step": 1.0}, "is not allowed"),
    (lambda self, r, f, c: [1.0], "return a non-empty {name: float} dict"),
    (lambda self, r, f, c: {"gap": float("nan")}, "non-finite values"),
    (lambda self, r, f, c: {"gap": torch.rand(()).item()}, "two calls with the same inputs"),
    (lambda self, r, f, c: {"gap": f.mul_(2).mean().item()}, "modified its input"),
    (lambda self, r, f, c: {"gap": 1.0} if f.mean() < 1.0 else {"other": 1.0}, "keys change"),
    (lambda self, r, f, c: {"distance": 1.0}, "directions does not say which way is better for ['distance']"),
])
def test_the_kit_catches_a_broken_metric(compute, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_metric(broken(MeanGap, compute=compute), data=[check_sampler(Square)])


def test_the_kit_catches_log_keys_that_name_undeclared_keys():
    check_metric(broken(MeanGap, log_keys=frozenset({"gap"})), data=[check_sampler(Square)])  # a declared key: fine
    with pytest.raises(AssertionError, match=re.escape("log_keys ['p_value'] names keys that directions does not declare")):
        check_metric(broken(MeanGap, log_keys=frozenset({"p_value"})), data=[check_sampler(Square)])


def test_a_metric_that_applies_to_no_test_data_asks_for_data():
    picky = broken(MeanGap, applies=lambda self, data: False)
    with pytest.raises(AssertionError, match=r"applies\(\) is False for every test data set.*pass data="):
        check_metric(picky)


def test_parameter_declarations_are_checked():
    class NoHelp(Square):
        params = (Param("side", "float", 1.0, ""),)

    with pytest.raises(AssertionError, match="has no help text"):
        check_params(NoHelp)
    bad = Param("side", "float", 1.0, "side", low=0.1, high=10.0)
    object.__setattr__(bad, "default", 50.0)  # a default that escaped its own validation

    class OutOfBounds(Square):
        params = (bad,)

    with pytest.raises(AssertionError, match="the default of 'side' is invalid: .*above the maximum"):
        check_params(OutOfBounds)


def test_check_component_dispatches_on_kind_and_applies_the_registration_checks():
    check_component(Square, side=3.0)
    check_component(MeanGap)
    with pytest.raises(AssertionError, match="registry would reject it: set summary"):
        check_component(broken(Square, summary=""))
    with pytest.raises(AssertionError, match="is not a component"):
        check_component(int)


# -- whole plugins -----------------------------------------------------------------------------------
def test_check_plugin_rejects_load_errors_and_names_taken_by_installed_plugins():
    squatter = types.SimpleNamespace(register_samplers=hookimpl(lambda register: register(broken(Square, name="ring8"))))
    with pytest.raises(AssertionError, match=r"'ring8' is already taken by plugin toys-2d"):
        check_plugin(squatter, name="squatter")
    failing = types.SimpleNamespace(register_samplers=hookimpl(lambda register: 1 / 0))
    with pytest.raises(AssertionError, match="(?s)plugin failed to load:.*ZeroDivisionError"):
        check_plugin(failing, name="failing")


def test_check_training_reports_a_failed_run_with_the_plugin_named():
    class Raises(LogLoss):
        name = "kit-raises"

        def generator_loss(self, D, real, fake):
            raise RuntimeError("kaboom")

    plugin = types.SimpleNamespace(register_objectives=hookimpl(lambda register: register(Raises)))
    registry = Registry().load_installed()
    registry.add_plugin(plugin, name="raiser")
    with pytest.raises(AssertionError, match=r"ended failed: .*objective 'kit-raises' from plugin raiser.*kaboom"):
        check_training({"objective": "kit-raises", "metrics": "none"}, registry, steps=4)


# -- docs/plugins.md -----------------------------------------------------------------------------------
def docs_module() -> types.ModuleType:
    """Execute the python blocks of docs/plugins.md, in order, as the module generative_explorer_example
    (line numbers in tracebacks are those of the Markdown file)."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    module = types.ModuleType("generative_explorer_example")
    module.__file__ = str(ROOT / "docs" / "plugins.md")
    sys.modules[module.__name__] = module
    try:
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, match.start(1))
            exec(compile("\n" * line + match.group(1), module.__file__, "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(module.__name__, None)
        raise
    return module


def test_the_worked_examples_in_the_plugin_guide_run_and_pass_the_kit():
    module = docs_module()
    try:
        registry = check_plugin(module)
        names = {(i.kind, i.name) for kind in registry.components.values() for i in kind.values()
                 if i.cls.__module__ == module.__name__}
        assert names == {("sampler", "laplace"), ("architecture", "maxout"), ("objective", "relativistic"),
                         ("metric", "data-log-likelihood")}
        tests = [fn for name, fn in vars(module).items() if name.startswith("test_")]
        assert len(tests) >= 3
        for fn in tests:  # the guide's own test file
            fn()
    finally:
        sys.modules.pop(module.__name__, None)


def test_every_python_block_in_the_plugin_guide_is_executed():
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    fences = re.findall(r"^```(\w*)$", text, re.M)
    opening = fences[::2]
    assert opening.count("python") >= 6
    assert set(opening) <= {"python", "toml", ""}  # any other python-looking fence would escape the test
