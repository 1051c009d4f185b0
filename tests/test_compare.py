"""Comparisons: variants of one spec on the same data and noise, and `genex compare` end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer import compare
from explorer.cli import main
from explorer.errors import SpecError
from explorer.pipeline import Pipeline
from explorer.registry import get_registry
from explorer.runs import RunStore, iter_runs, open_run
from explorer.snapshots import infer_kind

TINY = {
    "name": "tiny", "data": "ring8", "objective": "nonsaturating", "steps": 20, "batch_size": 32, "log_every": 5,
    "snapshot_every": 10, "checkpoint_every": 10, "metric_every": 0, "metrics": "none", "snapshot_size": 64,
    "generator": {"name": "mlp", "depth": 1, "width": 16}, "discriminator": {"name": "mlp", "depth": 1, "width": 16},
}


@pytest.fixture(autouse=True)
def one_thread():
    """Two cores shared with other jobs: one torch thread is several times faster than two fighting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_spec(tmp_path: Path, raw: dict) -> Path:
    import tomli_w

    path = tmp_path / "spec.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def test_vary_values_split_on_commas_outside_brackets_and_parse_as_toml():
    assert compare.parse_vary("objective=minimax,nonsaturating,mmd") == ("objective", ["minimax", "nonsaturating", "mmd"])
    assert compare.parse_vary("optim.generator.lr=1e-3, 1e-4") == ("optim.generator.lr", [1e-3, 1e-4])
    assert compare.parse_vary("optim.generator.betas=[0.5, 0.9],[0.0, 0.99]")[1] == [[0.5, 0.9], [0.0, 0.99]]
    with pytest.raises(SpecError):
        compare.parse_vary("objective")


def test_variants_are_the_cartesian_product_times_the_seeds_and_share_everything_else():
    variants = compare.expand_variants(TINY, [("objective", ["nonsaturating", "mmd"]), ("optim.generator.lr", [1e-3, 1e-4])], seeds=3)
    assert len(variants) == 12
    assert len({v.label for v in variants}) == 12
    assert sorted({v.seed for v in variants}) == [0, 1, 2]
    mmd = [v for v in variants if v.changes["objective"] == "mmd"]
    assert all(v.spec.discriminator is None for v in mmd)
    assert {v.spec.optim["generator"]["lr"] for v in variants} == {1e-3, 1e-4}
    # everything not varied is the base's
    assert all(v.spec.data.name == "ring8" and v.spec.batch_size == 32 for v in variants)



def test_a_varied_seed_is_the_variants_own():
    """``--vary seed=3,4`` trains seeds 3 and 4 (it once trained the spec's seed under those labels);
    with --seeds > 1 as well it is refused, saying which to use."""
    variants = compare.expand_variants(TINY, [("seed", [3, 4])])
    assert [(v.label, v.seed, v.spec.seed) for v in variants] == [("seed=3", 3, 3), ("seed=4", 4, 4)]
    with pytest.raises(SpecError, match="--seeds"):
        compare.expand_variants(TINY, [("seed", [3, 4])], seeds=2)


def test_a_variant_that_does_not_resolve_is_named_before_anything_trains():
    with pytest.raises(SpecError, match="in variant objective=nosuch"):
        compare.expand_variants(TINY, [("objective", ["minimax", "nosuch"])])


def test_same_seed_gives_every_variant_the_same_data_noise_and_view_batches():
    a, b = compare.expand_variants(TINY, [("objective", ["minimax", "mmd"])])
    pa, pb = Pipeline(a.spec, device="cpu"), Pipeline(b.spec, device="cpu")
    assert torch.equal(pa.sample_real(32), pb.sample_real(32))
    assert torch.equal(pa.sample_latent(32), pb.sample_latent(32))
    assert torch.equal(pa.view_real, pb.view_real)
    other = compare.expand_variants(TINY, [], seeds=[5])[0]
    assert not torch.equal(Pipeline(other.spec, device="cpu").view_real, pa.view_real)


def test_best_is_the_lowest_distance_and_the_highest_mode_count_while_losses_only_have_a_final():
    records = [
        {"step": 10, "time": 0, "d_loss": 1.0, "g_loss": 0.5},
        {"step": 10, "time": 0, "modes": 3.0, "reverse_kl": 0.9},
        {"step": 20, "time": 0, "d_loss": 1.2, "g_loss": 0.4, "data_acceptance_rate": 0.3},
        {"step": 20, "time": 0, "modes": 6.0, "reverse_kl": 0.2},
        {"step": 30, "time": 0, "modes": 5.0, "reverse_kl": 0.4},
    ]
    directions = compare.metric_directions({"metrics": [{"name": "mode-coverage"}]})
    assert directions["modes"] == "higher" and directions["reverse_kl"] == "lower"
    final, best = compare.final_and_best(records, directions)
    assert final == {"d_loss": 1.2, "g_loss": 0.4, "modes": 5.0, "reverse_kl": 0.4}
    assert best == {"modes": 6.0, "reverse_kl": 0.2}
    assert compare.final_and_best(records)[1] == {}  # nothing is guessed from a key's name


def test_a_plugin_metric_declares_its_direction_and_best_follows_it():
    """``nn_accuracy`` (the example package's 1-NN two-sample test) is best near 0.5, lowest of the
    values it takes in practice: it declares "lower", which no name-based guess would know."""
    from explorer import Metric, hookimpl

    class Accuracy(Metric):
        name = "test-accuracy"
        summary = "test metric"
        directions = {"two_sample_accuracy": "lower", "recall_like_coverage": "higher"}

        def compute(self, real, fake, context):
            return {"two_sample_accuracy": 0.5, "recall_like_coverage": 1.0}

    class Plugin:
        @hookimpl
        def register_metrics(self, register):
            register(Accuracy)

    reg = get_registry()
    assert reg.add_plugin(Plugin(), name="test-direction")
    try:
        directions = compare.metric_directions({"metrics": ["test-accuracy"]}, reg)
    finally:
        reg.remove_plugin("test-direction")
    records = [{"step": s, "kind": "metric", "two_sample_accuracy": a, "recall_like_coverage": c}
               for s, a, c in ((10, 0.9, 0.2), (20, 0.6, 0.9), (30, 0.7, 0.5))]
    assert compare.final_and_best(records, directions)[1] == {"two_sample_accuracy": 0.6, "recall_like_coverage": 0.9}


