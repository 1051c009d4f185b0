"""examples/generative-explorer-extras, the example third-party package: discovered through its entry
point once installed (`pip install -e examples/generative-explorer-extras`), passes the contract kit,
its components compute what their papers say, and a run made with it names it in its provenance."""

from __future__ import annotations

import importlib.metadata as md
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from explorer import SpecError
from explorer.cli import main as genex
from explorer.components import MetricContext
from explorer.execute import run_foreground
from explorer.registry import Registry, set_registry
from explorer.spec import parse_spec
from explorer.testing import check_plugin, registry_with

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "generative-explorer-extras"
COMPONENTS = {("sampler", "checkerboard"), ("architecture", "resmlp"), ("objective", "lsgan"), ("objective", "hinge-gan"),
              ("metric", "nn-accuracy"), ("metric", "checkerboard-coverage")}

try:
    DIST = md.distribution("generative-explorer-extras")
except md.PackageNotFoundError:
    DIST = None
    sys.path.insert(0, str(PACKAGE))  # still test the components from the source folder

import generative_explorer_extras as extras  # noqa: E402
from generative_explorer_extras.checkerboard import Checkerboard  # noqa: E402
from generative_explorer_extras.metrics import CheckerboardCoverage, NearestNeighbourAccuracy  # noqa: E402
from generative_explorer_extras.objectives import Hinge, LeastSquares  # noqa: E402
from generative_explorer_extras.resmlp import ResidualBlock, ResMLP  # noqa: E402

