"""The generator's moving average (spec ``ema``; Yazici et al. 2019) and PacGAN's packing (spec ``pack``;
Lin et al. 2018): the average's arithmetic, checkpoints and bit-exact resume with it, the views' use of it,
the packed discriminator's shapes with every architecture and GAN objective, and the spec's messages."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from explorer.errors import SpecError
from explorer.pipeline import PackedDiscriminator, Pipeline
from explorer.snapshots import take_snapshot
from explorer.spec import parse_spec, parse_text
from explorer.training import Trainer, TrainerConfig

TINY = {"data": "grid25", "generator": {"name": "mlp", "depth": 1, "width": 8},
        "discriminator": {"name": "mlp", "depth": 1, "width": 8}, "batch_size": 16, "metrics": "none",
        "device": "cpu", "log_every": 1, "snapshot_every": 1000, "checkpoint_every": 0, "snapshot_size": 64}


def _spec(**fields):
    return parse_spec({**TINY, **fields})


def _train(pipe: Pipeline, until: int | None = None, on_step=None) -> Trainer:
    tr = Trainer(pipe, config=TrainerConfig(snapshot_hz=0, arrows=True))

    def step_end(t: Trainer) -> None:
        if on_step is not None:
            on_step(pipe)
        if until is not None and pipe.step >= until:
            t.stop()

    tr.add_callback("step_end", step_end)
    tr.run()
    return tr


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in module.state_dict().values()]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_params(a), _params(b)))


# -- the moving average ----------------------------------------------------------------------------------------
def test_ema_equals_the_closed_form_after_k_updates():
    decay, start, steps = 0.8, 3, 9
    pipe = Pipeline(_spec(steps=steps, ema={"decay": decay, "start": start}))
    history: list[list[torch.Tensor]] = []
    ema_at_start: list[list[torch.Tensor]] = []

    def record(p: Pipeline) -> None:
        history.append([q.detach().clone() for q in p.G.parameters()])
        if p.step <= start:  # before (and at) the start the average is G itself
            assert all(torch.equal(a, b) for a, b in zip(p.G_ema.parameters(), p.G.parameters()))
        if p.step == start:
            ema_at_start.append(history[-1])

    _train(pipe, on_step=record)
    k = steps - start
    for i, got in enumerate(pipe.G_ema.parameters()):
        theta = [h[i].double() for h in history]  # theta[t - 1] = G's weights after step t
        want = decay**k * theta[start - 1] + sum((1 - decay) * decay ** (k - j) * theta[start - 1 + j] for j in range(1, k + 1))
        assert torch.allclose(got.double(), want, atol=1e-6, rtol=1e-5)
        assert not torch.equal(got, theta[-1].float())  # it is an average, not the last iterate
    assert not any(q.requires_grad for q in pipe.G_ema.parameters())


def test_without_ema_there_is_no_average_and_views_use_the_raw_generator():
    pipe = Pipeline(_spec(steps=3))
    assert pipe.G_ema is None and pipe.G_eval is pipe.G
    _train(pipe)
    snap = take_snapshot(pipe, pipe.step)
    assert "fake_raw" not in snap.extras
    assert pipe.state_dict()["G_ema"] is None


def test_snapshots_and_metrics_use_the_averaged_generator_and_keep_the_raw_one_beside_it():
    pipe = Pipeline(_spec(steps=30, ema={"decay": 0.9, "start": 5}, metrics=["mode-coverage"], metric_every=30))
    tr = _train(pipe)
    snap = take_snapshot(pipe, pipe.step)
    with torch.no_grad():
        ema, raw = pipe.G_ema(pipe.view_z).numpy(), pipe.G(pipe.view_z).numpy()
    assert np.array_equal(snap.fake, ema) and np.array_equal(snap.extras["fake_raw"], raw)
    assert not np.array_equal(ema, raw)
    assert snap.extras["manifold_raw"].shape == snap.extras["manifold"].shape
    assert "modes" in tr.last_metrics
    # what a run folder saves reads back with the raw samples
    from explorer.runs import check_snapshot
    from explorer.snapshots import snapshot_arrays

    back = check_snapshot(snapshot_arrays(snap))
    assert np.array_equal(back["extra_fake_raw"], raw)


def test_watching_never_changes_learning_with_ema_and_pack():
    spec = _spec(steps=12, ema={"decay": 0.9, "start": 3}, pack=4, objective="minimax")
    quiet, watched = Pipeline(spec), Pipeline(spec)
    _train(quiet)
    _train(watched, on_step=lambda p: take_snapshot(p, p.step))
    for a, b in ((quiet.G, watched.G), (quiet.G_ema, watched.G_ema), (quiet.D, watched.D)):
        assert _same(a, b)
    assert torch.equal(quiet.noise_gen.get_state(), watched.noise_gen.get_state())


@pytest.mark.parametrize("pack", [1, 2])
def test_stop_and_resume_equals_never_stopped_with_ema(pack):
    spec = _spec(steps=20, ema={"decay": 0.8, "start": 4}, pack=pack)
    whole = Pipeline(spec)
    _train(whole)
    first = Pipeline(spec)
    _train(first, until=9)
    assert first.step == 9
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)  # state dicts and plain data only
    assert state["G_ema"] is not None
    resumed = Pipeline(spec)
    resumed.load_state_dict(state)
    assert _same(resumed.G_ema, first.G_ema) and not _same(resumed.G_ema, resumed.G)
    _train(resumed)
    assert resumed.step == whole.step == 20
    for a, b in ((whole.G, resumed.G), (whole.G_ema, resumed.G_ema), (whole.D, resumed.D)):
        assert _same(a, b)


def test_a_fork_that_turns_ema_on_starts_the_average_at_the_loaded_generator():
    plain = Pipeline(_spec(steps=5))
    _train(plain)
    fork = Pipeline(_spec(steps=10, ema={"decay": 0.9, "start": 0}))
    fork.load_state_dict(plain.state_dict())
    assert _same(fork.G_ema, plain.G)


# -- packing ---------------------------------------------------------------------------------------------------
def test_packed_mlp_discriminator_judges_runs_of_pack_samples_concatenated_along_features():
    pipe = Pipeline(_spec(pack=4))
    D = pipe.D
    assert isinstance(D, PackedDiscriminator) and D.pack == 4
    first = next(m for m in D.net.modules() if isinstance(m, torch.nn.Linear))
    assert first.in_features == 2 * 4
    x = torch.randn(16, 2)
    with torch.no_grad():
        out = D(x)
        assert out.shape == (4, 1)
        assert torch.allclose(out[1], D.net(x[4:8].reshape(1, 8))[0])  # samples 4..7 side by side
        # D at single points (the heatmap): x packed with copies of itself, any number of points
        single = pipe.D_view(x[:5])
        assert single.shape == (5, 1)
        assert torch.allclose(single[2], D.net(x[2].repeat(4).reshape(1, 8))[0])
    with pytest.raises(ValueError, match="packs of 4"):
        D(x[:6])


@pytest.mark.parametrize("objective", ["minimax", "nonsaturating"])
@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_packed_discriminators_train_with_every_gan_objective(arch, objective):
    fields = {"data": "digits", "generator": arch, "discriminator": arch, "batch_size": 8, "snapshot_size": 16} if arch == "dcgan" else {}
    if arch == "dcgan":
        fields["generator"] = {"name": "dcgan", "ngf": 8}
        fields["discriminator"] = {"name": "dcgan", "ndf": 8}
    pipe = Pipeline(_spec(steps=2, pack=2, objective=objective, **fields))
    x_shape = tuple(pipe.data.shape)
    if arch == "dcgan":
        conv = next(m for m in pipe.D.net.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.in_channels == 2 * x_shape[0]  # channels packed
    real = pipe.sample_real(8)
    fake = pipe.G(pipe.sample_latent(8)).detach()
    assert pipe.D(real).shape == (4, 1)
    loss, extras = pipe.objective.discriminator_loss(pipe.D, real, fake)
    assert loss.ndim == 0 and torch.isfinite(loss) and set(extras) >= {"d_real", "d_fake"}
    assert torch.isfinite(pipe.objective.generator_loss(pipe.D, real, fake))
    tr = _train(pipe)
    assert tr.state.status == "finished", tr.state.error
    take_snapshot(pipe, pipe.step)


@pytest.mark.parametrize("data,shape", [("grid25", (40, 40)), ("mixture-1d", (200,))])
def test_the_critic_views_work_with_packing(data, shape):
    pipe = Pipeline(_spec(data=data, pack=4, steps=2, ema=True))
    _train(pipe)
    snap = take_snapshot(pipe, pipe.step)
    assert snap.extras["critic"].shape == shape and np.isfinite(snap.extras["critic"]).all()
    if data == "grid25":
        assert len(snap.extras["arrows"]) % 4 == 0 and len(snap.extras["arrows"]) > 0


# -- the spec --------------------------------------------------------------------------------------------------
def test_pack_and_ema_round_trip_through_toml_and_json():
    spec = _spec(pack=4, ema={"decay": 0.995, "start": 500})
    assert spec.pack == 4 and spec.ema == {"decay": 0.995, "start": 500}
    for again in (parse_spec(parse_text(spec.to_toml())), parse_spec(json.loads(spec.to_json()))):
        assert again.to_dict() == spec.to_dict()
    off = _spec()
    assert off.pack == 1 and off.ema is None and "ema" not in off.to_dict()
    assert _spec(ema=True).ema == {"decay": 0.999, "start": 1000}
    assert _spec(ema=False).ema is None


@pytest.mark.parametrize("fields,where,words", [
    ({"pack": 4, "batch_size": 510}, "batch_size", "510 is not a multiple of pack = 4"),
    ({"pack": 0}, "pack", ""),
    ({"pack": 17}, "pack", ""),
    ({"pack": 2, "objective": "mmd"}, "pack", "trains none"),
    ({"ema": {"decay": 1.5}}, "ema.decay", ""),
    ({"ema": {"decay": 0.99, "strat": 10}}, "ema.strat", "start"),
    ({"ema": {"start": -1}}, "ema.start", ""),
    ({"ema": "yes"}, "ema", "decay = 0.999"),
])
def test_bad_pack_and_ema_settings_get_one_clear_message(fields, where, words):
    with pytest.raises(SpecError) as err:
        _spec(**fields)
    assert err.value.field == where
    assert words in str(err.value)


@pytest.mark.parametrize("data, keys", [("grid25", ("fake_raw", "manifold_raw", "arrows_raw")),
                                        ("mixture-1d", ("fake_raw", "p_g_raw", "d_star_raw", "g_of_z_raw"))])
def test_a_saved_snapshot_keeps_the_raw_generators_side(tmp_path, data, keys):
    """What the live view shows of the raw G is in the saved snapshot too (the Runs page's switch draws it)."""
    from explorer.execute import run_foreground

    spec = _spec(data=data, steps=4, snapshot_every=4, ema={"decay": 0.5, "start": 1},
                 latent={"name": "gaussian", "dim": 2 if data == "grid25" else 1})
    store, _ = run_foreground(spec, out=tmp_path / "run", config=TrainerConfig(snapshot_hz=0, arrows=True))
    snap = store.load_snapshot()
    assert snap is not None and store.snapshot_problem is None
    for key in keys:
        assert key in snap.extras, key
