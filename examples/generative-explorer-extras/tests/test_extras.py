"""The package's own tests, as a plugin author writes them: the contract kit of explorer.testing and
a short training run (pytest examples/generative-explorer-extras/tests)."""

import generative_explorer_extras as plugin
from explorer.testing import check_component, check_plugin, check_training, registry_with
from generative_explorer_extras.checkerboard import Checkerboard


def test_every_component_honours_the_contract():
    check_plugin(plugin)


def test_a_finer_board_honours_it_too():
    check_component(Checkerboard, squares=9, size=0.5)


def test_the_extras_train_together():
    check_training({"data": "checkerboard", "generator": "resmlp", "discriminator": "resmlp", "objective": "hinge-gan",
                    "metrics": ["checkerboard-coverage", "nn-accuracy"]}, registry_with(plugin))
