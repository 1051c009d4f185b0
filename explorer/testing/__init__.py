"""Contract checks for plugin authors, in the spirit of scikit-learn's ``check_estimator``.

Call these from your package's own tests::

    from explorer.testing import check_component, check_plugin
    import generative_explorer_mything as plugin

    def test_every_component_honours_the_contract():
        check_plugin(plugin)                         # registers it, then checks every component

    def test_my_sampler_with_other_parameters():
        check_component(MySampler, squares=8)        # parameters go in as keywords

Each check builds the component (``cls(**params)``), exercises it the way the trainer does (on
``device``, with a seeded ``torch.Generator``) and raises ``AssertionError`` with a message that
says what to fix. They take a second or two each on a CPU. When a component parameter is called
``device`` (or another name a check uses), pass it in ``params={...}`` instead.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import torch

from explorer.components import KINDS, Component
from explorer.testing._base import _Fail, _merged, check_params
from explorer.testing.metrics import check_metric, reference_data
from explorer.testing.networks import check_architecture, check_objective
from explorer.testing.samplers import check_sampler


def _threads() -> None:
    """Honour ``GENEX_TORCH_THREADS`` (as the app and the CLI do): the checks train small networks,
    which many OpenMP threads on a shared machine slow down by an order of magnitude."""
    if os.environ.get("GENEX_TORCH_THREADS", "").isdigit():
        from explorer.device import configure_threads

        configure_threads()


_threads()

CHECKS = {"sampler": check_sampler, "architecture": check_architecture, "objective": check_objective, "metric": check_metric}


def check_component(cls: type[Component], device: str | torch.device = "cpu", params: Mapping[str, Any] | None = None,
                    **kw: Any) -> None:
    """The registration checks, then the check for its kind (``check_sampler``, ...)."""
    kind = getattr(cls, "kind", None)
    if kind not in KINDS:
        raise AssertionError(f"{cls!r} is not a component: subclass explorer.Sampler, Architecture, Objective or Metric")
    from explorer import contract

    try:
        contract.check_class(kind, cls)
    except (TypeError, ValueError) as exc:
        raise _Fail(cls)(f"the registry would reject it: {exc}") from None
    extra = {"data": kw.pop("data")} if kind == "metric" and "data" in kw else {}
    if kind == "architecture" and "shapes" in kw:
        extra["shapes"] = kw.pop("shapes")
    CHECKS[kind](cls, device=device, params=_merged(params, kw), **extra)


def check_plugin(plugin: Any, name: str | None = None, device: str | torch.device = "cpu",
                 params: Mapping[str, Mapping[str, Any]] | None = None,
                 shapes: Mapping[str, Any] | None = None) -> Any:
    """Register ``plugin`` (a module or object with hooks) in a fresh registry, require no load errors
    and no name clash with the installed plugins, and run :func:`check_component` on each component
    (``params`` maps a component name to the parameters to check it with; ``shapes`` maps an
    architecture's name to the ``[(role, in_shape, out_shape), ...]`` to build it for, instead of
    :data:`~explorer.testing.networks.SHAPES`).

    Returns the installed registry with this plugin in it (for :func:`check_training`).
    """
    from explorer.registry import Registry

    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    fresh = Registry()
    fresh.add_plugin(plugin, name=name)
    if fresh.errors:
        raise AssertionError("plugin failed to load:\n" + "\n".join(f"[{e.stage}] {e.message}\n{e.traceback}" for e in fresh.errors))
    mine = [info for kind in KINDS for info in fresh.components[kind].values()]
    if not mine:
        raise AssertionError(f"plugin {name!r} registered no components: call register(YourClass) in its hooks")
    installed = Registry().load_installed()
    for info in mine:
        other = installed.components[info.kind].get(info.name)
        if other is not None and (other.cls.__module__, other.cls.__qualname__) != (info.cls.__module__, info.cls.__qualname__):
            raise AssertionError(f"{info.kind} name {info.name!r} is already taken by plugin {other.source}: rename yours")
    installed = registry_with(plugin, name, installed)
    params = params or {}
    # Metrics are tried on the reference data sets and on this plugin's own samplers.
    samplers = [info.cls(**params.get(info.name, {})) for info in mine if info.kind == "sampler"]
    shapes = shapes or {}
    for info in mine:
        extra: dict[str, Any] = {"data": reference_data() + samplers} if info.kind == "metric" else {}
        if info.kind == "architecture" and info.name in shapes:
            extra["shapes"] = shapes[info.name]
        check_component(info.cls, device=device, params=params.get(info.name), **extra)
    return installed


def registry_with(plugin: Any, name: str | None = None, registry: Any = None) -> Any:
    """The installed plugins (``registry``, or ``Registry().load_installed()``) plus ``plugin`` when it is
    not installed yet (a package being developed from its folder): what :func:`check_training` needs."""
    from explorer.registry import Registry

    registry = registry if registry is not None else Registry().load_installed()
    module = getattr(plugin, "__name__", type(plugin).__module__)
    if not any(p.module == module for p in registry.plugins.values()):
        registry.add_plugin(plugin, name=name or module)
    return registry


def check_training(spec: Mapping[str, Any], registry: Any = None, steps: int = 20) -> Any:
    """Train ``spec`` (a raw spec dict, e.g. ``{"data": "my-sampler", "objective": "nonsaturating"}``)
    for ``steps`` steps in memory on the CPU, metrics included; require it to finish with finite
    losses. Returns the final :class:`~explorer.training.RunView`."""
    from explorer.pipeline import Pipeline
    from explorer.records import LOSS, record_kind
    from explorer.spec import parse_spec
    from explorer.training import Trainer, TrainerConfig

    raw = {"device": "cpu", "batch_size": 64, "log_every": max(1, steps // 2), "snapshot_every": steps,
           "metric_every": steps, "checkpoint_every": 0, "snapshot_size": 256, **dict(spec), "steps": steps}
    resolved = parse_spec(raw, registry)
    trainer = Trainer(Pipeline(resolved, registry), config=TrainerConfig(snapshot_hz=0))
    status = trainer.run()
    view = trainer.state.view()
    if status != "finished":
        raise AssertionError(f"training {spec!r} ended {status}: {view.error}")
    losses = [r for r in view.history if record_kind(r) == LOSS]
    if not losses or not all(math.isfinite(v) for r in losses for v in r.values() if isinstance(v, float)):
        raise AssertionError(f"training {spec!r} logged no finite losses: {losses}")
    return view


__all__ = ["check_component", "check_params", "check_sampler", "check_architecture", "check_objective", "check_metric",
           "check_plugin", "check_training", "registry_with", "reference_data"]
