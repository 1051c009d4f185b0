"""check_architecture and check_objective: networks that build, run and pass gradients; losses
that are finite, deterministic and differentiable where they must be."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from explorer.components import Architecture, Objective, normalise_loss
from explorer.testing._base import RESERVED_KEYS, _build, _Fail, _finite, _gen, _merged, _own_rng, _same_device

#: (role, in_shape, out_shape) an architecture is tried on; ``supports()`` may refuse some
SHAPES: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("generator", (2,), (2,)), ("generator", (1,), (1,)), ("generator", (16,), (1, 8, 8)),
    ("generator", (8,), (3, 16, 16)), ("discriminator", (2,), (1,)), ("discriminator", (1,), (1,)),
    ("discriminator", (1, 8, 8), (1,)), ("discriminator", (3, 16, 16), (1,)),
)



@_own_rng
def check_architecture(cls: type[Architecture], device: str | torch.device = "cpu",
                       shapes: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] | None = None,
                       params: Mapping[str, Any] | None = None, **kw: Any) -> None:
    """For each (role, in_shape, out_shape) it ``supports``: ``build`` returns an nn.Module that maps a
    float32 batch ``[n, *in]`` to finite float32 ``[n, *out]`` on ``device``, seeded builds are equal,
    every parameter gets a gradient, and a discriminator passes gradients back to its input."""
    fail, device = _Fail(cls), torch.device(device)
    params = _merged(params, kw)
    arch = _build(cls, params, fail)
    built = {"generator": 0, "discriminator": 0}
    for role, in_shape, out_shape in shapes or SHAPES:
        reason = arch.supports(role, in_shape, out_shape)
        fail.check(reason is None or (isinstance(reason, str) and reason.strip()),
                   f"supports() returned {reason!r}", "return None or a message saying why not")
        if reason:
            continue
        at = f"{role} {in_shape} -> {out_shape}"
        torch.manual_seed(0)
        net = arch.build(role, in_shape, out_shape)
        fail.check(isinstance(net, nn.Module), f"build({at}) returned {type(net).__name__}, not an nn.Module")
        torch.manual_seed(0)
        twin = arch.build(role, in_shape, out_shape)
        a, b = net.state_dict(), twin.state_dict()
        fail.check(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
                   f"two builds for {at} under the same torch.manual_seed differ",
                   "initialise weights from torch's global RNG (the pipeline seeds it) and nothing else")
        net.to(device).train()
        x = torch.randn(8, *in_shape, generator=_gen(0, device), device=device).requires_grad_(True)
        y = net(x)
        fail.check(isinstance(y, Tensor) and tuple(y.shape) == (8, *out_shape),
                   f"{at}: output shape {tuple(getattr(y, 'shape', ()))}, expected {(8, *out_shape)}",
                   "reshape the output to out_shape (a discriminator returns [n, 1] logits)")
        fail.check(y.dtype == torch.float32 and _same_device(y, device) and _finite(y),
                   f"{at}: output must be finite float32 on {device} (got {y.dtype} on {y.device})")
        y.float().square().mean().backward()
        trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        fail.check(trainable, f"{at}: the network has no trainable parameters")
        missing = [n for n, p in trainable if p.grad is None]
        fail.check(not missing, f"{at}: parameters {missing[:5]} get no gradient", "remove unused layers or detach calls")
        fail.check(all(_finite(p.grad) for _, p in trainable), f"{at}: non-finite gradients")
        fail.check(any(bool(p.grad.abs().sum() > 0) for _, p in trainable), f"{at}: every gradient is zero")
        if role == "discriminator":
            fail.check(x.grad is not None and _finite(x.grad) and bool(x.grad.abs().sum() > 0),
                       f"{at}: no gradient reaches the input", "the generator learns through D(G(z)): never detach the input")
        built[role] += 1
    fail.check(sum(built.values()), "supports() refuses every test shape",
               "pass shapes=[(role, in_shape, out_shape), ...] that it supports (check_plugin: shapes={name: [...]})")


class _Flat(nn.Module):
    def __init__(self, d_in: int, d_out: int, out_shape: tuple[int, ...], hidden: int = 0) -> None:
        super().__init__()
        self.out_shape = out_shape
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, d_out)) if hidden else nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], -1)).reshape(x.shape[0], *self.out_shape)


def _check_loss(out: Any, what: str, fail: _Fail) -> Tensor:
    try:
        loss, extras = normalise_loss(out, what)
    except (TypeError, ValueError) as exc:
        raise fail(str(exc), "return a scalar tensor, or (scalar, {name: scalar tensor})") from None
    fail.check(loss.is_floating_point() and _finite(loss), f"{what} is {loss.item()}", "keep losses finite (work on logits)")
    fail.check(loss.requires_grad, f"{what} does not require grad", "compute it from the network outputs without detaching")
    for k, v in extras.items():
        fail.check(isinstance(k, str) and k not in RESERVED_KEYS, f"{what} extra {k!r} is not a free name",
                   f"names {RESERVED_KEYS} are taken by the trainer")
        fail.check(isinstance(v, Tensor) and v.numel() == 1 and _finite(v.detach()), f"{what} extra {k!r} must be a finite scalar tensor")
    return loss


@_own_rng
def check_objective(cls: type[Objective], device: str | torch.device = "cpu",
                    params: Mapping[str, Any] | None = None, **kw: Any) -> None:
    """On 2-D points and on 1x8x8 images: ``discriminator_loss`` (when it needs D) is a finite scalar
    whose gradient reaches D's parameters only; ``generator_loss`` is a finite scalar whose gradient
    reaches the fake samples and G's parameters; both are deterministic under a seed; ``critic``
    returns None or one finite value per point."""
    fail, device = _Fail(cls), torch.device(device)
    params = _merged(params, kw)
    obj = _build(cls, params, fail)
    needs_d = obj.needs_discriminator

    def seeded_call(what: str, *args: Any) -> Any:
        """Call a loss as the trainer does: ``obj.generator`` seeded, torch's global stream off limits."""
        obj.generator = _gen(3, device)
        before = _global_states(device)
        out = getattr(obj, what)(*args)
        fail.check(all(torch.equal(a, b) for a, b in zip(before, _global_states(device))),
                   f"{what} drew from torch's global random stream",
                   "draw from self.generator (torch.rand(..., generator=self.generator)); the pipeline seeds it")
        return out

    for shape in ((2,), (1, 8, 8)):
        d = math.prod(shape)
        torch.manual_seed(0)
        G = _Flat(4, d, shape).to(device)
        D = _Flat(d, 1, (1,), hidden=16).to(device) if needs_d else None
        real = torch.randn(32, *shape, generator=_gen(1, device), device=device)
        z = torch.randn(32, 4, generator=_gen(2, device), device=device)
        if needs_d:
            with torch.no_grad():
                fake = G(z)
            loss = _check_loss(seeded_call("discriminator_loss", D, real, fake), "discriminator_loss", fail)
            loss.backward()
            grads = [p.grad for p in D.parameters()]
            fail.check(all(g is not None and _finite(g) for g in grads) and any(bool(g.abs().sum() > 0) for g in grads),
                       f"discriminator_loss {shape}: D's parameters get no (finite) gradient")
            fail.check(all(p.grad is None for p in G.parameters()), "discriminator_loss reached G's parameters")
            again, _ = normalise_loss(seeded_call("discriminator_loss", D, real, fake), "discriminator_loss")
            fail.check(torch.allclose(loss, again), "discriminator_loss differs between two calls under the same seed")
            D.zero_grad(set_to_none=True)
        fake = G(z)
        fake.retain_grad()
        loss = _check_loss(seeded_call("generator_loss", D, real, fake), "generator_loss", fail)
        loss.backward()
        fail.check(fake.grad is not None and _finite(fake.grad) and bool(fake.grad.abs().sum() > 0),
                   f"generator_loss {shape}: no gradient reaches the fake samples", "build the loss from fake (through D)")
        fail.check(all(p.grad is not None and _finite(p.grad) for p in G.parameters()),
                   f"generator_loss {shape}: G's parameters get no (finite) gradient")
        again, _ = normalise_loss(seeded_call("generator_loss", D, real, G(z)), "generator_loss")
        fail.check(torch.allclose(loss, again), "generator_loss differs between two calls under the same seed")
        if shape == (2,):
            pts = torch.randn(50, 2, generator=_gen(4, device), device=device)
            crit = obj.critic(D, pts, real, fake.detach())
            if crit is not None:
                fail.check(isinstance(crit, Tensor) and crit.numel() == 50 and _finite(crit.detach()),
                           "critic() must return None or one finite value per point")
    for attr in ("formula", "explanation", "critic_explanation", "critic_formula"):
        fail.check(isinstance(getattr(obj, attr, ""), str), f"{attr} must be a string")
    fail.check(bool(obj.explanation.strip() or cls.summary.strip()), "neither explanation nor summary says what it does",
               "set explanation: two or three sentences for the Train page")


def _global_states(device: torch.device) -> list[Tensor]:
    states = [torch.random.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states
