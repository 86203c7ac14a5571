"""The CPU solver's loops over one 2-D grid: stencil, residuals, smoothing, grid transfers.

Compiled with Numba (``cache=True``: once per machine); :mod:`ttame.metrics.road.cpu_solver`
puts them together. Arrays are 2-D, one channel at a time, C-contiguous.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Reassociation lets the compiler vectorise the reductions; no assumptions about NaN or inf,
# which the certificate uses.
FAST = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, fastmath=FAST)
def column_sum(x, i, t):
    """t[1 + j] = x[i - 1, j] + 2 x[i, j] + x[i + 1, j] (zero outside); t[0], t[w + 1] stay 0."""
    h, w = x.shape
    mid = x[i]
    if 0 < i < h - 1:
        up = x[i - 1]
        down = x[i + 1]
        for j in range(w):
            t[j + 1] = up[j] + 2 * mid[j] + down[j]
    elif h == 1:
        for j in range(w):
            t[j + 1] = 2 * mid[j]
    elif i == 0:
        down = x[1]
        for j in range(w):
            t[j + 1] = 2 * mid[j] + down[j]
    else:
        up = x[i - 1]
        for j in range(w):
            t[j + 1] = up[j] + 2 * mid[j]


@njit(cache=True, fastmath=FAST)
def stencil(x, out):
    """Write ([1,2,1] x [1,2,1]) * x, zero padded, into out (`torch_grids.stencil`)."""
    h, w = x.shape
    t = np.zeros(w + 2, x.dtype)
    for i in range(h):
        column_sum(x, i, t)
        o = out[i]
        for j in range(w):
            o[j] = t[j] + 2 * t[j + 1] + t[j + 2]


@njit(cache=True, fastmath=FAST)
def apply(c, m12, x, out, t):
    """Write A x into out (x zero off the unknown pixels); returns the dot product x . A x."""
    h, w = x.shape
    total = 0.0
    for i in range(h):
        column_sum(x, i, t)
        cr, mr, xr, o = c[i], m12[i], x[i], out[i]
        row = 0.0
        for j in range(w):
            v = cr[j] * xr[j] - mr[j] * (t[j] + 2 * t[j + 1] + t[j + 2])
            o[j] = v
            row += v * xr[j]
        total += row
    return total


@njit(cache=True, fastmath=FAST)
def residual(b, c, m12, x, out, t):
    """Write b - A x into out."""
    h, w = x.shape
    for i in range(h):
        column_sum(x, i, t)
        br, cr, mr, xr, o = b[i], c[i], m12[i], x[i], out[i]
        for j in range(w):
            o[j] = br[j] - cr[j] * xr[j] + mr[j] * (t[j] + 2 * t[j + 1] + t[j + 2])


@njit(cache=True, fastmath=FAST)
def residual_above(b, c, m12, x, out, t, target):
    """Write b - A x into out; returns how many of its entries exceed target in magnitude.

    A count, not the max: LLVM vectorises a count but not a max reduction (10x slower).
    """
    h, w = x.shape
    above = 0
    for i in range(h):
        column_sum(x, i, t)
        br, cr, mr, xr, o = b[i], c[i], m12[i], x[i], out[i]
        for j in range(w):
            v = br[j] - cr[j] * xr[j] + mr[j] * (t[j] + 2 * t[j + 1] + t[j + 2])
            o[j] = v
            above += abs(v) > target
    return above


@njit(cache=True, fastmath=FAST)
def jacobi(dinv, r, z, add):
    """Set z to D^-1 r, or add D^-1 r to z."""
    h, w = z.shape
    for i in range(h):
        dr, rr, zr = dinv[i], r[i], z[i]
        if add:
            for j in range(w):
                zr[j] += dr[j] * rr[j]
        else:
            for j in range(w):
                zr[j] = dr[j] * rr[j]


@njit(cache=True, fastmath=FAST)
def restrict_row(src, dst, pad):
    """Write the adjoint of `prolong_add`'s row interpolation of src into dst (pad: scratch).

    The prolongation replicates the coarse row at both ends, so the adjoint folds those ghost
    cells back onto the first and last coarse cells.
    """
    w = src.shape[0]
    wc = dst.shape[0]
    pad[0] = 0.0
    for j in range(w):
        pad[j + 1] = src[j]
    for j in range(w + 1, 2 * wc + 2):
        pad[j] = 0.0
    for k in range(wc):
        dst[k] = 0.75 * (pad[2 * k + 1] + pad[2 * k + 2]) + 0.25 * (pad[2 * k] + pad[2 * k + 3])
    dst[0] += 0.25 * src[0]
    if 2 * wc - 1 < w:
        dst[wc - 1] += 0.25 * src[2 * wc - 1]


@njit(cache=True, fastmath=FAST)
def restrict(x, mc, out, line, pad):
    """Write mc * P^T x into out: `prolong_add`'s exact adjoint, masked.

    Rows first (each coarse row from up to four fine ones, folding the replicated ghost rows
    back at both ends), then columns, on half as many rows. line: w scratch, pad: 2 wc + 2.
    """
    h, w = x.shape
    hc = out.shape[0]
    for k in range(hc):
        a = x[2 * k]
        if k > 0 and 2 * k + 2 < h:
            b, c, d = x[2 * k + 1], x[2 * k - 1], x[2 * k + 2]
            for j in range(w):
                line[j] = 0.75 * (a[j] + b[j]) + 0.25 * (c[j] + d[j])
        else:
            for j in range(w):
                line[j] = 0.75 * a[j]
            if 2 * k + 1 < h:
                b = x[2 * k + 1]
                for j in range(w):
                    line[j] += 0.75 * b[j]
            b = x[2 * k - 1] if k > 0 else a  # row 0 also takes its ghost's share
            for j in range(w):
                line[j] += 0.25 * b[j]
            if 2 * k + 1 < h:  # below: the next pair's first row, or the last row's ghost
                b = x[2 * k + 2] if 2 * k + 2 < h else x[2 * k + 1]
                for j in range(w):
                    line[j] += 0.25 * b[j]
        o, mr = out[k], mc[k]
        restrict_row(line, o, pad)
        for j in range(o.shape[0]):
            o[j] *= mr[j]


@njit(cache=True, fastmath=FAST)
def prolong_add(xc, m, out, wide, ext):
    """Add m * P xc to out: cell-centred bilinear upsampling by 2, replicating at the border.

    Columns first, on the coarse rows (into wide: hc x w scratch), then rows, contiguous.
    ext: wc + 2 scratch (a coarse row with its ghost cells).
    """
    h, w = out.shape
    hc, wc = xc.shape
    for k in range(hc):
        src, dst = xc[k], wide[k]
        ext[0] = src[0]
        for q in range(wc):
            ext[q + 1] = src[q]
        ext[wc + 1] = src[wc - 1]
        for q in range(w // 2):
            dst[2 * q] = 0.75 * ext[q + 1] + 0.25 * ext[q]
            dst[2 * q + 1] = 0.75 * ext[q + 1] + 0.25 * ext[q + 2]
        if w % 2:
            dst[w - 1] = 0.75 * ext[wc] + 0.25 * ext[wc - 1]
    for i in range(h):
        near = i // 2
        far = near + 1 if i % 2 else near - 1
        if far < 0 or far >= hc:
            far = near
        a, b, o, mr = wide[near], wide[far], out[i], m[i]
        for j in range(w):
            o[j] += mr[j] * (0.75 * a[j] + 0.25 * b[j])


@njit(cache=True, fastmath=FAST)
def copy(src, out):
    """Copy the 2-D array src into out, casting as it goes.

    A loop rather than ``out[:] = src``, whose broadcasting machinery takes Numba seconds to
    compile.
    """
    h, w = out.shape
    for i in range(h):
        for j in range(w):
            out[i, j] = src[i, j]


@njit(cache=True)
def any2x2(u, out):
    """Mark in out the coarse cells with any of their 2 x 2 children set (odd sides padded)."""
    out[:] = False
    h, w = u.shape
    for i in range(h):
        for j in range(w):
            if u[i, j]:
                out[i // 2, j // 2] = True
