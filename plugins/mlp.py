"""The `mlp` architecture: a fully connected network for any input and output shape.

It flattens its input, runs ``depth`` hidden layers (Linear -> optional norm -> activation) and
reshapes its output to ``out_shape``, so it serves 1-D and 2-D toys as well as small images. A
generator maps latent codes ``[n, *latent]`` to samples ``[n, *data]``; a discriminator maps samples
to raw logits ``[n, 1]`` (the objectives apply softplus to logits, never a sigmoid).
"""

from __future__ import annotations

import math
from typing import Callable

from torch import Tensor, nn

from explorer import Architecture, Param, hookimpl
from explorer.components import Role

#: activation name -> module factory (leaky-relu uses the GAN-customary slope 0.2, as in DCGAN's D)
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(),
    "leaky-relu": lambda: nn.LeakyReLU(0.2),
    "tanh": lambda: nn.Tanh(),
    "elu": lambda: nn.ELU(),
    "gelu": lambda: nn.GELU(),
    "silu": lambda: nn.SiLU(),
}

OUTPUT_ACTIVATIONS = {"none": None, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class MLPNet(nn.Module):
    """Flatten -> hidden layers -> Linear -> (output activation) -> reshape to ``out_shape``."""

    def __init__(self, body: nn.Sequential, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.body = body
        self.out_shape = tuple(out_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.reshape(x.shape[0], -1)).reshape(x.shape[0], *self.out_shape)


class MLP(Architecture):
    """A multilayer perceptron (the networks of Goodfellow et al. 2014 and GMMN, Li et al. 2015)."""

    name = "mlp"
    summary = "Fully connected network: flattens any input, reshapes the output (vectors, 2-D toys, small images)"
    params = (
        Param("depth", "int", 2, "number of hidden layers", low=1, high=16),
        Param("width", "int", 128, "units per hidden layer", low=1, high=4096),
        Param("activation", "str", "relu", "hidden-layer nonlinearity (leaky-relu has slope 0.2)",
              choices=tuple(ACTIVATIONS)),
        Param("norm", "str", "none", "normalisation after each hidden Linear: none, batch (BatchNorm1d) or layer (LayerNorm)",
              choices=("none", "batch", "layer")),
        Param("output_activation", "str", "none",
              "generator only (the discriminator always outputs raw logits): none for unbounded data such as "
              "the 1-D and 2-D toys; tanh for images scaled to [-1, 1]; sigmoid for data in [0, 1]",
              choices=tuple(OUTPUT_ACTIVATIONS)),
    )

    def supports(self, role: Role, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> str | None:
        if not in_shape or not out_shape or min(in_shape) < 1 or min(out_shape) < 1:
            return f"mlp needs non-empty input and output shapes, got {tuple(in_shape)} -> {tuple(out_shape)}"
        return None

    def build(self, role: Role, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
        """Build the network for ``role``; for a discriminator ``out_shape`` is ``(1,)`` (logits)."""
        cfg = self.config
        d_in, d_out, width = math.prod(in_shape), math.prod(out_shape), cfg["width"]
        layers: list[nn.Module] = []
        for i in range(cfg["depth"]):
            layers.append(nn.Linear(d_in if i == 0 else width, width))
            if cfg["norm"] == "batch":
                layers.append(nn.BatchNorm1d(width))
            elif cfg["norm"] == "layer":
                layers.append(nn.LayerNorm(width))
            layers.append(ACTIVATIONS[cfg["activation"]]())
        layers.append(nn.Linear(width, d_out))
        out_act = OUTPUT_ACTIVATIONS[cfg["output_activation"]]
        if role == "generator" and out_act is not None:
            layers.append(out_act())
        return MLPNet(nn.Sequential(*layers), out_shape)


@hookimpl
def register_architectures(register):
    register(MLP)