installed_only = pytest.mark.skipif(DIST is None, reason="not installed: pip install -e examples/generative-explorer-extras")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("GENEX_LOAD_PLUGINS", "GENEX_BLOCK_PLUGINS", "GENEX_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)


@installed_only
def test_the_installed_package_is_discovered_through_its_entry_point(capsys):
    assert str(Path(extras.__file__).resolve()).startswith(str(PACKAGE.resolve()))  # the editable install of this folder
    reg = Registry().load_installed()
    assert not [e for e in reg.errors if e.plugin == "extras"]
    plugin = reg.plugins["extras"]
    assert (plugin.dist, plugin.version, plugin.module) == ("generative-explorer-extras", "0.1.0", "generative_explorer_extras")
    assert set(plugin.components) == COMPONENTS
    assert reg.get("objective", "lsgan").source == "extras (generative-explorer-extras 0.1.0)"
    set_registry(reg)
    try:
        assert genex(["plugins"]) == 0
    finally:
        set_registry(None)
    assert "checkerboard" in capsys.readouterr().out.split("architectures:")[0]


@installed_only
def test_the_switches_leave_the_package_out(monkeypatch):
    monkeypatch.setenv("GENEX_LOAD_PLUGINS", "")
    assert "lsgan" not in Registry().load_installed().components["objective"]
    monkeypatch.setenv("GENEX_LOAD_PLUGINS", "generative-explorer-extras")
    assert "lsgan" in Registry().load_installed().components["objective"]
    monkeypatch.setenv("GENEX_BLOCK_PLUGINS", "extras")
    reg = Registry().load_installed()
    assert "checkerboard" not in reg.components["sampler"] and reg.skipped["extras"] == "blocked by GENEX_BLOCK_PLUGINS"


def test_every_component_passes_the_contract_kit():
    registry = check_plugin(extras, name="extras")
    assert COMPONENTS <= {(k, n) for k in registry.components for n in registry.components[k]}


# -- the components do what their papers say -----------------------------------------------------------
class Table(nn.Module):
    """D on a discrete support {0, 1, ...}: one free score per point."""

    def __init__(self, scores):
        super().__init__()
        self.scores = nn.Parameter(torch.tensor(scores, dtype=torch.float32))

    def forward(self, x):
        return self.scores[x.reshape(-1).long()].reshape(-1, 1)


def test_lsgan_losses_follow_mao_et_al_and_d_converges_to_the_optimum():
    obj = LeastSquares()  # a = 0, b = 1, c = 1
    D = Table([1.0, 0.0])
    real, fake = torch.zeros(4, 1), torch.ones(4, 1)
    d_loss, extras_ = obj.discriminator_loss(D, real, fake)
    assert d_loss.item() == pytest.approx(0.0) and extras_["d_real"].item() == 1.0   # D(x) = b, D(G(z)) = a
    assert obj.generator_loss(D, real, fake)[0].item() == pytest.approx(0.5)          # 1/2 (0 - c)^2
    # Eq. 4: D*(x) = (b p_data + a p_g) / (p_data + p_g). Data puts 0.8 / 0.2 on {0, 1}, G 0.3 / 0.7.
    for a, b in ((0.0, 1.0), (-1.0, 1.0)):
        obj = LeastSquares(a=a, b=b, c=0.0)
        D = Table([0.0, 0.0])
        real = torch.tensor([0.0] * 8 + [1.0] * 2).reshape(-1, 1)
        fake = torch.tensor([0.0] * 3 + [1.0] * 7).reshape(-1, 1)
        opt = torch.optim.SGD(D.parameters(), lr=0.5)
        for _ in range(300):
            opt.zero_grad()
            obj.discriminator_loss(D, real, fake)[0].backward()
            opt.step()
        p_d, p_g = torch.tensor([0.8, 0.2]), torch.tensor([0.3, 0.7])
        assert torch.allclose(D.scores.detach(), (b * p_d + a * p_g) / (p_d + p_g), atol=1e-4)
        # The heatmap rescales D* to p_data / (p_data + p_g), the same scale as a log-loss GAN's D*.
        crit = obj.critic(D, torch.tensor([[0.0], [1.0]]), real, fake)
        assert torch.allclose(crit, p_d / (p_d + p_g), atol=1e-4)


def test_lsgan_refuses_equal_targets_naming_the_field():
    reg = registry_with(extras, "extras")
    with pytest.raises(SpecError, match=r"^objective\.b: the real target b must differ"):
        reg.create("objective", "lsgan", {"a": 1.0, "b": 1.0}, where="objective")


def test_hinge_losses_follow_the_geometric_gan():
    D = Table([2.0, 0.5, -2.0, 0.0])
    real, fake = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [3.0]])
    d_loss, _ = Hinge().discriminator_loss(D, real, fake)
    assert d_loss.item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)   # mean relu(1 - D(x)) + mean relu(1 + D(G(z)))
    assert Hinge().generator_loss(D, real, fake)[0].item() == pytest.approx(1.0)   # -mean D(G(z))
    assert Hinge(margin=3.0).discriminator_loss(D, real, fake)[0].item() == pytest.approx((1 + 2.5) / 2 + (1 + 3) / 2)


@pytest.mark.parametrize("squares, dark", [(4, 8), (5, 13), (2, 2)])
def test_the_checkerboard_samples_only_dark_squares_evenly_with_its_exact_density(squares, dark):
    board = Checkerboard(squares=squares, size=2.0)
    assert len(board.dark) == dark
    x = board.sample(20_000, torch.Generator().manual_seed(0), "cpu")
    cells = board.cell_index(x)
    assert (cells >= 0).all()
    counts = torch.bincount(cells, minlength=dark).double()
    expected = len(x) / dark
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()      # uniform over the dark squares
    w = 4.0 / squares
    lp = board.log_prob(x)
    assert torch.allclose(lp, torch.full_like(lp, -math.log(dark * w * w)))
    light = torch.tensor([[-2.0 + 1.5 * w, -2.0 + 0.5 * w]])               # square (1, 0) is light
    assert board.log_prob(light).item() == -math.inf and board.cell_index(light).item() == -1
    assert board.log_prob(torch.tensor([[2.5, 0.0]])).item() == -math.inf   # off the board


