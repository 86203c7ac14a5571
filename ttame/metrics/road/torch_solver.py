"""ROAD's imputation solver in torch: all systems of a batch at once, on the images' device.

Multigrid-preconditioned conjugate gradients to a certified max abs error: the system, the
hierarchy, the certificate and why they are built so are in docs/road.md. This solver serves
GPUs; on the CPU, :mod:`ttame.metrics.road.cpu_solver` solves the same systems faster.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ttame.metrics.road.constants import Z_RESIDUAL
from ttame.metrics.road.torch_grids import Grid, build, stencil


def _vcycle(grid: Grid, r: torch.Tensor) -> torch.Tensor:
    """Symmetric V(1,1) cycle with Jacobi smoothing (r is zero outside the unknown pixels)."""
    if grid.coarse is None:
        return grid.solve_dense(r)
    c = r.shape[1]
    z = torch.mul(grid.dinv, r, out=grid.buffer("z", c))
    res = grid.residual(r, z, grid.buffer("res", c))
    e = _vcycle(grid.coarse, grid.restrict(res))
    z.addcmul_(grid.prolong(e), grid.m)
    grid.residual(r, z, res)
    return z.addcmul_(grid.dinv, res)


def _precondition(top: Grid, r: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Two-level additive step on the fine grid (Jacobi + coarse V-cycle), multiplicative below.

    The fine grid dominates the cost; the additive form spends no stencil there.
    """
    if top.coarse is None:
        return out.copy_(top.solve_dense(r))
    torch.mul(top.dinv, r, out=out)
    e = _vcycle(top.coarse, top.restrict(r))
    return out.addcmul_(top.prolong(e), top.m)


def _amax(x: torch.Tensor) -> torch.Tensor:
    """Per-system max |x| over the pixels: B x C x h x w -> B x C x 1 x 1."""
    return torch.maximum(x.amax((-2, -1), keepdim=True), -x.amin((-2, -1), keepdim=True))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-system dot products over the pixels: B x C x h x w -> B x C x 1 x 1."""
    return torch.linalg.vecdot(a.flatten(-2), b.flatten(-2))[..., None, None]


_REFRESH = 1e-3  # recompute the float64 residual when the float32 one shrank by this much


def _active(done: torch.Tensor) -> int:
    """How many leading channels still need iterating: those up to the last one not done."""
    pending = (~done).flatten().nonzero()
    return int(pending[-1]) + 1 if len(pending) else 0


def _cg(
    top: Grid,
    fine64: Grid,
    b: torch.Tensor,
    x: torch.Tensor,
    targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_iter: int,
) -> torch.Tensor:
    """Solve A x = b in place until max |b - A x| <= targets(x, b - A x) for every system.

    Returns the last float64 residual b - A x (B x C x h x w). Multigrid-preconditioned
    conjugate gradients in float32; x and the residuals that decide convergence are float64.
    The float32 steps are summed in dx. When the float32 residual says the targets are met, or
    has shrunk by `_REFRESH` since the float64 one was last computed, or says the last channel
    meets its target, dx moves into x, the float32 residual is replaced by the true one (which
    keeps CG converging past float32 precision) and the targets are updated. Trailing channels
    that meet their targets stop there (their x and residual stay as they were), which saves
    their share of the work.
    """
    c = b.shape[1]
    r64 = fine64.residual(b, x, fine64.buffer("r", c))
    synced = _amax(r64)
    target = targets(x, r64)
    active = _active((synced <= target).all(0))
    if not active:
        return r64
    r = r64[:, :active].to(top.dtype)
    p = _precondition(top, r, torch.empty_like(r))
    rz = _dot(r, p)
    dx = torch.zeros_like(r)
    tiny = torch.finfo(top.dtype).tiny
    for _ in range(max_iter):
        ap = top.apply(p, top.buffer("ap", active))
        alpha = rz / _dot(p, ap).clamp_min(tiny)
        dx.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1.0)
        rinf = _amax(r)
        met = rinf <= target[:, :active]
        if (met | (rinf <= _REFRESH * synced[:, :active])).all() or met[:, -1].all():
            x[:, :active] += dx.to(x.dtype)
            dx.zero_()
            fine64.residual(b[:, :active], x[:, :active], r64[:, :active])
            synced = _amax(r64)
            target = targets(x, r64)
            now = _active((synced <= target).all(0))
            if not now:
                return r64
            active = min(active, now)
            r, p, rz, dx = r[:, :active], p[:, :active], rz[:, :active], dx[:, :active]
            r.copy_(r64[:, :active])
        z = _precondition(top, r, top.buffer("z", active))
        rz_new = _dot(r, z)
        torch.addcmul(z, rz_new / rz.clamp_min(tiny), p, out=p)
        rz = rz_new
    x[:, :active] += dx.to(x.dtype)
    fine64.residual(b[:, :active], x[:, :active], r64[:, :active])
    return r64


def _inverse_norm_bound(z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Upper bounds of ||A^-1||_inf (B x 1 x 1 x 1) from z and r = 1 - A z (B x 1 x h x w).

    A is an M-matrix, so A^-1 >= 0 and ||A^-1||_inf = max(A^-1 1). If A z >= mu > 0, then
    A^-1 1 <= z / mu (A^-1 (A z / mu - 1) >= 0), so max(z) / mu bounds the norm; mu is
    1 - max(r), with r computed in float64. Infinite while z is too rough to certify anything.
    """
    mu = 1 - r.amax((-2, -1), keepdim=True)
    return torch.where(mu > 0, z.amax((-2, -1), keepdim=True) / mu, torch.inf)


