"""`genex compare --backend ray` and the Compare page's Ray runs (explorer.ray_backend).

One real local Ray instance (2 CPUs, loopback, no dashboard) serves the module; the Ctrl-C test runs
`genex compare` as a command in a session of its own, which starts (and must shut down) its own
instance. The specs are tiny. Without Ray installed only the tests that need no cluster run.
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
from waiting import wait

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

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="warning", log_to_driver=False)
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


def _losses_and_metrics(store: RunStore) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "steps_per_s")} for r in store.read_metrics()]


@pytest.mark.slow
def test_a_comparison_started_from_the_app_on_ray_is_live_and_lands_in_its_run_folders(ray_instance, tmp_path):
    """RunManager.start_group with ray_backend.group_trainer, as the Compare page's "Run on: Ray cluster" does:
    two short runs stream their state, records and snapshots into their live states, come back into the
    folders the manager made with the same losses and metrics as local training of the same seed; a third,
    long run is stopped from the page and comes back stopped with its checkpoint."""
    import tomllib
    import torch

    from explorer.execute import run_foreground
    from explorer.manager import RunManager
    from explorer.records import record_kind
    from explorer.runs import list_runs
    from explorer.spec import parse_spec

    raw = tomllib.loads((Path(ray_backend.__file__).parent / "presets" / "ring8-nonsaturating.toml").read_text())
    raw.update(steps=100, batch_size=128, log_every=10, snapshot_every=50, checkpoint_every=50, metric_every=50)
    short = [parse_spec({**raw, "seed": seed}) for seed in (0, 1)]
    long = parse_spec({**raw, "steps": 1_000_000, "checkpoint_every": 20, "metric_every": 0})
    seen: dict[int, set] = {0: set(), 1: set(), 2: set()}
    trainer = ray_backend.group_trainer()

    def train(runs):
        for i, run in enumerate(runs):  # spy on what the driver feeds each run's live state
            update, add_record = run.state.update, run.state.add_record

            def spied_update(i=i, update=update, **fields):
                seen[i].update(k for k in fields if k in ("status", "step", "steps_per_s", "snapshot"))
                seen[i].add(f"status={fields['status']}") if "status" in fields else None
                update(**fields)

            def spied_add(record, i=i, add_record=add_record):
                seen[i].add(record_kind(record))
                add_record(record)

            run.state.update, run.state.add_record = spied_update, spied_add
        trainer(runs)

    manager = RunManager(root=tmp_path / "runs", backend="thread")
    try:
        a, b, c = manager.start_group([*short, long], owner="tab", names=["seed0", "seed1", "long"], train=train,
                                      backend="ray", slots=0)
        assert manager.get(a.id) is a and a.backend == "ray"
        assert wait(lambda: c.state.view().step >= 40, 300)  # trained past two checkpoints
        mid = c.store.read_status()  # its folder while it trains: running, resumable from its latest checkpoint
        assert mid["status"] == "running" and mid.get("error") is None and c.store.has_checkpoint(), mid
        assert [r.status for r in list_runs(tmp_path / "runs") if r.id == c.id] == ["running"]  # the Runs page
        manager.stop(c.id)  # the page's Stop
        assert wait(lambda: not any(r.active for r in (a, b, c)), 300)
    finally:
        manager.stop_all(wait=60)
    for i, run in enumerate((a, b)):
        assert run.status == "finished", run.state.error
        assert {"status=running", "steps_per_s", "snapshot", "loss", "metric", "status=finished"} <= seen[i], seen[i]
        view = run.state.view()
        assert view.step == 100 and view.snapshot is not None and view.snapshot.step == 100
        status = run.store.read_status()  # the folder the manager made, filled in place
        assert status["status"] == "finished" and status["run_id"] == run.id and status["imported"]["from"].startswith("ray:")
        assert run.store.has_checkpoint() and 100 in run.store.snapshot_steps()
        # the same losses and metrics as training the same spec here
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            local, _ = run_foreground(run.spec, out=tmp_path / f"local{i}")
        finally:
            torch.set_num_threads(threads)
        assert _losses_and_metrics(run.store) == _losses_and_metrics(local)
    assert c.status == "stopped" and "status=stopped" in seen[2]
    stopped = c.store.read_status()
    assert stopped["status"] == "stopped" and stopped["step"] >= 40 and c.store.has_checkpoint()
    assert c.store.load_checkpoint()["step"] == stopped["step"]  # its final checkpoint, as a local Stop leaves
    assert sorted(r.id for r in list_runs(tmp_path / "runs")) == sorted(r.id for r in (a, b, c))  # nothing else there
    assert not [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


def _session_processes(sid: int) -> list[str]:
    """The processes of session ``sid`` still alive (from /proc): what a command started in a session of
    its own left behind."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(f"{stat.parent.name} {text[text.index('(') + 1:text.rindex(')')]}")
    return out


