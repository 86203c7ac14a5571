"""ROAD's imputation solver on the CPU, compiled with Numba.

The system, the multigrid hierarchy and the error certificate are those of the torch solver
(docs/road.md says what they are); this module only runs them faster on a CPU. Written by hand
because it must be much faster than the torch solver there: torch spends a CPU solve in
thousands of small ops, each its own pass over memory with its own dispatch cost, and can only
stop a batch of channels together. Here one pass does the work of several ops (a stencil, an
update and a reduction at once), the preconditioner runs in float32 on data that stays in cache,
and each channel runs its own conjugate gradients, stopping at its own iteration count. The
preconditioner is a symmetric V(1,1) cycle from the fine grid down (Jacobi smoothing), where the
torch solver saves the fine grid's stencils with an additive step: the full cycle needs a third
fewer iterations, and here the stencils are cheap.

Arrays are 2-D, one channel at a time, C-contiguous. Every function is compiled on first use and
cached on disk (``cache=True``), so only the first call on a machine pays the compilation
(`warm_up`). `solve` releases the GIL: the app's other requests go on while it runs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ttame.metrics.road.constants import ROW_SUM_SHARE, Z_RESIDUAL
from ttame.metrics.road.cpu_kernels import (
    FAST,
    any2x2,
    apply,
    copy,
    jacobi,
    prolong_add,
    residual,
    residual_above,
    restrict,
    stencil,
)

COARSEST = 8  # coarsen until both sides are at most this, then solve densely


@njit(cache=True)
def _allocate(h, w):
    """Every array the solver needs for images of h x w, allocated once per call.

    Returns (grids, scratch, work). grids: per grid of the hierarchy, the weight of the
    in-image neighbours (which depends on the shape only), the unknown cells, the operator in
    float64 (m, c, m12: the fine grid's for conjugate gradients, all of them to build the
    hierarchy) and in float32 for the V-cycle (m, c, m12, D^-1). scratch: float64 arrays to
    build the hierarchy. work: float32 arrays for the V-cycle.
    """
    inside = np.ones((h, w), np.bool_)
    weights = []
    while True:
        hi, wi = inside.shape
        ins = inside.astype(np.float64)
        s = np.empty((hi, wi))
        stencil(ins, s)
        weights.append(s / 12 - ins / 3)
        if max(hi, wi) <= COARSEST:
            break
        coarse = np.empty(((hi + 1) // 2, (wi + 1) // 2), np.bool_)
        any2x2(inside, coarse)
        inside = coarse
    n = len(weights)
    shapes = [x.shape for x in weights]
    wides = [(shapes[min(k + 1, n - 1)][0], shapes[k][1]) for k in range(n)]
    f64, f32 = np.float64, np.float32
    grids = (
        weights,
        [np.zeros(s, np.bool_) for s in shapes],
        [np.zeros(s) for s in shapes],
        [np.zeros(s) for s in shapes],
        [np.zeros(s) for s in shapes],
        [np.zeros(s, f32) for s in shapes],
        [np.zeros(s, f32) for s in shapes],
        [np.zeros(s, f32) for s in shapes],
        [np.zeros(s, f32) for s in shapes],
    )

    def buffers(dtype):
        return (
            [np.zeros(s, dtype) for s in shapes],
            [np.zeros(s, dtype) for s in shapes],
            [np.zeros(s, dtype) for s in wides],
            [np.zeros(2 * s[1] + 2, dtype) for s in shapes],
            [np.zeros(s[1], dtype) for s in shapes],
            [np.zeros(s[1] + 2, dtype) for s in shapes],
            [np.zeros(s[1] + 2, dtype) for s in shapes],
        )

    a, b, wide, pads, lines, exts, ts = buffers(f64)
    scratch = (a, b, wide, pads, lines, exts, ts)
    a, b, wide, pads, lines, exts, ts = buffers(f32)
    work = ([np.zeros(s, f32) for s in shapes], a, b, wide, pads, lines, exts, ts)
    return grids, scratch, work


@njit(cache=True)
def _build(grids, scratch, union):
    """Fill grids with the hierarchy of `torch_grids.build` for these unknown pixels.

    A coarse cell is unknown when any of its children is; each grid has the stencil
    rediscretised, its diagonal raised by `ROW_SUM_SHARE` of what the Galerkin row sum has in
    excess. Returns the inverse of the coarsest operator (identity rows on its known cells).
    """
    weights, unknown, m, c, m12, m32, c32, m12_32, dinv32 = grids
    a, b, wide, pads, lines, exts, ts = scratch
    copy(union, unknown[0])
    for k in range(len(weights)):
        if k:
            any2x2(unknown[k - 1], unknown[k])
        u, weight = unknown[k], weights[k]
        mk, ck, m12k = m[k], c[k], m12[k]
        h, w = u.shape
        for i in range(h):
            for j in range(w):
                mm = 1.0 if u[i, j] else 0.0
                mk[i, j] = mm
                ck[i, j] = mm * (weight[i, j] + 1 / 3)
                m12k[i, j] = mm / 12
        extra = b[k]
        extra[:] = 0.0
        if k:
            fine = a[k - 1]
            fine[:] = 0.0
            prolong_add(mk, m[k - 1], fine, wide[k - 1], exts[k])
            apply(c[k - 1], m12[k - 1], fine, b[k - 1], ts[k - 1])
            restrict(b[k - 1], mk, a[k], lines[k - 1], pads[k])
            apply(ck, m12k, mk, extra, ts[k])
            for i in range(h):
                for j in range(w):
                    extra[i, j] = ROW_SUM_SHARE * max(a[k][i, j] - extra[i, j], 0.0) * mk[i, j]
                    ck[i, j] += extra[i, j]
        for i in range(h):
            for j in range(w):
                diag = mk[i, j] * weight[i, j] + extra[i, j]
                dinv32[k][i, j] = 1 / max(diag, 1e-6) if u[i, j] else 0.0
                m32[k][i, j] = mk[i, j]
                c32[k][i, j] = ck[i, j]
                m12_32[k][i, j] = m12k[i, j]
    mc, cc = m[-1], c[-1]
    hc, wc = mc.shape
    n = hc * wc
    dense = np.zeros((n, n))
    for i in range(hc):
        for j in range(wc):
            p = i * wc + j
            if mc[i, j] == 0:
                dense[p, p] = 1.0
                continue
            dense[p, p] = cc[i, j] - 1 / 3
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    ii, jj = i + di, j + dj
                    if (di or dj) and 0 <= ii < hc and 0 <= jj < wc and mc[ii, jj]:
                        dense[p, ii * wc + jj] = -(2.0 if di == 0 or dj == 0 else 1.0) / 12
    return np.ascontiguousarray(np.linalg.inv(dense)).astype(np.float32)


@njit(cache=True, fastmath=FAST)
def _dense(inverse, m, r, out):
    """Write m * (inverse @ r) into out, on the coarsest grid."""
    hc, wc = r.shape
    n = hc * wc
    rf, of, mf = r.ravel(), out.ravel(), m.ravel()
    for p in range(n):
        row = inverse[p]
        s = np.float32(0.0)
        for q in range(n):
            s += row[q] * rf[q]
        of[p] = s * mf[p]


@njit(cache=True, fastmath=FAST)
def _precondition(grids, inverse, work, r):
    """Return z = M r: a symmetric V(1,1) cycle (Jacobi smoothing, dense coarsest solve).

    r is the fine-grid residual (float64, zero off the unknown pixels); z is a float32 buffer.
    """
    ms, cs, m12s, dinvs = grids[5], grids[6], grids[7], grids[8]
    zs, rs, res, wide, pads, lines, exts, ts = work
    last = len(ms) - 1
    if last == 0:
        copy(r, rs[0])
        _dense(inverse, ms[0], rs[0], zs[0])
        return zs[0]
    jacobi(dinvs[0], r, zs[0], False)
    residual(r, cs[0], m12s[0], zs[0], res[0], ts[0])
    restrict(res[0], ms[1], rs[1], lines[0], pads[1])
    for k in range(1, last):
        jacobi(dinvs[k], rs[k], zs[k], False)
        residual(rs[k], cs[k], m12s[k], zs[k], res[k], ts[k])
        restrict(res[k], ms[k + 1], rs[k + 1], lines[k], pads[k + 1])
    _dense(inverse, ms[last], rs[last], zs[last])
    for k in range(last - 1, 0, -1):
        prolong_add(zs[k + 1], ms[k], zs[k], wide[k], exts[k + 1])
        residual(rs[k], cs[k], m12s[k], zs[k], res[k], ts[k])
        jacobi(dinvs[k], res[k], zs[k], True)
    prolong_add(zs[1], ms[0], zs[0], wide[0], exts[1])
    residual(r, cs[0], m12s[0], zs[0], res[0], ts[0])
    jacobi(dinvs[0], res[0], zs[0], True)
    return zs[0]


@njit(cache=True, fastmath=FAST)
def _cg(grids, inverse, work, b, x, r, p, ap, target, max_iter):
    """Solve A x = b in place until max |b - A x| <= target, or for max_iter iterations.

    Conjugate gradients in float64 preconditioned by `_precondition`; the test uses the true
    residual b - A x, which is left in r. p and ap are scratch. Returns the iterations.
    """
    c, m12 = grids[3][0], grids[4][0]
    h, w = b.shape
    t = np.zeros(w + 2)
    if not residual_above(b, c, m12, x, r, t, target):
        return 0
    z = _precondition(grids, inverse, work, r)
    rz = 0.0
    for i in range(h):
        for j in range(w):
            p[i, j] = z[i, j]
            rz += r[i, j] * z[i, j]
    for iteration in range(max_iter):
        alpha = rz / max(apply(c, m12, p, ap, t), 1e-300)
        above = 0
        for i in range(h):
            for j in range(w):
                x[i, j] += alpha * p[i, j]
                v = r[i, j] - alpha * ap[i, j]
                r[i, j] = v
                above += abs(v) > target
        if not above and not residual_above(b, c, m12, x, r, t, target):
            return iteration + 1
        z = _precondition(grids, inverse, work, r)
        rz_new = 0.0
        for i in range(h):
            for j in range(w):
                rz_new += r[i, j] * z[i, j]
        beta = rz_new / rz
        rz = rz_new
        for i in range(h):
            for j in range(w):
                p[i, j] = z[i, j] + beta * p[i, j]
    residual(b, c, m12, x, r, t)
    return max_iter


@njit(cache=True, fastmath=FAST)
def _amax(x):
    """The max of |x| over a 2-D array.

    Kept in 8 running maxima, one per vector lane, which LLVM vectorises (a single running max
    runs 4x slower).
    """
    flat = x.ravel()
    n = flat.shape[0]
    lanes = np.zeros(8, x.dtype)
    for start in range(0, n - n % 8, 8):
        for lane in range(8):
            v = abs(flat[start + lane])
            lanes[lane] = v if v > lanes[lane] else lanes[lane]
    top = lanes.max()
    for k in range(n - n % 8, n):
        top = max(top, abs(flat[k]))
    return top


@njit(cache=True, fastmath=FAST)
def _as_float(m, out):
    """Write the bool mask m into out as 0 and 1."""
    h, w = m.shape
    for i in range(h):
        for j in range(w):
            out[i, j] = m[i, j]


@njit(cache=True, fastmath=FAST)
def _system(values, unknown, mask, known, s, b, x):
    """Add one image's right-hand sides to b and its start to x (C x h x w each).

    b is the stencil of the known pixels on the unknown ones; x starts from the mean of the
    known pixels, which removes the constant part of the error. mask, known, s: scratch.
    """
    channels, h, w = values.shape
    _as_float(unknown, mask)
    kept = h * w - mask.sum()
    for ch in range(channels):
        v = values[ch]
        for i in range(h):
            for j in range(w):
                known[i, j] = v[i, j] * (1 - mask[i, j])
        stencil(known, s)
        mean = known.sum() / kept
        bc, xc = b[ch], x[ch]
        for i in range(h):
            for j in range(w):
                bc[i, j] += s[i, j] * mask[i, j] / 12
                xc[i, j] += mean * mask[i, j]


@njit(cache=True, nogil=True)
def solve(values, unknown, groups, tol, max_iter):
    """The certified fills of the unknown pixels of B images, one system per group.

    values: B x C x H x W float32; unknown: B x H x W bool; groups: G x 2 int64, the images
    solved as one system (-1: none), whose unknown pixels must be nowhere 8-adjacent (see
    `road._pairs`); every image needs a known pixel. Returns the fills (B x C x H x W float32,
    zero on known pixels), the bound of their max abs error per image and channel (B x C:
    ||A^-1||_inf * max|b - A x| plus the rounding to float32, as `road._solve`), the bound of
    ||A^-1||_inf per group (G) and the conjugate-gradient iterations per group and channel, the
    last channel being the solve that bounds ||A^-1||_inf (G x C + 1).
    """
    count, channels, h, w = values.shape
    grids, scratch, work = _allocate(h, w)
    fill = np.zeros((count, channels, h, w), np.float32)
    bound = np.zeros((count, channels))
    norms = np.zeros(len(groups))
    iterations = np.zeros((len(groups), channels + 1), np.int64)
    union = np.zeros((h, w), np.bool_)
    b = np.zeros((channels, h, w))
    x = np.zeros((channels, h, w))
    r = np.zeros((channels, h, w))
    mask, known, s, p, ap, z, rz = (
        np.zeros((h, w)),
        np.zeros((h, w)),
        np.zeros((h, w)),
        np.zeros((h, w)),
        np.zeros((h, w)),
        np.zeros((h, w)),
        np.zeros((h, w)),
    )
    eps = np.finfo(np.float32).eps
    for k in range(len(groups)):
        union[:] = False
        b[:] = 0.0
        x[:] = 0.0
        for g in groups[k]:
            if g < 0:
                continue
            union |= unknown[g]
            _system(values[g], unknown[g], mask, known, s, b, x)
        inverse = _build(grids, scratch, union)
        # z with A z >= 1 - Z_RESIDUAL bounds ||A^-1||_inf (`torch_solver._inverse_norm_bound`).
        z[:] = 0.0
        iterations[k, channels] = _cg(
            grids, inverse, work, grids[2][0], z, rz, p, ap, Z_RESIDUAL, max_iter
        )
        mu = 1 - rz.max()
        norm = z.max() / mu if mu > 0 else np.inf
        norms[k] = norm
        for ch in range(channels):
            iterations[k, ch] = _cg(
                grids, inverse, work, b[ch], x[ch], r[ch], p, ap, tol / norm, max_iter
            )
        for g in groups[k]:
            if g < 0:
                continue
            _as_float(unknown[g], mask)
            for ch in range(channels):
                f, xc = fill[g, ch], x[ch]
                for i in range(h):
                    for j in range(w):
                        f[i, j] = xc[i, j] * mask[i, j]
                residual = _amax(r[ch] * mask)
                rounding = eps * _amax(f)
                bound[g, ch] = (residual * norm if residual > 0 else 0.0) + rounding
    return fill, bound, norms, iterations


def warm_up() -> None:
    """Compile the solver now rather than at its first use (or load it from Numba's cache).

    Compiling takes about 17 s once per machine and Python version; later processes load the
    compiled code in about 0.2 s. The setup script runs this at install, the app at start-up.
    """
    unknown = np.zeros((1, 4, 4), np.bool_)
    unknown[0, 1, 1] = True
    solve(np.zeros((1, 1, 4, 4), np.float32), unknown, np.array([[0, -1]]), 1e-3, 10)
