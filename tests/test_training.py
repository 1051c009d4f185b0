"""The Trainer: reproducibility, the NaN guard, controls, and that watching never changes learning."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch

from explorer import Architecture, Metric, Objective, Sampler, hookimpl
from explorer.execute import execute, run_foreground
from explorer.pipeline import Pipeline
from explorer.registry import get_registry
from explorer.runs import RunStore
from explorer.spec import parse_spec
from explorer.training import RunState, Trainer, TrainerConfig

FAST = {"data": "ring8", "objective": "nonsaturating", "steps": 60, "batch_size": 64, "log_every": 10,
        "metrics": "none", "snapshot_every": 30, "checkpoint_every": 30, "snapshot_size": 64,
        "generator": {"name": "mlp", "width": 32}, "discriminator": {"name": "mlp", "width": 32}, "device": "cpu"}


def losses(records):
    return [(r["step"], r["d_loss"], r["g_loss"]) for r in records if "g_loss" in r]


def train(raw, config=None):
    trainer = Trainer(Pipeline(parse_spec(raw)), config=config or TrainerConfig(snapshot_hz=0))
    status = trainer.run()
    return trainer, status


def test_same_spec_and_seed_give_identical_metrics_run_after_run():
    a, _ = train(FAST)
    b, _ = train(FAST)
    assert losses(a.state.view().history) == losses(b.state.view().history)
    assert len(losses(a.state.view().history)) == 6


def test_a_different_seed_gives_different_losses():
    a, _ = train(FAST)
    b, _ = train({**FAST, "seed": 1})
    assert losses(a.state.view().history) != losses(b.state.view().history)


def test_live_snapshots_never_change_what_the_run_learns():
    """Views use their own fixed batches and frozen batch-norm statistics."""
    raw = {**FAST, "generator": {"name": "mlp", "width": 32, "norm": "batch"}}
    quiet, _ = train(raw, TrainerConfig(snapshot_hz=0))
    watched, _ = train(raw, TrainerConfig(snapshot_hz=1000))
    assert losses(quiet.state.view().history) == losses(watched.state.view().history)


def test_k_d_discriminator_steps_per_generator_step():
    calls = {"d": 0}
    trainer = Trainer(Pipeline(parse_spec({**FAST, "k_d": 3, "steps": 5})), config=TrainerConfig(snapshot_hz=0))
    step = trainer.p.opt_d.step

    def counting_step(*a, **k):
        calls["d"] += 1
        return step(*a, **k)

    trainer.p.opt_d.step = counting_step
    trainer.run()
    assert calls["d"] == 15


class ExplodingObjective(Objective):
    """Non-saturating loss that turns to NaN at training step 23 (counted by discriminator steps, k_d = 1)."""

    name = "explodes-at-23"
    summary = "test objective"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0

    def discriminator_loss(self, D, real, fake):
        self.calls += 1
        return torch.nn.functional.softplus(-D(real)).mean() + torch.nn.functional.softplus(D(fake)).mean()

    def generator_loss(self, D, real, fake):
        loss = torch.nn.functional.softplus(-D(fake)).mean()
        return loss * float("nan") if self.calls >= 23 else loss


class RaisingObjective(ExplodingObjective):
    name = "raises-at-23"

    def generator_loss(self, D, real, fake):
        if self.calls >= 23:
            raise RuntimeError("boom from a plugin")
        return torch.nn.functional.softplus(-D(fake)).mean()


class _TestPlugin:
    @hookimpl
    def register_objectives(self, register):
        register(ExplodingObjective)
        register(RaisingObjective)


@pytest.fixture
def registry():
    reg = get_registry()
    reg.add_plugin(_TestPlugin(), name="test-objectives")
    yield reg
    reg.remove_plugin("test-objectives")


def test_nan_loss_fails_the_run_naming_the_step_and_keeps_the_last_good_files(registry, tmp_path):
    spec = parse_spec({**FAST, "objective": "explodes-at-23", "steps": 100, "checkpoint_every": 5, "snapshot_every": 5}, registry)
    store, state = run_foreground(spec, out=tmp_path / "run", registry=registry, config=TrainerConfig(snapshot_hz=0))
    view = state.view()
    assert view.status == "failed"
    assert "non-finite g_loss" in view.error and "step 23" in view.error
    status = store.read_status()
    assert status["status"] == "failed" and "step 23" in status["error"]
    # The checkpoint and snapshots from before the failure stay readable; nothing after it was saved.
    ckpt = store.load_checkpoint()
    assert ckpt["step"] == 20
    assert all(torch.isfinite(v).all() for v in ckpt["G"].values())
    assert store.snapshot_steps() == [5, 10, 15, 20]
    assert all(np.isfinite(store.load_samples(s)).all() for s in store.snapshot_steps())
    assert [r["step"] for r in store.read_metrics() if "g_loss" in r][-1] == 20


def test_a_component_that_raises_fails_only_its_run_and_names_the_plugin(registry, tmp_path):
    spec = parse_spec({**FAST, "objective": "raises-at-23"}, registry)
    store, state = run_foreground(spec, out=tmp_path / "run", registry=registry)
    err = state.view().error
    assert state.view().status == "failed"
    assert "boom from a plugin" in err and "test-objectives" in err and "raises-at-23" in err
    assert "step 23:" in err  # the step that raised, counted as the NaN guard counts it
    # The next run in the same process is unaffected.
    _, ok = run_foreground(parse_spec(FAST, registry), out=tmp_path / "ok", registry=registry)
    assert ok.view().status == "finished"


def test_pause_step_resume_and_stop_controls(tmp_path):
    spec = parse_spec({**FAST, "steps": 100_000})
    state = RunState(spec.steps)
    holder = {}
    store = RunStore.create(spec.to_dict(), out=tmp_path / "run")
    t = threading.Thread(target=execute, args=(store, spec, state), kwargs={"on_trainer": lambda tr: holder.setdefault("t", tr)})
    t.start()
    deadline = time.time() + 30
    while ("t" not in holder or state.view().step < 20) and time.time() < deadline:
        time.sleep(0.01)
    trainer = holder["t"]
    trainer.pause()
    time.sleep(0.3)
    paused_at = trainer.p.step
    time.sleep(0.3)
    assert trainer.p.step == paused_at, "a paused run must not advance"
    trainer.step_once(5)
    deadline = time.time() + 10
    while trainer.p.step < paused_at + 5 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert trainer.p.step == paused_at + 5
    trainer.resume()
    time.sleep(0.3)
    assert trainer.p.step > paused_at + 5
    trainer.stop()
    t.join(10)
    assert not t.is_alive()
    assert store.read_status()["status"] == "stopped"
    assert store.load_checkpoint()["step"] == trainer.p.step


@pytest.mark.parametrize("data", ["ring8", {"name": "metropolis-hastings", "chains": 16, "burn_in": 20}],
                         ids=["stateless-data", "markov-chain-data"])
def test_resuming_from_a_checkpoint_continues_the_same_trajectory(tmp_path, data):
    # A Metropolis-Hastings data sampler carries its chains between batches: the checkpoint must
    # carry them too, or the resumed run restarts its chains (burn-in again) and drifts away.
    spec = {**FAST, "data": data}
    full, _ = train({**spec, "steps": 60})
    half = Trainer(Pipeline(parse_spec({**spec, "steps": 30})), config=TrainerConfig(snapshot_hz=0))
    half.run()
    state = half.p.state_dict()
    buf = tmp_path / "c.pt"
    torch.save(state, buf)
    loaded = torch.load(buf, weights_only=True)
    rest = Pipeline(parse_spec({**spec, "steps": 60}))
    rest.load_state_dict(loaded)
    trainer = Trainer(rest, config=TrainerConfig(snapshot_hz=0))
    trainer.run()
    tail_full = [r for r in losses(full.state.view().history) if r[0] > 30]
    tail_resumed = losses(trainer.state.view().history)
    assert [r[0] for r in tail_resumed] == [40, 50, 60]
    np.testing.assert_allclose([r[1:] for r in tail_resumed], [r[1:] for r in tail_full], rtol=1e-5)


def test_metrics_are_logged_on_their_schedule(tmp_path):
    spec = parse_spec({**FAST, "metrics": ["energy-distance"], "metric_every": 30})
    trainer = Trainer(Pipeline(spec), config=TrainerConfig(snapshot_hz=0))
    trainer.run()
    steps = [r["step"] for r in trainer.state.view().history if "energy_distance" in r]
    assert steps == [30, 60]


def test_cosine_schedule_anneals_the_learning_rate_to_zero_over_the_run():
    spec = parse_spec({**FAST, "steps": 40, "optim": {"generator": {"lr": 1e-2, "schedule": "cosine"}}})
    trainer = Trainer(Pipeline(spec), config=TrainerConfig(snapshot_hz=0))
    seen = {}
    trainer.add_callback("step_end", lambda tr: seen.setdefault(tr.p.step, tr.p.opt_g.param_groups[0]["lr"]))
    trainer.run()
    assert seen[1] == pytest.approx(1e-2)  # step 1 trains at the full lr (t = 0)
    assert seen[21] == pytest.approx(0.5e-2, rel=1e-6)  # half-way: half the lr
    assert seen[40] < 1e-4
    assert trainer.p.opt_d.param_groups[0]["lr"] == pytest.approx(1e-3)  # the discriminator keeps its constant lr


class RandomisedObjective(ExplodingObjective):
    """A loss that draws random numbers (like WGAN-GP's interpolates) from its seeded generator."""

    name = "randomised"

    def generator_loss(self, D, real, fake):
        w = torch.rand(len(fake), 1, generator=self.generator, device=fake.device)
        return (w * torch.nn.functional.softplus(-D(fake))).mean()


class _RandomPlugin:
    @hookimpl
    def register_objectives(self, register):
        register(RandomisedObjective)


def test_an_objective_drawing_random_numbers_reproduces_from_the_seed():
    reg = get_registry()
    reg.add_plugin(_RandomPlugin(), name="test-random-objective")
    try:
        runs = [train({**FAST, "objective": "randomised", "seed": seed})[0] for seed in (0, 0, 1)]
    finally:
        reg.remove_plugin("test-random-objective")
    same_a, same_b, other = (losses(t.state.view().history) for t in runs)
    assert same_a == same_b
    assert same_a != other


class SpectralMLP(Architecture):
    """A discriminator whose layers carry state updated in ``forward``: spectral norm's power iteration
    (Miyato et al. 2018) advances ``_u`` on every call in training mode, and dropout draws from torch's
    global random stream."""

    name = "sn-mlp"
    summary = "test architecture: spectrally normalised MLP with dropout"

    def supports(self, role, in_shape, out_shape):
        return None if role == "discriminator" else "sn-mlp builds discriminators only"

    def build(self, role, in_shape, out_shape):
        sn = torch.nn.utils.parametrizations.spectral_norm
        return torch.nn.Sequential(torch.nn.Flatten(), sn(torch.nn.Linear(math.prod(in_shape), 32)), torch.nn.LeakyReLU(0.2),
                                   torch.nn.Dropout(0.1), sn(torch.nn.Linear(32, 1)))


class _SpectralPlugin:
    @hookimpl
    def register_architectures(self, register):
        register(SpectralMLP)

    @hookimpl
    def register_objectives(self, register):
        register(RandomisedObjective)


@pytest.fixture
def spectral():
    reg = get_registry()
    reg.add_plugin(_SpectralPlugin(), name="test-spectral")
    yield reg
    reg.remove_plugin("test-spectral")


def _final_state(trainer):
    p = trainer.p
    return {**{f"G.{k}": v for k, v in p.G.state_dict().items()}, **{f"D.{k}": v for k, v in p.D.state_dict().items()},
            "samples": p.G(p.view_z).detach()}


def test_a_spectral_norm_discriminator_learns_the_same_for_any_snapshot_schedule(spectral):
    """Watching never changes learning: spectral norm's power-iteration vectors, dropout's global stream
    and the objective's own stream are left as they were by every view, however often it is taken."""
    raw = {**FAST, "steps": 100, "objective": "randomised", "discriminator": "sn-mlp", "checkpoint_every": 0,
           "metrics": ["energy-distance", "mode-coverage"], "metric_every": 20}
    a, status_a = train({**raw, "snapshot_every": 7})
    b, status_b = train({**raw, "snapshot_every": 100, "metric_every": 50})
    c, _ = train({**raw, "snapshot_every": 100}, TrainerConfig(snapshot_hz=10_000, arrows=True))  # the app's live views
    assert status_a == status_b == "finished"
    final_a, final_b, final_c = _final_state(a), _final_state(b), _final_state(c)
    assert any("_u" in k for k in final_a)  # the power-iteration vector is there to be disturbed
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key
        assert torch.equal(final_a[key], final_c[key]), key
    assert losses(b.state.view().history) == losses(c.state.view().history)  # same log schedule, same numbers


def test_a_view_leaves_every_module_random_stream_and_sampler_as_it_was(spectral):
    from explorer.snapshots import take_snapshot

    pipe = Pipeline(parse_spec({**FAST, "objective": "randomised", "discriminator": "sn-mlp",
                                "data": {"name": "metropolis-hastings", "chains": 16, "burn_in": 20}}))
    before = {k: v.clone() for k, v in pipe.D.state_dict().items()}
    global_rng, objective_rng = torch.get_rng_state(), pipe.objective.generator.get_state()
    chains = pipe.data.state_dict()
    take_snapshot(pipe, 0, arrows=True)
    for k, v in pipe.D.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), global_rng)
    assert torch.equal(pipe.objective.generator.get_state(), objective_rng)
    assert all(torch.equal(v, chains[k]) for k, v in pipe.data.state_dict().items() if isinstance(v, torch.Tensor))
    assert pipe.D.training and pipe.G.training


