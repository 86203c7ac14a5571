"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci; ICML 2022).

Remove a fraction of the pixels ranked by a saliency map, fill them by *noisy linear
imputation*, and count how often the classifier still predicts the same class. MoRF removes
the most relevant pixels first (a good map makes accuracy drop fast: lower is better), LeRF
the least relevant first (higher is better). The imputation follows the authors'
``NoisyLinearImputer`` exactly, solved to a certified error instead of factorised; what we
follow, where we differ and how the solvers work is written down in docs/road.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ttame.metrics.road import torch_solver
from ttame.metrics.road.constants import ROAD_FRACTIONS, ROAD_ORDERS


def harmonic_fill(
    values: torch.Tensor,
    unknown: torch.Tensor,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fill of the pairs of `torch_solver.pairs`, and its certified error bounds (B x C).

    On a GPU, `torch_solver.solve` with all pairs as one batch; on the CPU, `cpu_solver.solve`,
    pair after pair and channel after channel, each stopping at its own iteration count.
    """
    groups = torch_solver.pairs(unknown)
    if values.device.type == "cpu":
        from ttame.metrics.road import cpu_solver  # compiled with numba, an optional dependency

        table = np.full((len(groups), 2), -1, dtype=np.int64)
        for k, group in enumerate(groups):
            table[k, : len(group)] = group
        fill, bound, _, _ = cpu_solver.solve(
            values.detach().float().contiguous().numpy(),
            unknown[:, 0].contiguous().numpy(),
            table,
            tol,
            max_iter,
        )
        return torch.from_numpy(fill).to(values.dtype), torch.from_numpy(bound)
    system = torch.empty(len(values), dtype=torch.long)
    for k, group in enumerate(groups):
        system[group] = k
    fill, bound, _ = torch_solver.solve(values, unknown, system.to(values.device), tol, max_iter)
    return fill, bound[..., 0, 0]


def noisy_linear_impute(
    images: torch.Tensor,
    removed: torch.Tensor,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
) -> torch.Tensor:
    """Fill the removed pixels as ROAD's noisy linear imputation does (docs/road.md).

    images: B x C x H x W, raw values in [0, 1]; removed: B x H x W bool (True = removed).
    The noise-free fill is within ``tol`` (max abs) of the exact sparse solve; a RuntimeWarning
    says so when ``max_iter`` CG iterations were not enough to certify it. Runs on the
    images' device; noise is drawn from ``generator`` (on its own device) when one is
    given. Images without removed pixels come back unchanged.
    """
    if images.dim() != 4 or removed.shape != images.shape[:1] + images.shape[2:]:
        raise ValueError(
            f"expected images B x C x H x W and removed B x H x W, got "
            f"{tuple(images.shape)} and {tuple(removed.shape)}"
        )
    removed = removed.to(device=images.device, dtype=torch.bool)
    unknown = removed[:, None]
    out = images.clone()
    flat = removed.flatten(1)
    every = flat.all(1)
    solve = flat.any(1) & ~every
    if every.any():
        out[every] = images[every].mean((-2, -1), keepdim=True).expand_as(images[every])
    if solve.any():
        fill, bound = harmonic_fill(images[solve], unknown[solve], tol, max_iter)
        worst = bound.max().item()
        if worst > tol:
            warnings.warn(
                f"noisy_linear_impute: {max_iter} iterations certify a max error of "
                f"{worst:.2e} only (tol {tol:.0e})",
                RuntimeWarning,
                stacklevel=2,
            )
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
    if order not in ROAD_ORDERS:
        raise ValueError(f"order must be 'MoRF' or 'LeRF', got {order!r}")
    if any(not 0 <= f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {list(fractions)}")
    b, h, w = maps.shape
    n = h * w
    device = generator.device if generator is not None else maps.device
    shuffle = torch.rand(b, n, generator=generator, device=device).argsort(1).to(maps.device)
    values = maps.reshape(b, n).gather(1, shuffle)
    ranked = shuffle.gather(1, values.argsort(dim=1, descending=order == "MoRF", stable=True))
    rank = torch.empty_like(ranked).scatter_(
        1, ranked, torch.arange(n, device=maps.device).expand(b, n).contiguous()
    )
    counts = torch.tensor([math.floor(f * n + 1e-6) for f in fractions], device=maps.device)
    return (rank[None] < counts[:, None, None]).reshape(len(fractions), b, h, w)


def road_scores(
    classify: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    maps: torch.Tensor,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    orders: Sequence[str] = ROAD_ORDERS,
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
        raise ValueError(
            f"maps must be B x H x W at the images' size, got {tuple(maps.shape)} "
            f"for images {tuple(images.shape)}"
        )
    count = len(images)
    device = images.device
    with torch.no_grad():
        if labels is None:
            labels = torch.cat(
                [
                    classify(images[i : i + batch_size]).argmax(1)
                    for i in range(0, count, batch_size)
                ]
            )
        labels = labels.to(device)
        nf, no = len(fractions), len(orders)
        correct = torch.zeros(no, nf, count, dtype=torch.bool, device=device)
        kept = (
            torch.empty(no, nf, *images.shape, dtype=images.dtype, device=device)
            if return_images
            else None
        )
        # Images in groups whose jobs (order x fraction x image) fill about one batch, so the
        # masks of one group are all that is held at a time.
        group = max(1, batch_size // (no * nf))
        for start in range(0, count, group):
            ids = range(start, min(start + group, count))
            gens = [torch.Generator(device=device).manual_seed(seed * 1_000_003 + i) for i in ids]
            masks = torch.stack(
                [  # O x F x group x H x W
                    torch.cat(
                        [
                            removal_masks(maps[i : i + 1], fractions, o, g)
                            for i, g in zip(ids, gens, strict=True)
                        ],
                        1,
                    )
                    for o in orders
                ]
            )
            grid = torch.meshgrid(
                torch.arange(len(ids)), torch.arange(no), torch.arange(nf), indexing="ij"
            )
            js, ks, fs = (t.flatten().to(device) for t in grid)
            for c in range(0, len(js), batch_size):
                j, k, f = js[c : c + batch_size], ks[c : c + batch_size], fs[c : c + batch_size]
                sel = j + start
                removed = masks[k, f, j]
                imputed = noisy_linear_impute(images[sel], removed, noise=0.0, tol=tol)
                if noise > 0:
                    eps = torch.stack(
                        [
                            torch.randn(
                                images.shape[1:],
                                generator=gens[i],
                                device=device,
                                dtype=images.dtype,
                            )
                            for i in j.tolist()
                        ]
                    )
                    imputed.addcmul_(eps, removed[:, None], value=noise)
                correct[k, f, sel] = classify(imputed).argmax(1) == labels[sel]
                if kept is not None:
                    kept[k, f, sel] = imputed
    result: dict = {"fractions": list(fractions), "labels": labels}
    for o, order in enumerate(orders):
        accuracy = correct[o].float().mean(1)
        result[order] = {
            "accuracy": accuracy.tolist(),
            "mean": accuracy.mean().item(),
            "correct": correct[o],
        }
    if kept is not None:
        result["images"] = {order: kept[o] for o, order in enumerate(orders)}
    return result
