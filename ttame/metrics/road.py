"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci; ICML 2022).

Remove a fraction of the pixels ranked by a saliency map, fill them by *noisy linear
imputation*, and count how often the classifier still predicts the same class. MoRF removes
the most relevant pixels first (a good map makes accuracy drop fast: lower is better), LeRF
the least relevant first (higher is better).

Imputation: the convention of the authors' ``NoisyLinearImputer`` (road_evaluation, also
shipped as ``pytorch_grad_cam.metrics.road``), which we follow exactly:

- every removed pixel p of a channel satisfies ``W_p x_p = sum_q w_q x_q`` over its 8
  neighbours q inside the image, with ``w = 1/6`` for the 4 axial and ``1/12`` for the 4
  diagonal neighbours and ``W_p`` the sum of those weights (so the mean is renormalised at
  the image border); removed neighbours are unknowns, kept ones are data. All removed pixels
  are solved jointly, one system per image, the same system for every channel;
- then ``noise * N(0, 1)`` is added to every removed pixel of every channel, independently;
  the result is not clipped to [0, 1];
- it is applied to raw images in [0, 1], before the classifier's normalisation, as in the
  authors' benchmark (pytorch-grad-cam applies it to whatever tensor it is given).

Where we differ:

- the reference factorises one sparse matrix per image on the CPU (SciPy ``spsolve``); we
  solve iteratively, on the input's device, to a *certified* max abs error (``tol``, 1e-3 by
  default) against the exact solution;
- an image with every pixel removed makes the reference's system singular (every constant
  solves it); we fill each channel with that image's mean of the channel, the constant
  nearest to the removed content. That is the only case in which a removed region touches
  no kept pixel: any other 8-connected region of removed pixels borders a kept pixel;
- ``removal_masks`` removes ``floor(fraction * H * W)`` pixels as the reference does, but
  breaks only exact ties at random, where the reference adds N(0, 1e-4^2) to the min-max
  normalised map and so also reorders values closer than about 1e-4. Both curves are indexed
  by the fraction *removed* (the reference's LeRF dataset takes the fraction kept).

Solver: conjugate gradients on the symmetric positive definite system ``A x = b`` (A is the
masked stencil ``W - N``, an M-matrix), preconditioned by geometric multigrid: cell-centred
2x coarsening, a coarse cell being unknown when any of its children is; the same stencil on
each grid, its diagonal raised by part of the coupling to known values that the coarse cells
miss (see `_build`); bilinear prolongation that replicates at the image border and its exact
adjoint as restriction; Jacobi smoothing; a dense inverse on the coarsest grid. CG starts from
the mean of the kept pixels; the preconditioner works in float32, the solution and the
residuals that decide convergence are float64. Two implementations of it, one per device:

- on a GPU, this module's torch code solves all systems as one batch: V(1,1) cycles below the
  fine grid and an additive (Jacobi + coarse correction) step on the fine grid, which costs no
  stencil there; grids of at most 64 pixels a side use small matrix products instead of
  shifted adds (fewer kernel launches); the coarsest grid has at most 16 x 16 cells; CG is
  float32 and its residual is replaced by the true float64 one as it goes. About 11
  iterations certify a 224 x 224 fill;
- on the CPU, `road_cpu` (compiled with Numba, because torch's per-op cost makes this solve
  several times slower there) solves one system and one channel at a time, each channel
  stopping at its own iteration count, with a full V(1,1) cycle from the fine grid down to at
  most 8 x 8 cells: about 8 iterations per channel.

Two images whose removed pixels are nowhere 8-adjacent are solved as one system on the union
of their removed pixels (no stencil couples them, so the system is block diagonal, and one
solve costs what one of them costs): of a ROAD's 14 imputations, MoRF at f and LeRF at g pair
whenever a band of kept pixels separates them, and the 14 take 8 solves (`_pairs`).

Certificate: A^-1 >= 0 elementwise, so the error of x obeys ``max|x - x*| <= ||A^-1||_inf *
max|b - A x|`` and ``||A^-1||_inf = max(A^-1 1)``. A vector z with ``A z >= mu > 0`` (checked in
float64) bounds ``A^-1 1 <= z / mu``. z is solved as one more right-hand side ``A z = 1`` (with
the channels on a GPU, before them on the CPU) and stops once ``A z >= 0.9`` (its bound is then
within 11 %); the channels stop when ``||A^-1||_inf`` times their float64 residual is at most
tol. ``||A^-1||_inf`` reaches tens of thousands for large removed regions (it grows with the
squared distance to the nearest kept pixel), so the residual must fall to ~1e-8. A bound from
``|b - A x|`` cannot use the cancellation between residuals of opposite signs, and is 100-1000x
above the actual error once CG has converged: certifying 1e-3 takes about twice the iterations
that an uncertified 1e-3 would, and the fills typically end within 1e-5. We keep the guarantee
and make the iterations cheap instead.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ttame.metrics import road_cpu
from ttame.metrics.road_cpu import ROW_SUM_SHARE, Z_RESIDUAL

_COARSEST = 16  # coarsen until both sides are at most this, then solve densely
_MATMUL_SIDE = 64  # grids this small apply their stencil as two small matrix products


def _pair_sum(x: torch.Tensor, dim: int, out: torch.Tensor) -> torch.Tensor:
    """out[i] = x[i - 1] + x[i + 1] along dim, zero padded."""
    n = x.shape[dim]
    if n == 1:
        return out.zero_()
    torch.add(x.narrow(dim, 0, n - 2), x.narrow(dim, 2, n - 2), out=out.narrow(dim, 1, n - 2))
    out.narrow(dim, 0, 1).copy_(x.narrow(dim, 1, 1))
    out.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 2, 1))
    return out