def test_resmlp_is_built_of_residual_blocks_and_honours_the_output_activation():
    arch = ResMLP(blocks=3, width=16, output_activation="tanh")
    g = arch.build("generator", (4,), (1, 8, 8))
    assert sum(isinstance(m, ResidualBlock) for m in g.modules()) == 3
    y = g(10 * torch.randn(5, 4))
    assert y.shape == (5, 1, 8, 8) and y.abs().max() <= 1
    d = arch.build("discriminator", (1, 8, 8), (1,))
    assert d(torch.randn(5, 1, 8, 8)).shape == (5, 1)
    assert not any(isinstance(m, nn.Tanh) for m in d.modules())          # D outputs raw scores
    block = ResidualBlock(8, "relu", norm=False)
    nn.init.zeros_(block.branch[-1].weight), nn.init.zeros_(block.branch[-1].bias)
    x = torch.randn(3, 8)
    assert torch.equal(block(x), x)                                       # x + F(x): identity when F = 0


def test_nn_accuracy_is_a_half_for_one_distribution_one_when_separable_and_flags_copies():
    gen = torch.Generator().manual_seed(0)
    real, same = torch.randn(1000, 2, generator=gen), torch.randn(1000, 2, generator=gen)
    ctx = MetricContext(data=Checkerboard(), device=torch.device("cpu"))
    metric = NearestNeighbourAccuracy()
    assert metric.compute(real, same, ctx)["nn_accuracy"] == pytest.approx(0.5, abs=0.04)
    assert metric.compute(real, same + 10, ctx)["nn_accuracy"] == 1.0
    copied = metric.compute(real, real.clone(), ctx)
    assert copied["nn_accuracy_real"] == 0.0 and copied["nn_accuracy_fake"] == 0.0     # every point's twin is the other label


def test_checkerboard_coverage_counts_dark_squares_and_misplaced_samples():
    board = Checkerboard()
    ctx = MetricContext(data=board, device=torch.device("cpu"))
    metric = CheckerboardCoverage()
    assert metric.applies(board) and not metric.applies(Registry().load_installed().create("sampler", "ring8"))
    real = board.sample(2000, torch.Generator().manual_seed(0), "cpu")
    assert metric.compute(real, real, ctx) == {"dark_fraction": 1.0, "squares_covered": 1.0}
    collapsed = torch.full((2000, 2), -1.5)                               # all in the lower-left dark square
    assert metric.compute(real, collapsed, ctx) == {"dark_fraction": 1.0, "squares_covered": 1 / 8}
    light = torch.full((2000, 2), -1.5) + torch.tensor([1.0, 0.0])        # all in a light square
    assert metric.compute(real, light, ctx) == {"dark_fraction": 0.0, "squares_covered": 0.0}


# -- a run with the package, and the same run reopened without it ---------------------------------------
def test_a_run_with_every_extras_component_records_the_plugin_and_reopens_only_with_it(tmp_path, monkeypatch):
    reg = registry_with(extras, "extras")
    spec = parse_spec({"data": "checkerboard", "generator": {"name": "resmlp", "blocks": 1, "width": 32},
                       "discriminator": {"name": "resmlp", "blocks": 1, "width": 32}, "objective": "lsgan",
                       "metrics": ["checkerboard-coverage", "nn-accuracy"], "steps": 20, "batch_size": 64,
                       "log_every": 10, "snapshot_every": 20, "metric_every": 20, "device": "cpu"}, registry=reg)
    store, state = run_foreground(spec, root=tmp_path, registry=reg)
    assert state.view().status == "finished", state.view().error
    assert {"squares_covered", "nn_accuracy"} <= set(store.read_metrics()[-1])
    saved = store.read_spec()
    if DIST is not None:
        assert saved["provenance"]["data"] == "extras (generative-explorer-extras 0.1.0)"
        monkeypatch.setenv("GENEX_BLOCK_PLUGINS", "extras")
        with pytest.raises(SpecError, match=r"sampler 'checkerboard' came from extras \(generative-explorer-extras 0.1.0\), "
                                            r"which is not loaded here \(blocked by GENEX_BLOCK_PLUGINS\)"):
            parse_spec(saved, registry=Registry().load_installed())


