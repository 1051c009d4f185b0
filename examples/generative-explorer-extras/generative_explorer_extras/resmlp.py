"""The `resmlp` architecture: an MLP whose hidden layers are residual blocks.

Skip connections keep gradients flowing through deep fully connected networks (He et al. 2016,
"Identity Mappings in Deep Residual Networks", arXiv:1603.05027, whose pre-activation block this
uses). Like the built-in `mlp` it flattens any input and reshapes its output, so it serves 1-D and
2-D toys as well as small images.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from torch import Tensor, nn

from explorer import Architecture, Param

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "leaky-relu": lambda: nn.LeakyReLU(0.2), "silu": nn.SiLU, "tanh": nn.Tanh,
}
OUTPUTS: dict[str, Callable[[], nn.Module] | None] = {"none": None, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class ResidualBlock(nn.Module):
    """x + W2 act(norm(W1 act(norm(x)))): the pre-activation residual block (He et al. 2016, Fig. 4e)."""

    def __init__(self, width: int, activation: str, norm: bool) -> None:
        super().__init__()
        norm_layer: Callable[[], nn.Module] = (lambda: nn.LayerNorm(width)) if norm else nn.Identity
        self.branch = nn.Sequential(
            norm_layer(), ACTIVATIONS[activation](), nn.Linear(width, width),
            norm_layer(), ACTIVATIONS[activation](), nn.Linear(width, width),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


class ResMLPNet(nn.Module):
    """Flatten -> Linear(d_in, width) -> residual blocks -> act -> Linear(width, d_out) -> reshape."""

    def __init__(self, d_in: int, out_shape: tuple[int, ...], width: int, blocks: int, activation: str,
                 norm: bool, output: Callable[[], nn.Module] | None) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = [nn.Linear(d_in, width)]                            # [n, width]
        layers += [ResidualBlock(width, activation, norm) for _ in range(blocks)]     # [n, width]
        layers += [ACTIVATIONS[activation](), nn.Linear(width, math.prod(out_shape))]  # [n, prod(out_shape)]
        if output is not None:
            layers.append(output())
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.reshape(x.shape[0], -1)).reshape(x.shape[0], *self.out_shape)


class ResMLP(Architecture):
    """A residual MLP for any input and output shape; the discriminator returns raw scores [n, 1]."""

    name = "resmlp"
    summary = "Residual MLP (pre-activation blocks, He et al. 2016): deeper fully connected G and D that still train"
    params = (
        Param("blocks", "int", 2, "residual blocks (each two Linear layers)", low=1, high=32),
        Param("width", "int", 128, "units per hidden layer", low=2, high=4096),
        Param("activation", "str", "relu", "nonlinearity (leaky-relu has slope 0.2)", choices=tuple(ACTIVATIONS)),
        Param("norm", "bool", False, "LayerNorm before each activation inside the blocks"),
        Param("output_activation", "str", "none",
              "generator only: none for unbounded data (the toys), tanh for images in [-1, 1], sigmoid for [0, 1]",
              choices=tuple(OUTPUTS)),
    )

    def supports(self, role: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> str | None:
        if not in_shape or not out_shape or min(in_shape) < 1 or min(out_shape) < 1:
            return f"resmlp needs non-empty shapes, got {tuple(in_shape)} -> {tuple(out_shape)}"
        return None

    def build(self, role: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
        c: dict[str, Any] = self.config
        output = OUTPUTS[c["output_activation"]] if role == "generator" else None
        return ResMLPNet(math.prod(in_shape), out_shape, c["width"], c["blocks"], c["activation"], c["norm"], output)