@pytest.mark.parametrize("objective", ["explodes-at-23", "raises-at-23"])
def test_an_exception_and_a_nan_at_the_same_call_report_the_same_step_in_the_error_and_the_status(registry, tmp_path, objective):
    spec = parse_spec({**FAST, "objective": objective, "checkpoint_every": 0, "snapshot_every": 1000}, registry)
    store, state = run_foreground(spec, out=tmp_path / "run", registry=registry)
    view, status = state.view(), store.read_status()
    assert view.status == status["status"] == "failed"
    assert "step 23" in view.error and "step 22" not in view.error and "step 30" not in view.error
    assert view.step == status["step"] == 23


class RaisingMetric(Metric):
    name = "raises-always"
    summary = "test metric that raises"

    def compute(self, real, fake, context):
        raise ValueError("metric boom")


class _MetricPlugin:
    @hookimpl
    def register_metrics(self, register):
        register(RaisingMetric)


def test_a_metric_that_raises_fails_only_that_metric_naming_its_plugin(tmp_path):
    reg = get_registry()
    reg.add_plugin(_MetricPlugin(), name="test-bad-metric")
    try:
        spec = parse_spec({**FAST, "metrics": ["raises-always", "energy-distance"], "metric_every": 20}, reg)
        store, state = run_foreground(spec, out=tmp_path / "run", registry=reg)
    finally:
        reg.remove_plugin("test-bad-metric")
    view = state.view()
    assert view.status == "finished"
    assert "raises-always" in view.error and "test-bad-metric" in view.error and "metric boom" in view.error
    metric_records = [r for r in store.read_metrics() if r.get("kind") == "metric"]
    assert [r["step"] for r in metric_records] == [20, 40, 60]
    assert all("energy_distance" in r for r in metric_records)
    assert "raises-always" in metric_records[0]["errors"] and "errors" not in metric_records[1]  # asked once only