def _stencil(x: torch.Tensor, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Return ([1,2,1] x [1,2,1]) * x, zero padded, in u (t is scratch).

    That is 12 times the weighted sum of the 8 neighbours plus 4 times x itself: two separable
    passes instead of eight shifted adds.
    """
    _pair_sum(x, -1, t).add_(x, alpha=2.0)
    return _pair_sum(t, -2, u).add_(t, alpha=2.0)


def _tridiagonal(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The n x n matrix of [1, 2, 1] with zero padding: `_stencil` is T_h @ x @ T_w."""
    ones = torch.ones(n - 1, dtype=dtype, device=device)
    return torch.diag(ones, 1) + torch.diag(ones, -1) + 2 * torch.eye(n, dtype=dtype,
                                                                      device=device)


def _linear_upsampling(coarse: int, fine: int, dtype: torch.dtype,
                       device: torch.device) -> torch.Tensor:
    """The fine x coarse matrix of linear upsampling by 2: `_prolong_axis` as a matrix.

    Cell-centred (weights 3/4, 1/4), replicating at the border, cropped to fine rows.
    """
    rows = torch.arange(fine, device=device)
    near = rows // 2
    far = (near + torch.where(rows % 2 == 1, 1, -1)).clamp(0, coarse - 1)
    p = torch.zeros(fine, coarse, dtype=dtype, device=device)
    p[rows, near] += 0.75
    p[rows, far] += 0.25
    return p


class _Grid:
    """The masked 8-neighbour operator on one grid of the multigrid hierarchy, plus buffers.

    Small grids, where the cost of a torch call outweighs its work, use small dense matrices:
    their stencil is T_h @ x @ T_w, and the transfers to and from their coarser grid are products
    with the 1-D linear upsampling matrices.
    """

    def __init__(self, unknown: torch.Tensor, inside: torch.Tensor, dtype: torch.dtype) -> None:
        # unknown, inside: B x 1 x h x w bool; unknown implies inside.
        self.shape = unknown.shape[-2:]
        self.unknown = unknown
        self.inside = inside
        self.dtype = dtype
        device = unknown.device
        m = unknown.to(dtype)
        ins = inside.to(dtype)
        self.tri: tuple[torch.Tensor, torch.Tensor] | None = None
        if max(self.shape) <= _MATMUL_SIDE:
            self.tri = tuple(_tridiagonal(n, dtype, device) for n in self.shape)
        self._buffers: dict[tuple, torch.Tensor] = {}
        # Weight of the neighbours inside the image (the reference's `sum_neighbors`).
        weight = self.neighbours(ins).clone() / 12 - ins / 3
        self.m = m
        self.m12 = m / 12
        self.c = m * (weight + 1 / 3)
        self.weight = weight
        self.dinv = torch.where(unknown, 1 / weight.clamp_min(1e-6), 0.0).to(dtype)
        self.coarse: _Grid | None = None
        self.up: tuple[torch.Tensor, torch.Tensor] | None = None  # to this grid from coarse
        self.inverse: torch.Tensor | None = None

    def add_diagonal(self, extra: torch.Tensor) -> None:
        """Add extra (B x 1 x h x w, zero off the unknown cells) to the operator's diagonal."""
        self.c = self.c + extra
        self.dinv = torch.where(self.unknown, 1 / (self.m * self.weight + extra).clamp_min(1e-6),
                                0.0).to(self.dtype)

    def buffer(self, name: str, channels: int) -> torch.Tensor:
        """A reusable B x channels x h x w work array (no allocation per iteration)."""
        return self.scratch(name, (self.unknown.shape[0], channels, *self.shape))

    def scratch(self, name: str, size: tuple[int, ...]) -> torch.Tensor:
        """A reusable work array of any size."""
        key = (name, size)
        if key not in self._buffers:
            self._buffers[key] = torch.empty(size, dtype=self.dtype, device=self.unknown.device)
        return self._buffers[key]

    def neighbours(self, x: torch.Tensor) -> torch.Tensor:
        """The stencil sum of x (see `_stencil`), in a buffer."""
        c = x.shape[1]
        t, u = self.buffer("t", c), self.buffer("u", c)
        if self.tri is not None:
            return torch.matmul(torch.matmul(self.tri[0], x, out=t), self.tri[1], out=u)
        return _stencil(x, t, u)

    def apply(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Write A x into out, for x zero outside the unknown pixels (out is zero there too)."""
        u = self.neighbours(x)
        torch.mul(self.c, x, out=out)
        return out.addcmul_(self.m12, u, value=-1.0)

    def residual(self, b: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Write b - A x into out (x zero outside the unknown pixels)."""
        u = self.neighbours(x)
        torch.addcmul(b, self.c, x, value=-1.0, out=out)
        return out.addcmul_(self.m12, u)

    def restrict(self, x: torch.Tensor) -> torch.Tensor:
        """Restrict x to the coarse grid: the exact adjoint of `prolong`, masked there."""
        coarse = self.coarse
        assert coarse is not None
        b, c = x.shape[:2]
        if self.up is None:
            y = _restrict(x, self, coarse.buffer("restricted", c))
        else:
            half = self.scratch("down", (b, c, coarse.shape[0], self.shape[1]))
            y = torch.matmul(torch.matmul(self.up[0].T, x, out=half), self.up[1],
                             out=coarse.buffer("restricted", c))
        return y.mul_(coarse.m)

    def prolong(self, x: torch.Tensor) -> torch.Tensor:
        """Cell-centred bilinear upsampling by 2 from the coarse grid (unmasked)."""
        if self.up is None:
            return _prolong(x, self)
        b, c = x.shape[:2]
        half = self.scratch("up", (b, c, self.shape[0], x.shape[-1]))
        return torch.matmul(torch.matmul(self.up[0], x, out=half), self.up[1].T,
                            out=self.buffer("prolonged", c))

    def solve_dense(self, r: torch.Tensor) -> torch.Tensor:
        """A^-1 r on the coarsest grid, by its explicit inverse (identity on known cells)."""
        return torch.bmm(r.flatten(-2), self.inverse).view(r.shape).mul_(self.m)


def _restrict_axis(x: torch.Tensor, dim: int, out: torch.Tensor) -> torch.Tensor:
    """Into out: the unnormalised adjoint of `_prolong_axis` along dim (even size).

    That is [1,3,3,1]/3 with stride 2, folding the border as replication does.
    """
    pairs = x.unflatten(dim, (-1, 2))
    e = pairs.select(dim, 0)
    o = pairs.select(dim, 1)
    y = torch.add(e, o, out=out)
    n = y.shape[dim]
    y.narrow(dim, 1, n - 1).add_(o.narrow(dim, 0, n - 1), alpha=1 / 3)
    y.narrow(dim, 0, n - 1).add_(e.narrow(dim, 1, n - 1), alpha=1 / 3)
    y.narrow(dim, 0, 1).add_(e.narrow(dim, 0, 1), alpha=1 / 3)
    y.narrow(dim, n - 1, 1).add_(o.narrow(dim, n - 1, 1), alpha=1 / 3)
    return y


def _restrict(x: torch.Tensor, fine: _Grid, out: torch.Tensor) -> torch.Tensor:
    """Into out: the exact adjoint of `_prolong` (zero-pad to even size, [1,3,3,1]/4 per axis)."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        padded = fine.scratch("padded", (b, c, h + h % 2, w + w % 2))
        padded[..., h:, :] = 0
        padded[..., w:] = 0
        padded[..., :h, :w] = x
        x = padded
    half = fine.scratch("rows", (b, c, out.shape[-2], x.shape[-1]))
    return _restrict_axis(_restrict_axis(x, -2, half), -1, out).mul_(0.5625)


def _prolong_axis(x: torch.Tensor, dim: int, out: torch.Tensor, d: torch.Tensor,
                  ) -> torch.Tensor:
    """Linear upsampling by 2 along dim into out, cell-centred (weights 3/4, 1/4).

    The border is replicated: even[i] = x[i] - (x[i] - x[i-1]) / 4, odd[i] = x[i] +
    (x[i+1] - x[i]) / 4; d is scratch for the differences.
    """
    n = x.shape[dim]
    pairs = out.unflatten(dim, (n, 2))
    even = pairs.select(dim, 0)
    odd = pairs.select(dim, 1)
    if n == 1:
        even.copy_(x)
        return odd.copy_(x)
    d = torch.sub(x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1), out=d)
    torch.add(x.narrow(dim, 1, n - 1), d, alpha=-0.25, out=even.narrow(dim, 1, n - 1))
    even.narrow(dim, 0, 1).copy_(x.narrow(dim, 0, 1))
    torch.add(x.narrow(dim, 0, n - 1), d, alpha=0.25, out=odd.narrow(dim, 0, n - 1))
    odd.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 1, 1))
    return out


def _prolong(x: torch.Tensor, fine: _Grid) -> torch.Tensor:
    """Cell-centred bilinear upsampling by 2 (replicating at the border), cropped to fine."""
    b, c, h, w = x.shape
    wide = fine.scratch("wide", (b, c, h, 2 * w))
    _prolong_axis(x, -1, wide, fine.scratch("dw", (b, c, h, w - 1)))
    full = fine.scratch("full", (b, c, 2 * h, 2 * w))
    _prolong_axis(wide, -2, full, fine.scratch("dh", (b, c, h - 1, 2 * w)))
    return full[..., : fine.shape[0], : fine.shape[1]]


def _any2x2(x: torch.Tensor) -> torch.Tensor:
    """Whether any of the 2 x 2 children of each coarse cell is set (even-sized bool input)."""
    return x.unflatten(-1, (-1, 2)).any(-1).unflatten(-2, (-1, 2)).any(-2)


def _build(unknown: torch.Tensor, dtype: torch.dtype) -> _Grid:
    """Multigrid hierarchy: a coarse cell is unknown when any of its children is.

    The coarse operator is the fine stencil rediscretised on the coarse cells, which treats a
    cell with some known children as wholly unknown and so couples it too weakly to the known
    values. Its diagonal gets `ROW_SUM_SHARE` of the difference between the Galerkin operator
    R A P and itself on the constant vector (the missing coupling): that share took the fewest
    iterations on photos with blob-shaped and scattered masks (23 % fewer than the unmodified
    rediscretisation with a cell unknown only when all its children are).
    """
    top = grid = _Grid(unknown, torch.ones_like(unknown), dtype)
    while max(grid.shape) > _COARSEST:
        h, w = grid.shape
        pad = (0, w % 2, 0, h % 2)
        coarse = grid.coarse = _Grid(_any2x2(F.pad(grid.unknown, pad)),
                                     _any2x2(F.pad(grid.inside, pad)), dtype)
        if grid.tri is not None or max(grid.shape) <= 2 * _MATMUL_SIDE:
            grid.up = tuple(_linear_upsampling(nc, n, dtype, unknown.device)
                            for nc, n in zip(coarse.shape, grid.shape, strict=True))
        ones = coarse.m
        fine = grid.prolong(ones).mul(grid.m)
        galerkin = grid.restrict(grid.apply(fine, torch.empty_like(fine)))
        deficit = galerkin - coarse.apply(ones, torch.empty_like(ones))
        coarse.add_diagonal(deficit.clamp_min(0) * ROW_SUM_SHARE)
        grid = coarse
    _invert_dense(grid)
    return top


def _invert_dense(grid: _Grid) -> None:
    """The inverse of the coarsest operator (identity rows on the known cells), transposed."""
    b = grid.m.shape[0]
    h, w = grid.shape
    n = h * w
    eye = torch.eye(n, dtype=grid.dtype, device=grid.m.device).reshape(1, n, h, w)
    basis = eye * grid.m
    cols = grid.apply(basis, torch.empty_like(basis)).reshape(b, n, n)
    dense = cols.transpose(1, 2) + torch.diag_embed(1 - grid.m.reshape(b, n))
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(dense.double()))
    grid.inverse = inverse.transpose(1, 2).to(grid.dtype)


def _vcycle(grid: _Grid, r: torch.Tensor) -> torch.Tensor:
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


def _precondition(top: _Grid, r: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
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


def _cg(top: _Grid, fine64: _Grid, b: torch.Tensor, x: torch.Tensor,
        targets: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], max_iter: int,
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




def _solve(values: torch.Tensor, unknown: torch.Tensor, system: torch.Tensor, tol: float,
           max_iter: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fill of the unknown pixels (B x 1 x H x W) of values (B x C x H x W).

    Images with the same ``system`` index (B, values 0 ... S - 1) are solved as one system on
    the union of their unknown pixels, which must be nowhere 8-adjacent (see `_pairs`): no
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
    b = _stencil(known, torch.empty_like(known), torch.empty_like(known)).mul_(m / 12)
    # Start from the mean of the known pixels: it removes the constant part of the error.
    count = (~unknown).sum((-2, -1), keepdim=True)
    x = known.sum((-2, -1), keepdim=True) / count * m

    def merge(t: torch.Tensor) -> torch.Tensor:
        return t.new_zeros(systems, *t.shape[1:]).index_add_(0, system, t)

    union = merge(m) > 0
    top = _build(union, torch.float32)
    fine64 = _Grid(union, top.inside, torch.float64)
    b = torch.cat([merge(b), fine64.m], 1)
    x = torch.cat([merge(x), torch.zeros_like(fine64.m)], 1)

    def targets(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        norm = _inverse_norm_bound(x[:, -1:], r[:, -1:])
        return torch.cat([(tol / norm).expand_as(x[:, :-1, :1, :1]),
                          torch.full_like(norm, Z_RESIDUAL)], 1)

    r = _cg(top, fine64, b, x, targets, max_iter)
    norm = _inverse_norm_bound(x[:, -1:], r[:, -1:])
    fill = (x[system, :-1] * m).to(values.dtype)
    residual = _amax(r[system, :-1] * m)
    rounding = torch.finfo(values.dtype).eps * _amax(fill).double()
    bound = torch.where(residual > 0, residual * norm[system], 0.0) + rounding
    return fill, bound, norm


def _pairs(unknown: torch.Tensor) -> list[list[int]]:
    """Groups of one or two images (B x 1 x H x W unknown) to solve as one system each.

    Two images pair when their unknown pixels are nowhere 8-adjacent, so no stencil couples
    them, and one solve on the union costs about what one costs. Of a ROAD set (MoRF and LeRF
    at 10 ... 90 %), MoRF at f pairs with LeRF at g when f + g leaves a band of kept pixels
    between them: the 14 imputations take 8 solves. Largest first, each with the largest one it
    may pair with.
    """
    flat = unknown.flatten(1).float()
    near = _stencil(unknown.float(), *torch.empty((2, *unknown.shape), device=unknown.device))
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


def _harmonic_fill(values: torch.Tensor, unknown: torch.Tensor, tol: float, max_iter: int,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The fill of the pairs of `_pairs`, and its certified error bounds (B x C).

    On a GPU, `_solve` with all pairs as one batch; on the CPU, `road_cpu.solve`, pair after
    pair and channel after channel, each stopping at its own iteration count.
    """
    groups = _pairs(unknown)
    if values.device.type == "cpu":
        table = np.full((len(groups), 2), -1, dtype=np.int64)
        for k, group in enumerate(groups):
            table[k, :len(group)] = group
        fill, bound, _, _ = road_cpu.solve(
            values.detach().float().contiguous().numpy(),
            unknown[:, 0].contiguous().numpy(), table, tol, max_iter)
        return torch.from_numpy(fill).to(values.dtype), torch.from_numpy(bound)
    system = torch.empty(len(values), dtype=torch.long)
    for k, group in enumerate(groups):
        system[group] = k
    fill, bound, _ = _solve(values, unknown, system.to(values.device), tol, max_iter)
    return fill, bound[..., 0, 0]


def noisy_linear_impute(
    images: torch.Tensor,
    removed: torch.Tensor,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
) -> torch.Tensor:
    """Fill the removed pixels as ROAD's noisy linear imputation does (see the module doc).

    images: B x C x H x W, raw values in [0, 1]; removed: B x H x W bool (True = removed).
    The noise-free fill is within ``tol`` (max abs) of the exact sparse solve; a RuntimeWarning
    says so when ``max_iter`` CG iterations were not enough to certify it. Runs on the
    images' device; noise is drawn from ``generator`` (on its own device) when one is
    given. Images without removed pixels come back unchanged.
    """
    if images.dim() != 4 or removed.shape != images.shape[:1] + images.shape[2:]:
        raise ValueError(f"expected images B x C x H x W and removed B x H x W, got "
                         f"{tuple(images.shape)} and {tuple(removed.shape)}")
    removed = removed.to(device=images.device, dtype=torch.bool)
    unknown = removed[:, None]
    out = images.clone()
    flat = removed.flatten(1)
    every = flat.all(1)
    solve = flat.any(1) & ~every
    if every.any():
        out[every] = images[every].mean((-2, -1), keepdim=True).expand_as(images[every])
    if solve.any():
        fill, bound = _harmonic_fill(images[solve], unknown[solve], tol, max_iter)
        worst = bound.max().item()
        if worst > tol:
            warnings.warn(f"noisy_linear_impute: {max_iter} iterations certify a max error of "
                          f"{worst:.2e} only (tol {tol:.0e})", RuntimeWarning, stacklevel=2)
        out[solve] = torch.where(unknown[solve], fill, images[solve])
    if noise > 0:
        device = generator.device if generator is not None else images.device
        eps = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype)
        out.addcmul_(eps.to(images.device), unknown, value=noise)
    return out


def removal_masks(
    maps: torch.Tensor,
    fractions: Sequence[float],
    order: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which pixels ROAD removes: F x B x H x W bool, one mask per fraction and map.

    maps: B x H x W saliency. ``order`` "MoRF" removes the ``floor(f * H * W)`` most relevant
    pixels, "LeRF" the least relevant. Exact ties are ranked at random (from ``generator``),
    so flat regions of a map are removed in no particular spatial order; masks of growing
    fractions are nested.
    """
    if order not in ("MoRF", "LeRF"):
        raise ValueError(f"order must be 'MoRF' or 'LeRF', got {order!r}")
    if any(not 0 <= f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {list(fractions)}")
    b, h, w = maps.shape
    n = h * w
    device = generator.device if generator is not None else maps.device
    shuffle = torch.rand(b, n, generator=generator, device=device).argsort(1).to(maps.device)
    values = maps.reshape(b, n).gather(1, shuffle)
    ranked = shuffle.gather(1, values.argsort(dim=1, descending=order == "MoRF", stable=True))
    rank = torch.empty_like(ranked).scatter_(1, ranked, torch.arange(n, device=maps.device)
                                             .expand(b, n).contiguous())
    counts = torch.tensor([math.floor(f * n + 1e-6) for f in fractions], device=maps.device)
    return (rank[None] < counts[:, None, None]).reshape(len(fractions), b, h, w)


def road_scores(
    classify: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    maps: torch.Tensor,
    fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9),
    orders: Sequence[str] = ("MoRF", "LeRF"),
    labels: torch.Tensor | None = None,
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 32,
    tol: float = 1e-3,
    return_images: bool = False,
) -> dict:
    """ROAD curves of saliency maps: how often the prediction survives removal + imputation.

    classify: raw [0, 1] images B x 3 x H x W -> logits (it normalises internally).
    images: B x 3 x H x W raw; maps: B x H x W at the images' size. labels default to the
    prediction on the clean images. ``batch_size`` imputed images go through each solver and
    classifier call. The ranking jitter and the noise of image i come from a generator seeded
    by (seed, i), so masks and noise do not depend on batch_size or on the other images (the
    fills agree within ``tol``).

    Returns ``{"fractions": [...], "labels": B, order: {"accuracy": [per fraction],
    "mean": float, "correct": F x B bool}}`` for each order, plus ``"images": {order:
    F x B x 3 x H x W}`` (the imputed images) when return_images is set.
    """
    if maps.shape != images.shape[:1] + images.shape[2:]:
        raise ValueError(f"maps must be B x H x W at the images' size, got {tuple(maps.shape)} "
                         f"for images {tuple(images.shape)}")
    count = len(images)
    device = images.device
    with torch.no_grad():
        if labels is None:
            labels = torch.cat([classify(images[i:i + batch_size]).argmax(1)
                                for i in range(0, count, batch_size)])
        labels = labels.to(device)
        nf, no = len(fractions), len(orders)
        correct = torch.zeros(no, nf, count, dtype=torch.bool, device=device)
        kept = (torch.empty(no, nf, *images.shape, dtype=images.dtype, device=device)
                if return_images else None)
        # Images in groups whose jobs (order x fraction x image) fill about one batch, so the
        # masks of one group are all that is held at a time.
        group = max(1, batch_size // (no * nf))
        for start in range(0, count, group):
            ids = range(start, min(start + group, count))
            gens = [torch.Generator(device=device).manual_seed(seed * 1_000_003 + i) for i in ids]
            masks = torch.stack([  # O x F x group x H x W
                torch.cat([removal_masks(maps[i:i + 1], fractions, o, g)
                           for i, g in zip(ids, gens, strict=True)], 1)
                for o in orders
            ])
            grid = torch.meshgrid(torch.arange(len(ids)), torch.arange(no), torch.arange(nf),
                                  indexing="ij")
            js, ks, fs = (t.flatten().to(device) for t in grid)
            for c in range(0, len(js), batch_size):
                j, k, f = js[c:c + batch_size], ks[c:c + batch_size], fs[c:c + batch_size]
                sel = j + start
                removed = masks[k, f, j]
                imputed = noisy_linear_impute(images[sel], removed, noise=0.0, tol=tol)
                if noise > 0:
                    eps = torch.stack([torch.randn(images.shape[1:], generator=gens[i],
                                                   device=device, dtype=images.dtype)
                                       for i in j.tolist()])
                    imputed.addcmul_(eps, removed[:, None], value=noise)
                correct[k, f, sel] = classify(imputed).argmax(1) == labels[sel]
                if kept is not None:
                    kept[k, f, sel] = imputed
    result: dict = {"fractions": list(fractions), "labels": labels}
    for k, order in enumerate(orders):
        accuracy = correct[k].float().mean(1)
        result[order] = {"accuracy": accuracy.tolist(), "mean": accuracy.mean().item(),
                         "correct": correct[k]}
    if kept is not None:
        result["images"] = {order: kept[k] for k, order in enumerate(orders)}
    return result