def solve(
    values: torch.Tensor, unknown: torch.Tensor, system: torch.Tensor, tol: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fill of the unknown pixels (B x 1 x H x W) of values (B x C x H x W).

    Images with the same ``system`` index (B, values 0 ... S - 1) are solved as one system on
    the union of their unknown pixels, which must be nowhere 8-adjacent (see `pairs`): no
    stencil couples them, so the union's solution is each one's, from its own data. Every image
    must have a known pixel.

    Returns the fill (B x C x H x W in the values' dtype, zero on the known pixels), the
    certified bound of the max abs error of each image and channel (B x C x 1 x 1):
    ||A^-1||_inf * max|b - A x| plus the rounding to the values' dtype, and the bound of
    ||A^-1||_inf of each system (S x 1 x 1 x 1). The channels are solved together with an
    extra one, A z = 1, whose z bounds ||A^-1||_inf (see `_inverse_norm_bound`), so the
    residual that certifies tol, tol / ||A^-1||_inf, is known as soon as z is good enough.
    """
    systems = int(system.max()) + 1
    m = unknown.double()
    known = values.double() * ~unknown
    b = stencil(known, torch.empty_like(known), torch.empty_like(known)).mul_(m / 12)
    # Start from the mean of the known pixels: it removes the constant part of the error.
    count = (~unknown).sum((-2, -1), keepdim=True)
    x = known.sum((-2, -1), keepdim=True) / count * m

    def merge(t: torch.Tensor) -> torch.Tensor:
        return t.new_zeros(systems, *t.shape[1:]).index_add_(0, system, t)

    union = merge(m) > 0
    top = build(union, torch.float32)
    fine64 = Grid(union, top.inside, torch.float64)
    b = torch.cat([merge(b), fine64.m], 1)
    x = torch.cat([merge(x), torch.zeros_like(fine64.m)], 1)

    def targets(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        norm = _inverse_norm_bound(x[:, -1:], r[:, -1:])
        return torch.cat(
            [(tol / norm).expand_as(x[:, :-1, :1, :1]), torch.full_like(norm, Z_RESIDUAL)], 1
        )

    r = _cg(top, fine64, b, x, targets, max_iter)
    norm = _inverse_norm_bound(x[:, -1:], r[:, -1:])
    fill = (x[system, :-1] * m).to(values.dtype)
    residual = _amax(r[system, :-1] * m)
    rounding = torch.finfo(values.dtype).eps * _amax(fill).double()
    bound = torch.where(residual > 0, residual * norm[system], 0.0) + rounding
    return fill, bound, norm


def pairs(unknown: torch.Tensor) -> list[list[int]]:
    """Groups of one or two images (B x 1 x H x W unknown) to solve as one system each.

    Two images pair when their unknown pixels are nowhere 8-adjacent, so no stencil couples
    them, and one solve on the union costs about what one costs. Of a ROAD set (MoRF and LeRF
    at 10 ... 90 %), MoRF at f pairs with LeRF at g when f + g leaves a band of kept pixels
    between them: the 14 imputations take 8 solves. Largest first, each with the largest one it
    may pair with.
    """
    flat = unknown.flatten(1).float()
    near = stencil(unknown.float(), *torch.empty((2, *unknown.shape), device=unknown.device))
    near = near.flatten(1)
    touching = ((near @ flat.T) > 0).tolist()
    order = flat.sum(1).argsort(descending=True).tolist()
    free = set(order)
    groups = []
    for i in order:
        if i in free:
            free.discard(i)
            partner = next((j for j in order if j in free and not touching[i][j]), None)
            groups.append([i] if partner is None else [i, partner])
            free.discard(partner)
    return groups