def test_records_declare_their_kind_and_old_records_are_still_told_apart():
    from explorer.records import record_kind

    trainer, _ = train({**FAST, "metrics": ["energy-distance"], "metric_every": 30})
    kinds = {record_kind(r) for r in trainer.state.view().history}
    assert kinds == {"loss", "metric"}
    assert all(r["kind"] in ("loss", "metric") for r in trainer.state.view().history)
    assert record_kind({"step": 1, "g_loss": 0.7}) == "loss"
    assert record_kind({"step": 1, "d_loss": 0.7, "mmd2": 0.1}) == "loss"
    assert record_kind({"step": 1, "energy_distance": 0.1}) == "metric"


def test_resuming_never_hides_an_optimiser_state_that_does_not_fit(tmp_path):
    from explorer.errors import CheckpointError

    first, _ = train({**FAST, "steps": 10})
    state = first.p.state_dict()
    other = Pipeline(parse_spec({**FAST, "steps": 20, "optim": {"generator": {"name": "sgd"}}}))
    state["opt_g"]["param_groups"][0]["params"] = [0]  # an optimiser state for another set of parameters
    with pytest.raises(CheckpointError, match="generator's optimiser state"):
        other.load_state_dict(state)
    other.load_state_dict(state, strict=False)
    assert other.resume_notes and "generator's optimiser" in other.resume_notes[0]
    assert other.step == 10


class PickySampler(Sampler):
    name = "picky"
    summary = "test sampler whose saved state never loads"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.shape = (2,)

    def sample(self, n, generator, device):
        return torch.randn(n, 2, generator=generator, device=device)

    def state_dict(self):
        return {"position": torch.zeros(2)}

    def load_state_dict(self, state):
        raise ValueError("wrong shape")


class _PickyPlugin:
    @hookimpl
    def register_samplers(self, register):
        register(PickySampler)


def test_resuming_never_hides_a_sampler_state_that_does_not_load():
    from explorer.errors import CheckpointError

    reg = get_registry()
    reg.add_plugin(_PickyPlugin(), name="test-picky")
    try:
        spec = parse_spec({**FAST, "data": "picky", "steps": 10}, reg)
        state = Pipeline(spec).state_dict()
        with pytest.raises(CheckpointError, match="data sampler 'picky' refused its saved state"):
            Pipeline(spec).load_state_dict(state)
    finally:
        reg.remove_plugin("test-picky")
