"""`genex compare --backend ray`: runs as Ray tasks, brought back as archives (explorer.ray_backend).

One real local Ray instance (2 CPUs, loopback, no dashboard) serves the whole module; the specs are
tiny (40 steps). Without Ray installed only the tests that need no cluster run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explorer import compare, ray_backend
from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.runs import RunStore, iter_runs

TINY = {
    "name": "tiny", "data": "ring8", "objective": "nonsaturating", "steps": 40, "batch_size": 32, "log_every": 5,
    "snapshot_every": 20, "checkpoint_every": 10, "metric_every": 0, "metrics": "none", "snapshot_size": 64,
    "generator": {"name": "mlp", "depth": 1, "width": 16}, "discriminator": {"name": "mlp", "depth": 1, "width": 16},
}
VARY = ["--vary", "objective=minimax,nonsaturating"]


@pytest.fixture(scope="module")
def ray_instance():
    if not ray_backend.available():
        pytest.skip("ray is not installed (pip install 'generative-explorer[ray]')")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the loopback address only
    # one torch thread here and on the workers (started from this environment): the same arithmetic as locally
    old = os.environ.get("GENEX_TORCH_THREADS")
    os.environ["GENEX_TORCH_THREADS"] = "1"
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()
    if old is None:
        os.environ.pop("GENEX_TORCH_THREADS", None)
    else:
        os.environ["GENEX_TORCH_THREADS"] = old


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    import tomli_w

    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(tomli_w.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def local_compare(ray_instance, spec_file, tmp_path_factory):
    """The same comparison trained by the local backend (the reference)."""
    out = tmp_path_factory.mktemp("local") / "cmp"
    assert main(["compare", str(spec_file), *VARY, "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "compare.json").read_text())


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_ray_compare_gives_the_local_runs_losses_and_folder_layout(ray_instance, spec_file, local_compare, tmp_path, capsys):
    out = tmp_path / "cmp"
    t0 = time.monotonic()
    assert main(["compare", str(spec_file), *VARY, "--backend", "ray", "--out", str(out)]) == 0, capsys.readouterr().err
    seconds = time.monotonic() - t0
    printed = capsys.readouterr().out
    assert "objective=minimax: step 5/40 d_loss=" in printed  # progress streamed back while training
    assert "[2/2]" in printed and "finished at step 40" in printed
    manifest = json.loads((out / "compare.json").read_text())
    for ray_run, local_run in zip(manifest["runs"], local_compare["runs"]):
        assert ray_run["label"] == local_run["label"] and ray_run["status"] == "finished"
        assert ray_run["final"]["d_loss"] == local_run["final"]["d_loss"]
        assert ray_run["final"]["g_loss"] == local_run["final"]["g_loss"]
        assert ray_run["folder"] == local_run["folder"]
    # the same files as a local comparison's, and the runs are in the history like local ones
    local_out = Path(local_compare["runs"][0]["folder"])  # relative: runs/01-...
    assert local_out.parts[0] == "runs"
    assert {"summary.csv", "summary.md", "compare.png", "compare.json"} <= _files(out)
    run = RunStore(out / manifest["runs"][0]["folder"])
    assert {"spec.json", "status.json", "metrics.jsonl", "checkpoint.pt", "samples/step_0000040.npz"} <= _files(run.path)
    assert run.read_status()["imported"]["from"].startswith("ray:")
    assert {s.path for s in iter_runs(tmp_path, comparisons=True)} >= {out / r["folder"] for r in manifest["runs"]}
    print(f"\nray compare of 2 tiny runs: {seconds:.1f} s")


@pytest.mark.slow
def test_a_worker_that_dies_is_retried_from_its_checkpoint_then_failed_with_the_reason(ray_instance, tmp_path, local_compare):
    def crash(trainer, attempt):  # runs on the worker: kill the process mid-run, like an OOM kill would
        def on_step(tr):
            if tr.spec.objective.name == "minimax" and attempt == 0 and tr.p.step == 25:
                os._exit(1)  # once: the retry goes on
            if tr.spec.objective.name == "nonsaturating" and tr.p.step == 15:
                os._exit(1)  # every attempt: the run fails after the retries

        trainer.add_callback("step_end", on_step)

    variants = compare.expand_variants(TINY, [("objective", ["minimax", "nonsaturating"])])
    lines: list[str] = []
    results = ray_backend.train_variants(variants, tmp_path / "cmp", log=lines.append, hook=crash, retries=2)
    text = "\n".join(lines)
    ok, bad = results
    assert ok.status == "finished" and ok.step == 40
    assert "objective=minimax: the Ray worker training it died" in text and "retry 1/2 from its checkpoint at step 20" in text
    # resumed from the checkpoint on another process: the same final losses as the uninterrupted local run
    assert ok.final["g_loss"] == local_compare["runs"][0]["final"]["g_loss"]
    assert ok.final["d_loss"] == local_compare["runs"][0]["final"]["d_loss"]
    steps = [r["step"] for r in ok.store.read_metrics() if "g_loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # no step logged twice
    assert bad.status == "failed" and "died" in bad.error and "gave up after 3 attempts" in bad.error
    assert "retry 2/2" in text
    assert bad.store.has_checkpoint() and bad.store.read_status()["step"] == 10  # kept up to its last checkpoint


@pytest.mark.slow
def test_a_plugin_a_worker_lacks_is_named_with_its_pip_line(ray_instance):
    needed = {"objective:nosuch": {"kind": "objective", "name": "nosuch", "plugin": "nosuch",
                                   "dist": "generative-explorer-nosuch", "version": "1.2.0"}}
    with pytest.raises(ExplorerError) as info:
        ray_backend.check_workers(ray_instance, needed)
    msg = str(info.value)
    assert "objective 'nosuch' from plugin nosuch" in msg and "not installed" in msg
    assert "pip install 'generative-explorer-nosuch==1.2.0'" in msg
    # what the real spec needs is there
    variants = compare.expand_variants(TINY, [("objective", ["minimax", "mmd"])])
    from explorer.registry import get_registry

    needed = ray_backend.needed_components([v.spec for v in variants], get_registry())
    assert {"objective:minimax", "objective:mmd", "sampler:ring8", "architecture:mlp"} <= set(needed)
    ray_backend.check_workers(ray_instance, needed)


@pytest.mark.slow
@pytest.mark.skip(reason="in a fresh virtualenv this test ends the pytest process itself (ray.cancel after a "
                         "KeyboardInterrupt in the driver); Ctrl-C handling is unverified until that is fixed")
def test_ctrl_c_cancels_the_remaining_runs_and_keeps_what_came_back(ray_instance, tmp_path):
    variants = compare.expand_variants({**TINY, "steps": 100_000}, [("objective", ["minimax", "nonsaturating", "mmd"])])

    def log(msg: str) -> None:
        step = re.search(r": step (\d+)/100000", msg)
        if step and int(step[1]) >= 15:  # a checkpoint shipped (every 10 steps): press Ctrl-C
            raise KeyboardInterrupt

    t0 = time.monotonic()
    with pytest.raises(ray_backend.ComparisonCancelled) as info:
        ray_backend.train_variants(variants, tmp_path / "cmp", log=log, progress_every_s=0.0)
    assert time.monotonic() - t0 < 120
    assert "cancelled: 3 run(s) stopped" in str(info.value)
    kept = info.value.results
    assert kept and all(r.status == "interrupted" and r.store.has_checkpoint() for r in kept)
    # nothing of this comparison is left running on the cluster: both CPUs are free again
    deadline = time.monotonic() + 30
    while ray_instance.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_instance.available_resources().get("CPU", 0) == 2


def test_without_ray_the_command_says_which_pip_line_installs_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(ray_backend, "available", lambda: False)
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(TINY))
    assert main(["compare", str(spec), *VARY, "--backend", "ray", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'generative-explorer[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_the_cli_does_not_import_ray_unless_asked():
    code = ("import sys; from explorer.cli import build_parser; build_parser('compare'); "
            "import explorer.compare, explorer.ray_backend; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
