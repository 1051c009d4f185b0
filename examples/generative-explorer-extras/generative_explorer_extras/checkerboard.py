"""The `checkerboard` sampler: uniform on the dark squares of a board.

A 2-D toy with sharp edges and many disconnected pieces (a common density-estimation benchmark,
e.g. FFJORD, Grathwohl et al. 2019). Its density is known exactly, so D* and the divergences can be
drawn against it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from explorer import Param, Sampler


class Checkerboard(Sampler):
    """Uniform on the dark squares of an n x n board covering [-size, size]^2.

    Square (i, j) (column i, row j, counted from the lower left) is dark when i + j is even, so there
    are K = ceil(n^2 / 2) dark squares of side w = 2 size / n, and

        p(x) = 1 / (K w^2) on a dark square, 0 elsewhere.
    """

    name = "checkerboard"
    summary = "Uniform on the dark squares of a checkerboard (exact density, sharp edges)"
    params = (
        Param("squares", "int", 4, "squares per side of the board", low=2, high=32),
        Param("size", "float", 2.0, "the board covers [-size, size] in both coordinates", low=0.01, high=100.0),
    )

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.squares: int = self.config["squares"]
        self.size: float = self.config["size"]
        self.width = 2.0 * self.size / self.squares
        n = self.squares
        self.dark = torch.tensor([(i, j) for j in range(n) for i in range(n) if (i + j) % 2 == 0], dtype=torch.long)
        self.shape = (2,)
        pad = 0.05 * self.size
        self.bounds = ((-self.size - pad, self.size + pad),) * 2

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """Pick a dark square uniformly, then a uniform point inside it."""
        k = torch.randint(0, len(self.dark), (n,), generator=generator, device=device)
        corner = self.dark.to(device)[k].float() * self.width - self.size
        u = torch.rand(n, 2, generator=generator, device=device, dtype=torch.float32)
        return corner + u * self.width

    def cell_index(self, x: Tensor) -> Tensor:
        """The index (0..K-1) of the dark square holding each point ``[n, 2]``, or -1 off the dark squares."""
        ij = torch.floor((x.reshape(-1, 2) + self.size) / self.width).long()
        n = self.squares
        inside = ((ij >= 0) & (ij < n)).all(dim=1) & ((ij.sum(dim=1) % 2) == 0)
        # dark squares are numbered row by row, two per pair of columns: index = (j * n + i) // 2
        index = (ij[:, 1] * n + ij[:, 0]) // 2
        return torch.where(inside, index, torch.full_like(index, -1))

    def log_prob(self, x: Tensor) -> Tensor:
        """-log(K w^2) on a dark square, -inf elsewhere."""
        on_dark = self.cell_index(x) >= 0
        value = -math.log(len(self.dark) * self.width ** 2)
        return torch.where(on_dark, torch.full(on_dark.shape, value, dtype=x.dtype, device=x.device),
                           torch.full(on_dark.shape, -math.inf, dtype=x.dtype, device=x.device))
