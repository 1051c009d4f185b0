"""The plugin contract: four hooks, each given a ``register`` callback.

Call ``register(ComponentClass)`` once per component. The host validates each registration (the
base class, a kebab-case name, well-formed parameter declarations, no duplicate name) and records
which plugin registered what.
"""

import pluggy

hookspec = pluggy.HookspecMarker("generative_explorer")
hookimpl = pluggy.HookimplMarker("generative_explorer")

#: the component kinds, one per hook below
KINDS = ("sampler", "architecture", "objective", "metric")


@hookspec
def register_samplers(register):
    """Register Sampler subclasses: data distributions and latent priors."""


@hookspec
def register_architectures(register):
    """Register Architecture subclasses: builders of generator and discriminator networks."""


@hookspec
def register_objectives(register):
    """Register Objective subclasses: training losses (GAN games, MMD, ...)."""


@hookspec
def register_metrics(register):
    """Register Metric subclasses: numbers computed on snapshots of a run."""
