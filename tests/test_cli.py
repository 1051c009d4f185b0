"""`genex` end to end: plugins listing, a headless run and its folder, bad input exits 2 with one message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def genex(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "explorer", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=600)


def test_plugins_json_lists_every_builtin_component_with_its_parameters():
    out = genex("plugins", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    names = {k: {c["name"] for c in v} for k, v in info["components"].items()}
    assert {"uniform", "gaussian", "inverse-transform", "rejection", "metropolis-hastings", "mixture-1d", "ring8",
            "grid25", "moons", "spiral", "digits", "image-folder"} <= names["sampler"]
    assert {"mlp", "dcgan"} <= names["architecture"]
    assert {"minimax", "nonsaturating", "mmd"} <= names["objective"]
    mlp = next(c for c in info["components"]["architecture"] if c["name"] == "mlp")
    assert mlp["distribution"] == "generative-explorer" and mlp["version"]
    depth = next(p for p in mlp["params"] if p["name"] == "depth")
    assert depth["kind"] == "int" and "default" in depth and "low" in depth and depth["help"]


def test_plugins_text_listing_shows_sources_and_parameters():
    out = genex("plugins")
    assert out.returncode == 0
    assert "ring8" in out.stdout and "(generative-explorer" in out.stdout and "choices:" in out.stdout


def test_run_leaves_a_complete_run_folder(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('data = "ring8"\nobjective = "nonsaturating"\nsteps = 40\nlog_every = 10\nsnapshot_every = 20\nmetrics = ["energy-distance"]\nmetric_every = 20\n')
    out = genex("run", str(spec), "--steps", "40", "--seed", "3", "--device", "cpu", "--out", str(tmp_path / "run"), "--quiet")
    assert out.returncode == 0, out.stderr
    run = tmp_path / "run"
    resolved = json.loads((run / "spec.json").read_text())
    assert resolved["seed"] == 3 and resolved["device"] == "cpu" and resolved["generator"]["depth"] == 2
    assert resolved["provenance"]["objective"].startswith("gan-objectives")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    loss = [r for r in records if "g_loss" in r]
    assert [r["step"] for r in loss] == [10, 20, 30, 40]
    assert {"time", "d_loss", "g_loss"} <= set(loss[0])
    assert any("energy_distance" in r for r in records)
    assert np.load(run / "samples" / "step_0000040.npy").shape[1:] == (2,)
    assert (run / "samples" / "step_0000040.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 40 and "G" in ckpt and "D" in ckpt
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert "energy_distance" in out.stdout


def test_run_uses_genex_runs_dir_for_its_default_folder(tmp_path):
    import os

    spec = tmp_path / "s.toml"
    spec.write_text('steps = 5\nmetrics = "none"\n')
    env = {**os.environ, "GENEX_RUNS_DIR": str(tmp_path / "myruns")}
    out = genex("run", str(spec), "--quiet", env=env)
    assert out.returncode == 0, out.stderr
    runs = list((tmp_path / "myruns").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("ring8-nonsaturating")
    listing = genex("runs", env=env)
    assert runs[0].name in listing.stdout and "finished" in listing.stdout


@pytest.mark.parametrize(
    "text, words",
    [
        ('data = "rnig8"\n', ["data", "unknown sampler 'rnig8'", "did you mean 'ring8'", "grid25"]),
        ('stesp = 3\n', ["stesp", "unknown field", "did you mean 'steps'"]),
        ('steps = -1\n', ["steps", "below the minimum"]),
        ('[generator]\nname = "mlp"\nwidht = 3\n', ["generator.widht", "did you mean 'width'"]),
        ('data = "ring8"\ngenerator = "dcgan"\n', ["generator", "'dcgan' cannot build the generator"]),
    ],
)
def test_bad_spec_exits_2_with_one_clear_message_and_no_traceback(tmp_path, text, words):
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    out = genex("run", str(spec), "--out", str(tmp_path / "never"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    for word in words:
        assert word in out.stderr
    assert not (tmp_path / "never").exists()


def test_missing_spec_file_exits_2(tmp_path):
    out = genex("run", str(tmp_path / "nope.toml"))
    assert out.returncode == 2 and "not found" in out.stderr and "Traceback" not in out.stderr


def test_every_preset_is_a_valid_spec():
    from explorer.spec import load_spec_file, resolve

    presets = sorted((ROOT / "explorer" / "presets").glob("*.toml"))
    assert {p.stem for p in presets} >= {"ring8-nonsaturating", "grid25-nonsaturating", "grid25-mmd", "mixture1d-minimax", "mixture1d-nonsaturating", "digits-dcgan"}
    for path in presets:
        resolve(load_spec_file(path))



def test_steps_shortening_a_preset_drops_the_changes_after_its_end(tmp_path, capsys):
    """``--steps`` on a preset whose change log goes further (grid25-ema-mmd lowers its learning rates at
    step 2,500): the run trains, and its spec keeps only the changes that come."""
    from explorer.cli import main
    from explorer.runs import RunStore
    from explorer.spec import parse_spec

    preset = ROOT / "explorer" / "presets" / "grid25-ema-mmd.toml"
    assert parse_spec(preset).changes[0]["step"] == 2500
    assert parse_spec(preset, steps=2500).changes and not parse_spec(preset, steps=2499).changes
    out = tmp_path / "run"
    assert main(["run", str(preset), "--steps", "6", "--out", str(out)]) == 0, capsys.readouterr().err
    assert RunStore(out).read_status()["status"] == "finished"
    assert "changes" not in RunStore(out).read_spec()


def test_plugins_check_exits_1_when_a_plugin_failed_to_load(capsys):
    from explorer import hookimpl
    from explorer.cli import main
    from explorer.registry import Registry, set_registry

    class Broken:
        @hookimpl
        def register_samplers(self, register):
            raise ValueError("broken on purpose")

    reg = Registry().load_installed()
    set_registry(reg)
    try:
        assert main(["plugins", "--check"]) == (1 if reg.errors else 0)
    finally:
        set_registry(None)
    reg.add_plugin(Broken(), name="broken-for-check")
    set_registry(reg)
    try:
        assert main(["plugins"]) == 0  # listing alone still succeeds
        assert main(["plugins", "--check"]) == 1
        assert main(["plugins", "--check", "--json"]) == 1
    finally:
        set_registry(None)
    assert "1 plugin(s) failed to load" in capsys.readouterr().err


def test_new_plugin_help_starts_without_importing_torch():
    code = ("import sys, io, contextlib\nfrom explorer.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['new-plugin', '--help'])\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules, 'explorer.compare' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.split() == ["False", "False"]


def test_app_warms_up_then_serves_with_streamlit_options_passed_through(monkeypatch, capsys):
    """`genex app`: torch, the plugins, the presets and the RunManager are loaded before the server
    starts (so the first tab is as fast as any other); Streamlit's options pass through, after ours."""
    from streamlit.web import cli as streamlit_cli

    from explorer.cli import main
    from explorer.ui import serve

    calls = []
    monkeypatch.setattr(serve, "warm_up", lambda: calls.append("warm"))
    monkeypatch.setattr(streamlit_cli, "main", lambda **kw: calls.append(("serve", list(sys.argv), kw)))
    monkeypatch.setattr(sys, "argv", ["genex"])
    assert main(["app", "--server.port", "8765", "--server.address", "0.0.0.0"]) == 0
    assert calls[0] == "warm"
    argv = calls[1][1]
    assert argv[:3] == ["streamlit", "run", str(serve.APP)] and serve.APP.name == "app.py" and serve.APP.is_file()
    assert argv[-4:] == ["--server.port", "8765", "--server.address", "0.0.0.0"]
    assert argv[3:-4] == list(serve.FLAGS) and "--runner.postScriptGC" in argv
    assert "loading torch, the plugins and the presets" in capsys.readouterr().out
