"""The multigrid hierarchy of ROAD's torch solver: the masked stencil on each grid, transfers.

docs/road.md says how the hierarchy is built and why; :mod:`ttame.metrics.road.torch_solver`
runs conjugate gradients preconditioned by it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ttame.metrics.road.constants import ROW_SUM_SHARE

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


def stencil(x: torch.Tensor, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Return ([1,2,1] x [1,2,1]) * x, zero padded, in u (t is scratch).

    That is 12 times the weighted sum of the 8 neighbours plus 4 times x itself: two separable
    passes instead of eight shifted adds.
    """
    _pair_sum(x, -1, t).add_(x, alpha=2.0)
    return _pair_sum(t, -2, u).add_(t, alpha=2.0)


def _tridiagonal(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The n x n matrix of [1, 2, 1] with zero padding: `stencil` is T_h @ x @ T_w."""
    ones = torch.ones(n - 1, dtype=dtype, device=device)
    return torch.diag(ones, 1) + torch.diag(ones, -1) + 2 * torch.eye(n, dtype=dtype, device=device)


def _linear_upsampling(
    coarse: int, fine: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
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


class Grid:
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
            self.tri = (
                _tridiagonal(self.shape[0], dtype, device),
                _tridiagonal(self.shape[1], dtype, device),
            )
        self._buffers: dict[tuple, torch.Tensor] = {}
        # Weight of the neighbours inside the image (the reference's `sum_neighbors`).
        weight = self.neighbours(ins).clone() / 12 - ins / 3
        self.m = m
        self.m12 = m / 12
        self.c = m * (weight + 1 / 3)
        self.weight = weight
        self.dinv = torch.where(unknown, 1 / weight.clamp_min(1e-6), 0.0).to(dtype)
        self.coarse: Grid | None = None
        self.up: tuple[torch.Tensor, torch.Tensor] | None = None  # to this grid from coarse
        self.inverse: torch.Tensor | None = None

    def add_diagonal(self, extra: torch.Tensor) -> None:
        """Add extra (B x 1 x h x w, zero off the unknown cells) to the operator's diagonal."""
        self.c = self.c + extra
        self.dinv = torch.where(
            self.unknown, 1 / (self.m * self.weight + extra).clamp_min(1e-6), 0.0
        ).to(self.dtype)

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
        """The stencil sum of x (see `stencil`), in a buffer."""
        c = x.shape[1]
        t, u = self.buffer("t", c), self.buffer("u", c)
        if self.tri is not None:
            return torch.matmul(torch.matmul(self.tri[0], x, out=t), self.tri[1], out=u)
        return stencil(x, t, u)

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
            y = torch.matmul(
                torch.matmul(self.up[0].T, x, out=half),
                self.up[1],
                out=coarse.buffer("restricted", c),
            )
        return y.mul_(coarse.m)

    def prolong(self, x: torch.Tensor) -> torch.Tensor:
        """Cell-centred bilinear upsampling by 2 from the coarse grid (unmasked)."""
        if self.up is None:
            return _prolong(x, self)
        b, c = x.shape[:2]
        half = self.scratch("up", (b, c, self.shape[0], x.shape[-1]))
        return torch.matmul(
            torch.matmul(self.up[0], x, out=half), self.up[1].T, out=self.buffer("prolonged", c)
        )

    def solve_dense(self, r: torch.Tensor) -> torch.Tensor:
        """A^-1 r on the coarsest grid, by its explicit inverse (identity on known cells)."""
        assert self.inverse is not None
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


def _restrict(x: torch.Tensor, fine: Grid, out: torch.Tensor) -> torch.Tensor:
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


def _prolong_axis(
    x: torch.Tensor,
    dim: int,
    out: torch.Tensor,
    d: torch.Tensor,
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


def _prolong(x: torch.Tensor, fine: Grid) -> torch.Tensor:
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


def build(unknown: torch.Tensor, dtype: torch.dtype) -> Grid:
    """Multigrid hierarchy: a coarse cell is unknown when any of its children is.

    The coarse operator is the fine stencil rediscretised on the coarse cells, which treats a
    cell with some known children as wholly unknown and so couples it too weakly to the known
    values. Its diagonal gets `ROW_SUM_SHARE` of the difference between the Galerkin operator
    R A P and itself on the constant vector (the missing coupling): that share took the fewest
    iterations on photos with blob-shaped and scattered masks (23 % fewer than the unmodified
    rediscretisation with a cell unknown only when all its children are).
    """
    top = grid = Grid(unknown, torch.ones_like(unknown), dtype)
    while max(grid.shape) > _COARSEST:
        h, w = grid.shape
        pad = (0, w % 2, 0, h % 2)
        coarse = grid.coarse = Grid(
            _any2x2(F.pad(grid.unknown, pad)), _any2x2(F.pad(grid.inside, pad)), dtype
        )
        if grid.tri is not None or max(grid.shape) <= 2 * _MATMUL_SIDE:
            grid.up = (
                _linear_upsampling(coarse.shape[0], grid.shape[0], dtype, unknown.device),
                _linear_upsampling(coarse.shape[1], grid.shape[1], dtype, unknown.device),
            )
        ones = coarse.m
        fine = grid.prolong(ones).mul(grid.m)
        galerkin = grid.restrict(grid.apply(fine, torch.empty_like(fine)))
        deficit = galerkin - coarse.apply(ones, torch.empty_like(ones))
        coarse.add_diagonal(deficit.clamp_min(0) * ROW_SUM_SHARE)
        grid = coarse
    _invert_dense(grid)
    return top


def _invert_dense(grid: Grid) -> None:
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