def test_mean_and_standard_error_per_variant_over_seeds(tmp_path):
    variants = compare.expand_variants(TINY, [("objective", ["minimax", "nonsaturating"])], seeds=3)
    values = {"objective=minimax": [1.0, 2.0, 4.0], "objective=nonsaturating": [3.0, 3.0, 3.0]}
    results, seen = [], {}
    for v in variants:
        key = compare.variant_label(v.changes)
        i = seen.setdefault(key, 0)
        seen[key] += 1
        results.append(compare.RunResult(v, RunStore(tmp_path / v.label), "finished", 20, final={"g_loss": values[key][i]}))
    rows = {r["variant"]: r for r in compare.mean_se_rows(results)}
    m = rows["objective=minimax"]
    assert m["n"] == 3 and m["g_loss_mean"] == pytest.approx(7 / 3)
    assert m["g_loss_se"] == pytest.approx(np.std([1, 2, 4], ddof=1) / math.sqrt(3))
    assert rows["objective=nonsaturating"]["g_loss_se"] == 0.0
    assert "2.333 ± " in compare.mean_se_markdown(list(rows.values()))


def test_spec_diff_rows_list_only_the_fields_that_differ():
    a, b = compare.expand_variants(TINY, [("optim.generator.lr", [1e-3, 1e-4])])
    rows = compare.spec_diff_rows({"A": a.spec.to_dict(), "B": b.spec.to_dict()})
    assert [r["field"] for r in rows] == ["optim.generator.lr"]
    assert rows[0]["A"] == "0.001" and rows[0]["B"] == "0.0001"
    labels = compare.labels_for_specs({"r1": a.spec.to_dict(), "r2": b.spec.to_dict()})
    assert labels == {"r1": "lr=0.001", "r2": "lr=0.0001"}
    # a reloaded comparison labels its runs as `--vary` named them; a change log by its size
    m, n = compare.expand_variants(TINY, [("objective", ["minimax", "nonsaturating"])])
    changed = {**n.spec.to_dict(), "changes": [{"step": 5, "set": {"k_d": 2}}]}
    assert compare.labels_for_specs({"r1": m.spec.to_dict(), "r2": changed}) == {
        "r1": "0 changes objective=minimax", "r2": "1 change objective=nonsaturating"}


def test_genex_compare_trains_every_run_and_writes_tables_picture_and_run_folders(tmp_path, capsys):
    spec = write_spec(tmp_path, TINY)
    out = tmp_path / "cmp"
    code = main(["compare", str(spec), "--vary", "objective=minimax,nonsaturating", "--seeds", "2", "--steps", "20", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    assert {r["objective"] for r in rows} == {"minimax", "nonsaturating"} and {r["seed"] for r in rows} == {"0", "1"}
    assert all(r["status"] == "finished" and r["step"] == "20" and float(r["g_loss"]) == float(r["g_loss"]) for r in rows)
    with open(out / "summary_mean.csv") as fh:
        means = list(csv.DictReader(fh))
    assert len(means) == 2 and all(m["n"] == "2" and m["g_loss_se"] for m in means)
    md = (out / "summary.md").read_text()
    assert "| objective=minimax seed=0 |" in md and "Mean ± standard error" in md
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "compare.json").read_text())
    folders = [out / r["folder"] for r in manifest["runs"]]
    assert len(folders) == 4 and all((f / "spec.json").is_file() and (f / "checkpoint.pt").is_file() for f in folders)
    # Same seed, different objective: identical data in the saved views; another seed: different data.
    by = {(r["changes"]["objective"], r["seed"]): RunStore(out / r["folder"]) for r in manifest["runs"]}
    real = {k: np.load(s.path / "samples" / "step_0000010.npz")["real"] for k, s in by.items()}
    assert np.array_equal(real[("minimax", 0)], real[("nonsaturating", 0)])
    assert not np.array_equal(real[("minimax", 0)], real[("minimax", 1)])
    # the runs are in the history, inside their comparison folder: the Runs page and `genex runs`
    # list them by their path under the runs folder, and that path opens them
    assert {s.path for s in iter_runs(tmp_path, comparisons=True)} >= set(folders)
    capsys.readouterr()
    assert main(["runs", "--root", str(tmp_path)]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert sorted(listed) == sorted(f.relative_to(tmp_path).as_posix() for f in folders)
    assert open_run(listed[0], tmp_path).path in folders


def test_genex_compare_rejects_a_bad_vary_with_one_message(tmp_path, capsys):
    spec = write_spec(tmp_path, TINY)
    assert main(["compare", str(spec), "--vary", "objective=minimax,nosuch", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_saved_snapshot_kind_is_recovered_from_its_arrays(tmp_path):
    assert infer_kind({"fake": np.zeros((4, 1, 8, 8))}) == "image"
    assert infer_kind({"fake": np.zeros((4, 2)), "extra_grid_x": np.zeros(3)}) == "2d"
    assert infer_kind({"fake": np.zeros((4, 1)), "extra_x": np.zeros(3)}) == "1d"
    assert infer_kind({"fake": np.zeros((4, 5))}) == "vector"