# -- the same treatment as the built-ins: the example package's own declarations drive every page ------
def test_the_objectives_own_explanation_shows_on_the_train_page():
    from streamlit.testing.v1 import AppTest

    reg = registry_with(extras, "extras", Registry().load_installed())
    set_registry(reg)
    try:
        at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=90)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        objective = next(w for w in at.sidebar.selectbox if w.label == "Objective")
        assert "lsgan" in objective.options
        objective.set_value("lsgan").run()
        assert not at.exception, [e.value for e in at.exception]
        texts = [m.value for m in at.markdown]
        assert LeastSquares.explanation in texts, texts  # the component's text, not a host table's
        assert any(LeastSquares.formula in x.value for x in at.latex), [x.value for x in at.latex]
    finally:
        set_registry(None)


def test_the_metrics_declared_direction_picks_best_in_a_comparison():
    from explorer import compare

    reg = registry_with(extras, "extras", Registry().load_installed())
    directions = compare.metric_directions({"metrics": ["nn-accuracy", "checkerboard-coverage"]}, reg)
    assert directions["nn_accuracy"] == "lower" and directions["squares_covered"] == "higher"
    records = [{"step": s, "kind": "metric", "nn_accuracy": a, "nn_accuracy_real": r, "squares_covered": c}
               for s, a, r, c in ((100, 0.93, 0.9, 0.25), (200, 0.58, 0.5, 0.875), (300, 0.66, 0.6, 0.75))]
    final, best = compare.final_and_best(records, directions)
    assert best == {"nn_accuracy": 0.58, "squares_covered": 0.875}  # nn_accuracy_real is a diagnostic: no best
    assert final["nn_accuracy"] == 0.66


def test_the_2d_view_draws_a_third_party_critic_on_the_scale_its_objective_declares():
    """No built-in privilege: the hinge objective declares its heatmap's title and range (D's score in
    margins, -2..2), and the view colours it by that, as it does D's probability for the built-ins."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from explorer.registry import set_registry
    from explorer.snapshots import Snapshot
    from explorer.ui import explain, views

    set_registry(registry_with(extras, "extras"))
    try:
        hinge = explain.critic_of({"objective": {"name": "hinge-gan"}, "discriminator": {"name": "mlp"}})
        builtin = explain.critic_of({"objective": "nonsaturating", "discriminator": "mlp"})
        witness = explain.critic_of({"objective": {"name": "mmd"}})
        missing = explain.critic_of({"objective": "not-installed-anywhere"})
    finally:
        set_registry(None)
    assert hinge == explain.Critic("D(x) / m", (-2.0, 2.0))
    assert builtin == explain.Critic("D(x)", (0.0, 1.0))
    assert witness == explain.Critic("witness", None)
    assert missing == explain.Critic("critic", None)

    grid = np.linspace(-2, 2, 40)
    scores = np.tile(np.linspace(-2, 2, 40), (40, 1))  # from the fake margin's far side to the real one's
    rng = np.random.default_rng(0)
    snap = Snapshot(1, "2d", rng.normal(size=(100, 2)), rng.normal(size=(100, 2)),
                    {"grid_x": grid, "grid_y": grid, "critic": scores})
    fig = views.view_2d(snap, critic=hinge)
    legend = [layer["encoding"]["color"] for layer in fig.spec()["layer"]
              if layer.get("encoding", {}).get("color", {}).get("field") == "v"][0]
    assert legend["title"] == "D(x) / m" and legend["scale"]["domain"] == [-2.0, 0.0, 2.0]
    url = fig.datasets["heat"]["url"][0]
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert img[20, 0, 2] < img[20, 0, 0] and img[20, -1, 2] > img[20, -1, 0]  # fake side orange, real side blue
    assert (img[20, 19:21] > 225).all()  # the decision boundary, D(x) = 0, is white
