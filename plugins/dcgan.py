"""The `dcgan` architecture: deep convolutional GAN networks (Radford, Metz, Chintala 2015).

Follows pytorch/examples' ``dcgan/main.py``, generalised from 64x64 to square images of side
8, 16, 32 or 64. The generator starts from a 4x4 map and doubles the side per transposed
convolution; the discriminator mirrors it with strided convolutions down to 4x4. Channel counts
scale so that the widest layer (next to 4x4) has ``ngf * 2**(blocks - 1)`` maps, where
``blocks = log2(side / 4)``: at 64x64 that is ngf*8, exactly the reference; at 8x8 digits it is
ngf, small enough to train quickly on a CPU.

Known-good settings from the paper and the reference code: Adam, lr 2e-4, beta1 0.5; nz 100;
ngf = ndf = 64; weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from explorer import Architecture, Param, SpecError, hookimpl
from explorer.components import Role

SIDES = (8, 16, 32, 64)


def weights_init(m: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02); BatchNorm weights N(1, 0.02), biases 0.

    Draws from torch's global RNG, which the host seeds before building the networks.
    """
    classname = type(m).__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """Latent ``[n, nz]`` -> image ``[n, nc, side, side]`` in [-1, 1] (Tanh output)."""

    def __init__(self, nz: int, ngf: int, nc: int, side: int) -> None:
        super().__init__()
        blocks = int(math.log2(side // 4))  # number of side doublings after the first 4x4 layer
        mult = 2 ** (blocks - 1)
        layers: list[nn.Module] = [
            # input is Z (nz x 1 x 1), going into a convolution
            nn.ConvTranspose2d(nz, ngf * mult, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * mult),
            nn.ReLU(True),
            # state size. (ngf*mult) x 4 x 4
        ]
        size = 4
        while mult > 1:
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * mult // 2),
                nn.ReLU(True),
            ]
            mult //= 2
            size *= 2
            # state size. (ngf*mult) x size x size  -- e.g. (ngf*2) x 16 x 16 at side 64
        layers += [
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
            # state size. (nc) x side x side
        ]
        assert size * 2 == side
        self.nz = nz
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Image ``[n, nc, side, side]`` -> raw logits ``[n, 1]`` (no sigmoid: losses use softplus)."""

    def __init__(self, ndf: int, nc: int, side: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            # input is (nc) x side x side
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x side/2 x side/2
        ]
        mult, size = 1, side // 2
        while size > 4:
            layers += [
                nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * mult * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            mult *= 2
            size //= 2
            # state size. (ndf*mult) x size x size  -- e.g. (ndf*8) x 4 x 4 at side 64
        layers += [
            nn.Conv2d(ndf * mult, 1, 4, 1, 0, bias=False),
            # state size. 1 x 1 x 1
        ]
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x).reshape(x.shape[0], 1)


class DCGAN(Architecture):
    """Radford et al. 2015 convolutional generator / discriminator for square images."""

    name = "dcgan"
    summary = "Deep convolutional GAN (Radford et al. 2015): transposed convs + BatchNorm, square images of side 8-64"
    params = (
        Param("ngf", "int", 64, "generator feature maps (the width of the last hidden layer; doubles towards the 4x4 input map)",
              low=1, high=1024),
        Param("ndf", "int", 64, "discriminator feature maps (the width of the first layer; doubles towards the 4x4 map)",
              low=1, high=1024),
    )

    def supports(self, role: Role, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> str | None:
        image = out_shape if role == "generator" else in_shape
        if len(image) != 3 or image[1] != image[2] or image[1] not in SIDES or image[0] < 1:
            got = "x".join(map(str, image))
            return (f"dcgan needs square images [C, H, W] with side 8, 16, 32 or 64, got {got}; "
                    "digits at 8x8 works; otherwise set the data's size (digits: upscale, image-folder: size) "
                    "to one of these sides, or use the mlp architecture")
        if role == "generator" and (len(in_shape) != 1 or in_shape[0] < 1):
            got = "x".join(map(str, in_shape))
            return (f"the dcgan generator needs a flat latent vector [nz], got {got}; "
                    "use a vector prior such as a 100-dimensional gaussian")
        if role == "discriminator" and tuple(out_shape) != (1,):
            return f"the dcgan discriminator outputs one logit, so out_shape must be (1,), got {tuple(out_shape)}"
        return None

    def build(self, role: Role, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
        """Build and initialise (N(0, 0.02), BN N(1, 0.02)) the network for ``role``."""
        reason = self.supports(role, in_shape, out_shape)
        if reason is not None:
            raise SpecError(role, reason)
        if role == "generator":
            net: nn.Module = DCGANGenerator(in_shape[0], self.config["ngf"], out_shape[0], out_shape[1])
        else:
            net = DCGANDiscriminator(self.config["ndf"], in_shape[0], in_shape[1])
        net.apply(weights_init)
        return net


@hookimpl
def register_architectures(register):
    register(DCGAN)
