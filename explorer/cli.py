"""``genex``: the command line (also ``python -m explorer``).

    genex plugins [--json] [--check]       every component, its parameters and where it comes from
    genex run SPEC [--steps N] [--seed S] [--device D] [--out DIR]
    genex runs [--json]                    the run history
    genex compare SPEC --vary FIELD=A,B    side-by-side runs (explorer.compare; --backend ray: explorer.ray_backend)
    genex export-animation RUN [--format gif|mp4] [--fps N] [--out PATH]   a run's snapshots as a GIF/MP4 (explorer.animation)
    genex new-plugin NAME                  scaffold a plugin package (explorer.scaffold)

User errors (a bad spec, an unknown component) exit with status 2 and one message, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Callable

from explorer.errors import ExplorerError, one_line

# Subcommands that live in their own modules: (module, help). Each module has configure(parser) and run(args) -> int.
EXTERNAL_COMMANDS = {
    "new-plugin": ("explorer.scaffold", "scaffold a generative-explorer-NAME plugin package"),
    "app": ("explorer.ui.serve", "serve the explorer app (Streamlit), torch, the plugins and the presets loaded first"),
}


def _cmd_plugins(args: argparse.Namespace) -> int:
    from explorer.registry import get_registry

    reg = get_registry()
    info = reg.describe()
    failed = 1 if args.check and info["errors"] else 0
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return failed
    for kind, comps in info["components"].items():
        print(f"{kind}s:")
        for c in comps:
            src = f"{c['plugin']} ({c['distribution'] or 'local'} {c['version'] or ''})".replace(" )", ")")
            print(f"  {c['name']:<22} {c['summary']}  [{src}]")
            for p in c["params"]:
                rng = ""
                if "choices" in p:
                    rng = " choices: " + ", ".join(map(str, p["choices"]))
                elif "low" in p or "high" in p:
                    rng = f" range: {p.get('low', '-inf')} .. {p.get('high', 'inf')}"
                print(f"      {p['name']} ({p['kind']}, default {p['default']!r}){rng}  {p['help']}")
    for name, why in info["skipped"].items():
        print(f"skipped plugin {name}: {why}")
    if info["errors"]:
        print("\nplugins that failed to load:")
        for e in info["errors"]:
            dist = f" ({e['distribution']} {e['version']})" if e["distribution"] else ""
            print(f"  {e['plugin']}{dist} [{e['stage']}]: {e['message']}")
            if args.verbose and e["traceback"]:
                print("    " + e["traceback"].replace("\n", "\n    "))
        if not args.verbose:
            print("  (genex plugins --verbose shows the tracebacks)")
    if failed:
        print(f"genex plugins --check: {len(info['errors'])} plugin(s) failed to load", file=sys.stderr)
    return failed


def _cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from explorer.execute import run_foreground
    from explorer.spec import load_spec_file, parse_spec

    # A path is a path: never read as TOML text, an empty one is an error (not the default pipeline).
    spec = parse_spec(load_spec_file(args.spec), steps=args.steps, seed=args.seed, device=args.device)
    bars: list[Any] = []  # the progress bar appears once training starts (not before an error about --out)

    def progress(trainer: Any) -> None:
        bar = tqdm(total=spec.steps, unit="step", dynamic_ncols=True, disable=args.quiet)
        bars.append(bar)

        def on_log(tr: Any, rec: dict[str, Any]) -> None:
            bar.n = rec["step"]
            shown = {k: f"{v:.4g}" for k, v in rec.items() if k not in ("step", "time", "steps_per_s") and isinstance(v, float)}
            bar.set_postfix(shown, refresh=False)
            bar.refresh()

        bar.n = trainer.p.step
        bar.set_description(f"{spec.short_name()} on {trainer.state.device}")
        trainer.add_callback("log", on_log)

    from explorer.training import TrainerConfig

    # Headless: no live snapshots for a UI, only the saved ones every snapshot_every steps.
    try:
        store, state = run_foreground(spec, out=args.out, progress=progress, config=TrainerConfig(snapshot_hz=0))
    finally:
        for bar in bars:
            bar.close()
    view = state.view()
    st = store.read_status()
    print(f"run {store.id}: {view.status} at step {view.step}/{spec.steps} -> {store.path}")
    final = st.get("final_metrics") or {}
    from explorer.records import LOSS, record_kind

    losses = next((r for r in reversed(view.history) if record_kind(r) == LOSS), {})
    for key in ("d_loss", "g_loss"):
        if key in losses:
            print(f"  {key:<22} {losses[key]:.4g}")
    for key, value in sorted(final.items()):
        print(f"  {key:<22} {value:.4g}")
    if view.status == "failed":
        print(f"error: {view.error}", file=sys.stderr)
        return 1
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from explorer.runs import list_runs, runs_root

    runs = list_runs(args.root)
    base = runs_root(args.root)
    if args.json:
        print(json.dumps([{**r.__dict__, "path": str(r.path)} for r in runs], indent=2, default=str))
        return 0
    if not runs:
        print("no runs yet (genex run SPEC makes one)")
    for r in runs:
        # runs inside a comparison are named by their path under the runs folder, which open_run accepts
        rid = r.path.relative_to(base).as_posix() if r.path.is_relative_to(base) else r.id
        comps = " ".join(f"{k}={v}" for k, v in r.components.items())
        print(f"{rid:<48} {r.status:<11} {r.step:>7}/{r.total_steps:<7} {comps}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """``genex compare``: train the variants, write the tables and the picture; exit 1 if any run failed."""
    from datetime import datetime
    from pathlib import Path

    from explorer import compare
    from explorer.errors import SpecError
    from explorer.runs import fresh_folder, runs_root
    from explorer.spec import apply_overrides, load_spec_file

    if args.backend == "ray":
        from explorer import ray_backend

        ray_backend.require_ray()  # before any folder is made: exit 2 with the pip line
    elif args.address:
        raise SpecError("--address", "names a Ray cluster; use it with --backend ray")
    if args.vectorise and args.backend == "ray":
        raise SpecError("--vectorise", "batches the seeds on this machine; with --backend ray every seed is a task of "
                        "its own: use one of the two")
    base = load_spec_file(args.spec)
    varies = [compare.parse_vary(v) for v in args.vary]
    if args.seeds < 1:
        raise SpecError("--seeds", "give 1 or more")
    variants = compare.expand_variants(base, varies, args.seeds, steps=args.steps, device=args.device)
    name = base.get("name") or Path(args.spec).stem
    out = Path(args.out) if args.out else runs_root() / f"compare-{datetime.now():%Y%m%d-%H%M%S}-{compare._slug(str(name))}"
    fresh_folder(out)
    log = None if args.quiet else (lambda msg: print(msg, flush=True))
    if log:
        log(f"comparing {len(variants)} runs of {name} -> {out}")
    written = apply_overrides(dict(base), {"steps": args.steps})
    if args.backend == "ray":
        try:
            results = ray_backend.train_variants(variants, out, address=args.address, jobs=args.jobs, log=log)
        except ray_backend.ComparisonCancelled as exc:
            if exc.results:
                compare.write_outputs(out, written, varies, exc.results)
            print(f"genex compare: {exc}; what came back is in {out}", file=sys.stderr)
            return 130
    else:
        results = compare.train_variants(variants, out, jobs=max(1, args.jobs or 1), log=log, vectorise=args.vectorise)
    compare.write_outputs(out, written, varies, results)
    if log:
        losses = [k for k in ("d_loss", "g_loss") if any(k in r.final for r in results)]
        print(compare.to_markdown(compare.summary_rows(results), ["run", "status", "step", *losses]))
        print(f"summary: {out / 'summary.md'}")
    failed = [r for r in results if r.status != "finished"]
    for r in failed:
        print(f"run {r.variant.label} {r.status}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_export_animation(args: argparse.Namespace) -> int:
    """``genex export-animation``: one frame per saved snapshot, with the step and the losses."""
    from explorer import animation

    fmt = args.format
    bar = None

    def on_frame(done: int, total: int) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="frame", desc="frames", dynamic_ncols=True, file=sys.stderr)
        bar.update(done - bar.n)

    try:
        result = animation.export(args.run, out=args.out, fmt=fmt, fps=args.fps, width=args.width, root=args.root, on_frame=on_frame)
    finally:
        if bar is not None:
            bar.close()
    note = "" if result.frames == result.snapshots else f" (of {result.snapshots} snapshots, evenly spaced)"
    print(f"wrote {result.path}: {result.frames} frames{note}, {result.size[0]}x{result.size[1]}, {result.bytes / 1024:,.0f} KiB")
    return 0


def build_parser(command: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    """The parser and each command's handler; with ``command``, only that external command's module is
    imported (the others are listed with their help line)."""
    parser = argparse.ArgumentParser(prog="genex", description="Generative Explorer: train and compare generative models from pipeline specs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    p = sub.add_parser("plugins", help="list installed components and plugins (and plugins that failed to load)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verbose", "-v", action="store_true", help="show tracebacks of plugins that failed")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 when a plugin failed to load (for plugin authors' CI)")
    handlers["plugins"] = _cmd_plugins

    p = sub.add_parser("run", help="train a pipeline spec (TOML or JSON) headless")
    p.add_argument("spec", help="path to a .toml or .json spec")
    p.add_argument("--steps", type=int, help="override the spec's steps")
    p.add_argument("--seed", type=int, help="override the spec's seed")
    p.add_argument("--device", help="auto, cpu, cuda or mps")
    p.add_argument("--out", help="run folder (default: $GENEX_RUNS_DIR or ./runs, then <timestamp>-<name>)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    handlers["run"] = _cmd_run

    p = sub.add_parser("runs", help="list runs in the runs folder")
    p.add_argument("--root", help="runs folder (default: $GENEX_RUNS_DIR or ./runs)")
    p.add_argument("--json", action="store_true")
    handlers["runs"] = _cmd_runs

    p = sub.add_parser("compare", help="train variants of one spec side by side and summarise them (explorer.compare)")
    p.add_argument("spec", help="the base spec (.toml or .json)")
    p.add_argument("--vary", action="append", default=[], metavar="FIELD=A,B",
                   help="a field and its values, e.g. objective=minimax,nonsaturating or optim.generator.lr=1e-3,1e-4 "
                        "(repeatable: the runs are the cartesian product)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant (the spec's seed, +1, ...); > 1 adds a mean ± standard error table")
    p.add_argument("--steps", type=int, help="override the spec's steps")
    p.add_argument("--device", help="auto, cpu, cuda or mps")
    p.add_argument("--out", help="output folder (default: <runs folder>/compare-<timestamp>-<name>)")
    p.add_argument("--jobs", type=int, help="runs trained at once (threads); default one after another "
                                            "(with --backend ray: runs in flight; default all, the cluster's resources decide)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local (default): train here; ray: each run a Ray task on a cluster (needs: pip install 'generative-explorer[ray]')")
    p.add_argument("--address", help="with --backend ray: the cluster's address (default: $GENEX_RAY_ADDRESS, else a local Ray instance)")
    p.add_argument("--vectorise", "--vectorize", action="store_true",
                   help="train the seeds of each variant as one batched model (torch.func.vmap): each seed still gets "
                        "its own run folder; pipelines that cannot be batched train their seeds one after another, with a note")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    handlers["compare"] = _cmd_compare

    p = sub.add_parser("export-animation", help="a run's saved snapshots as a GIF or MP4, one frame each with the step and the losses")
    p.add_argument("run", metavar="RUN", help="a run id in the runs folder (as `genex runs` prints it) or a run folder's path")
    p.add_argument("--format", choices=["gif", "mp4"], help="gif (default) or mp4 (needs: pip install 'generative-explorer[mp4]')")
    p.add_argument("--fps", type=float, default=4.0, help="frames per second (default 4)")
    p.add_argument("--width", type=int, default=1280, help="frame width in pixels; frames are 16:9 (default 1280: 1280x720)")
    p.add_argument("--out", help="output file, or a folder (default: <run folder>/<run name>.gif or .mp4)")
    p.add_argument("--root", help="runs folder RUN is looked up in (default: $GENEX_RUNS_DIR or ./runs)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    handlers["export-animation"] = _cmd_export_animation

    for name, (module, help_text) in EXTERNAL_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if command is not None and command != name:
            continue  # only the command asked for is imported (and configured): --help stays fast
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.configure(p)
        handlers[name] = mod.run
    return parser, handlers


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (its first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, handlers = build_parser(_command_of(argv))
    if _command_of(argv) == "app" and not {"-h", "--help"} & set(argv):
        # everything after `app` is Streamlit's (argparse would take `--server.port` for one of ours)
        args = argparse.Namespace(command="app", streamlit_options=argv[argv.index("app") + 1:])
    else:
        args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from explorer.device import configure_threads

    configure_threads()
    try:
        return handlers[args.command](args)
    except ExplorerError as exc:
        print(f"genex {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # only a plugin's code calls sys.exit() below this point
        print(f"genex {args.command}: error: a plugin's code called sys.exit({exc.code!r}) and ended this command early; "
              "see `genex plugins` for the plugins loaded, and GENEX_BLOCK_PLUGINS to leave one out", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