@pytest.mark.slow
def test_ctrl_c_on_genex_compare_cancels_the_runs_keeps_what_came_back_and_shuts_its_ray_down(spec_file, tmp_path):
    """A real SIGINT to a real `genex compare --backend ray`, in a session of its own: this process (pytest)
    never gets it. The command starts (and must shut down) its own local Ray instance."""
    if not ray_backend.available():
        pytest.skip("ray is not installed (pip install 'generative-explorer[ray]')")
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the processes the command left behind")
    import signal
    import threading

    import tomli_w

    spec = tmp_path / "long.toml"
    spec.write_text(tomli_w.dumps({**TINY, "steps": 100_000}))
    out = tmp_path / "cmp"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", ray_backend.ADDRESS_ENV)}
    env.update(GENEX_TORCH_THREADS="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    proc = subprocess.Popen([sys.executable, "-m", "explorer", "compare", str(spec), "--vary", "objective=minimax,nonsaturating,mmd",
                             "--backend", "ray", "--out", str(out)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            # Ctrl-C's usual effect even when this process ignores SIGINT (a shell's background job
                            # does, and its children inherit that): Python turns SIGINT into KeyboardInterrupt only then
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    training = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            step = re.search(r": step (\d+)/100000", line)
            if step and int(step[1]) >= 15:  # a checkpoint (every 10 steps) went back to the driver before this
                training.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert training.wait(240), "no run reached step 15:\n" + "\n".join(lines) + (proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGINT)  # this process only, as a terminal's Ctrl-C reaches the command
        rc = proc.wait(120)
        assert rc == 130, f"exit status {rc}:\n" + "\n".join(lines[-20:]) + "\n" + proc.stderr.read()[-6000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    reader.join(10)
    err = proc.stderr.read()
    said = [line for line in err.splitlines() if line.startswith("genex compare:")]
    assert len(said) == 1 and "Traceback" not in err, err
    assert re.fullmatch(r"genex compare: cancelled: 3 run\(s\) stopped \(\d kept up to their last checkpoint as interrupted\), "
                        r"0 finished before; what came back is in .*cmp", said[0]), said[0]
    # every run's folder is in the output, with how it ended, and the summary lists them
    manifest = json.loads((out / "compare.json").read_text())
    assert {"summary.md", "summary.csv"} <= {p.name for p in out.iterdir()}
    assert len(manifest["runs"]) == 3
    statuses = {}
    for run in manifest["runs"]:
        store = RunStore(out / run["folder"])
        statuses[run["label"]] = store.read_status()["status"]
        assert statuses[run["label"]] == run["status"] in ("interrupted", "stopped")
        if run["status"] == "interrupted":  # resumable from the checkpoint it shipped
            assert store.has_checkpoint() and store.read_status()["step"] >= 10
    assert "interrupted" in statuses.values(), statuses
    # the local Ray instance it started is shut down: nothing of its session is left (raylet, GCS, workers)
    deadline = time.monotonic() + 30
    while (left := _session_processes(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left


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
