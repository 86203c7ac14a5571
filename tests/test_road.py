"""ROAD: imputation against the reference imputer, removal masks, scores on a known model."""

import math

import numpy as np
import pytest
import torch

from ttame.metrics.road import (
    cpu_kernels,
    cpu_solver,
    noisy_linear_impute,
    removal_masks,
    road_scores,
    torch_grids,
    torch_solver,
)

reference = pytest.importorskip("pytorch_grad_cam.metrics.road")


def _reference_fill(image: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's NoisyLinearImputer without noise (its mask is 1 on kept pixels)."""
    return reference.NoisyLinearImputer(noise=0.0)(image.clone(), (~removed).float())


def _blob_map(h: int, w: int, cy: float, cx: float, sigma: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def _smooth_random_map(h: int, w: int, seed: int) -> torch.Tensor:
    """A blurred random field: several blobs, like an upsampled saliency map."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, max(h // 6, 2), max(w // 6, 2), generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic")[0, 0]


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, images B x 3 x H x W, removed B x H x W) covering shapes, masks and fractions."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for h, w in ((16, 16), (24, 24), (15, 21)):
        images = torch.rand(4, 3, h, w, generator=g)
        maps = torch.stack(
            [
                _blob_map(h, w, h / 2, w / 2, h / 4),
                _blob_map(h, w, 0, w - 1, h / 3),  # a corner: removal touches two borders
                _smooth_random_map(h, w, 1),
                torch.rand(h, w, generator=g),  # scattered pixels
            ]
        )
        for order in ("MoRF", "LeRF"):
            masks = removal_masks(maps, (0.1, 0.5, 0.9), order, generator=g)
            for f, fraction in enumerate((0.1, 0.5, 0.9)):
                cases.append((f"{h}x{w}-{order}-{fraction}", images, masks[f]))
    border = torch.zeros(1, 16, 16, dtype=torch.bool)
    border[0, :, :3] = True  # a full-height strip along the left border
    border[0, -1, :] = True
    cases.append(("border-strip", torch.rand(1, 3, 16, 16, generator=g), border))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("name,images,removed", _cases(), ids=[c[0] for c in _cases()])
def test_fill_matches_reference(name: str, images: torch.Tensor, removed: torch.Tensor) -> None:
    out = noisy_linear_impute(images, removed, noise=0.0)
    for i in range(len(images)):
        expected = _reference_fill(images[i], removed[i])
        assert (out[i] - expected).abs().max().item() <= 1e-3
        assert torch.equal(out[i][:, ~removed[i]], images[i][:, ~removed[i]])


def test_loose_tolerance_is_still_honoured() -> None:
    images = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    removed = removal_masks(
        _blob_map(24, 24, 12, 12, 6)[None].expand(2, -1, -1),
        [0.9],
        "LeRF",
        generator=torch.Generator().manual_seed(0),
    )[0]
    tight = noisy_linear_impute(images, removed, noise=0.0, tol=1e-6)
    loose = noisy_linear_impute(images, removed, noise=0.0, tol=0.05)
    assert (loose - tight).abs().max().item() <= 0.05
    assert (tight[0] - _reference_fill(images[0], removed[0])).abs().max().item() <= 1e-5


def _exact_inverse_norm(mask: torch.Tensor) -> float:
    """||A^-1||_inf of the imputation system of one mask, from a dense solve of A z = 1."""
    h, w = mask.shape
    idx = mask.flatten().nonzero().flatten().numpy()
    pos = -np.ones(h * w, dtype=int)
    pos[idx] = np.arange(len(idx))
    a = np.zeros((len(idx), len(idx)))
    for k, p in enumerate(idx):
        y, x = divmod(int(p), w)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if (dy or dx) and 0 <= yy < h and 0 <= xx < w:
                    weight = 1 / 12 if dy and dx else 1 / 6
                    a[k, k] += weight
                    if mask[yy, xx]:
                        a[k, pos[yy * w + xx]] -= weight
    return np.linalg.solve(a, np.ones(len(idx))).max()


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["torch", "cpu"])
@pytest.mark.parametrize("side", [16, 27])
def test_inverse_norm_bounds_are_upper_bounds(solver: str, side: int) -> None:
    """The certificate: our bound of ||A^-1||_inf is never below the exact value, and close."""
    h = w = side
    maps = torch.stack([_blob_map(h, w, 5, 9, 4), _smooth_random_map(h, w, 3)])
    masks = torch.cat(
        [
            removal_masks(maps, (0.2, 0.6, 0.9), o, torch.Generator().manual_seed(0)).flatten(0, 1)
            for o in ("MoRF", "LeRF")
        ]
    )
    images = torch.rand(len(masks), 3, h, w, generator=torch.Generator().manual_seed(1))
    if solver == "torch":
        _, _, bounds = torch_solver.solve(
            images, masks[:, None], torch.arange(len(masks)), 1e-3, 100
        )
    else:
        groups = np.array([[i, -1] for i in range(len(masks))])
        _, _, bounds, _ = cpu_solver.solve(images.numpy(), masks.numpy(), groups, 1e-3, 100)
        bounds = torch.from_numpy(bounds)
    for mask, bound in zip(masks, bounds.flatten(), strict=True):
        exact = _exact_inverse_norm(mask)
        # A z >= 0.9 when z stops, so z / 0.9 overshoots A^-1 1 by at most 1.1 / 0.9.
        assert exact <= bound.item() <= 1.25 * exact


def _photo(name: str, size: int) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    transform = pytest.importorskip("skimage.transform")
    image = transform.resize(getattr(skimage_data, name)(), (size, size), anti_aliasing=True)
    return torch.from_numpy(image).permute(2, 0, 1).float()


def _road_masks(saliency: torch.Tensor) -> torch.Tensor:
    """The 14 masks of a full ROAD: MoRF then LeRF at 10, 20, 30, 40, 50, 70, 90 %."""
    fractions = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
    g = torch.Generator().manual_seed(0)
    return torch.cat(
        [removal_masks(saliency[None], fractions, o, g)[:, 0] for o in ("MoRF", "LeRF")]
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_full_road_on_photos_matches_reference(name: str) -> None:
    """Textured photos, large removed regions (90 %: ||A^-1||_inf in the thousands), blob and
    scattered masks: every fill of a full ROAD within 1e-3 of the reference."""
    size = 96
    image = _photo(name, size)
    for saliency in (_blob_map(size, size, 30, 60, 15), _smooth_random_map(size, size, 7)):
        masks = _road_masks(saliency)
        out = noisy_linear_impute(image[None].expand(len(masks), -1, -1, -1), masks, noise=0.0)
        for mask, filled in zip(masks, out, strict=True):
            assert (filled - _reference_fill(image, mask)).abs().max().item() <= 1e-3


@pytest.mark.parametrize("kind", ["blob", "scattered"])
def test_pairs_are_never_adjacent(kind: str) -> None:
    saliency = _blob_map(48, 48, 20, 26, 12) if kind == "blob" else _smooth_random_map(48, 48, 5)
    masks = _road_masks(saliency)
    groups = torch_solver.pairs(masks[:, None])
    assert sorted(i for group in groups for i in group) == list(range(14))
    near = torch.nn.functional.max_pool2d(masks[:, None].float(), 3, 1, 1)[:, 0] > 0
    for group in groups:
        assert len(group) <= 2
        if len(group) == 2:
            i, j = group
            assert not (near[i] & masks[j]).any()
    if kind == "blob":  # wide bands between the levels: only MoRF and LeRF 90 % stay alone
        assert len(groups) == 8
    complement = masks[:1].clone()
    complement = torch.cat([complement, ~complement])  # adjacent everywhere: never paired
    assert len(torch_solver.pairs(complement[:, None])) == 2


def test_one_batch_as_on_a_gpu_matches_the_pairs_one_by_one() -> None:
    """`_solve` on all systems at once (the GPU path) agrees with the CPU's system by system."""
    g = torch.Generator().manual_seed(6)
    images = torch.rand(14, 3, 40, 40, generator=g)
    masks = _road_masks(_smooth_random_map(40, 40, 2))
    system = torch.empty(14, dtype=torch.long)
    for k, group in enumerate(torch_solver.pairs(masks[:, None])):
        system[group] = k
    fill, bound, _ = torch_solver.solve(images, masks[:, None], system, 1e-3, 100)
    assert bound.max().item() <= 1e-3
    batched = torch.where(masks[:, None], fill, images)
    one_by_one = noisy_linear_impute(images, masks, noise=0.0)
    assert (batched - one_by_one).abs().max().item() <= 2e-3
    for i in (0, 6, 13):
        assert (batched[i] - _reference_fill(images[i], masks[i])).abs().max().item() <= 1e-3


@pytest.mark.parametrize("fine", [(12, 16), (13, 17), (1, 5), (30, 31)])
def test_cpu_restriction_is_the_adjoint_of_prolongation(fine: tuple[int, int]) -> None:
    """<P x, y> = <x, R y> on even, odd and degenerate sides: the V-cycle is symmetric."""
    h, w = fine
    hc, wc = (h + 1) // 2, (w + 1) // 2
    rng = np.random.default_rng(0)
    x, y = rng.random((hc, wc)), rng.random((h, w))
    px = np.zeros((h, w))
    cpu_kernels.prolong_add(x, np.ones((h, w)), px, np.empty((hc, w)), np.empty(wc + 2))
    ry = np.empty((hc, wc))
    cpu_kernels.restrict(y, np.ones((hc, wc)), ry, np.empty(w), np.empty(2 * wc + 2))
    assert np.isclose((px * y).sum(), (x * ry).sum(), rtol=1e-12)
    # Bilinear interpolation reproduces constants, and the torch solver's prolongation.
    ones = np.zeros((h, w))
    cpu_kernels.prolong_add(
        np.ones((hc, wc)), np.ones((h, w)), ones, np.empty((hc, w)), np.empty(wc + 2)
    )
    assert np.allclose(ones, 1)
    grid = torch_grids.Grid(
        torch.ones(1, 1, h, w, dtype=torch.bool),
        torch.ones(1, 1, h, w, dtype=torch.bool),
        torch.float64,
    )
    assert np.allclose(
        torch_grids._prolong(torch.from_numpy(x)[None, None], grid)[0, 0].numpy(), px
    )


@pytest.mark.slow
def test_cpu_solver_certifies_each_channel_in_few_iterations() -> None:
    """A full ROAD of a photo: every fill certified, within 1e-3 of the reference, in at most
    12 iterations per channel (about 8 are typical: a weaker preconditioner needs more)."""
    size = 64
    image = _photo("astronaut", size)
    masks = _road_masks(_blob_map(size, size, 20, 40, 12))
    groups = np.full((14, 2), -1)
    for k, group in enumerate(torch_solver.pairs(masks[:, None])):
        groups[k, : len(group)] = group
    groups = groups[(groups >= 0).any(1)]
    images = image[None].expand(14, -1, -1, -1).contiguous()
    fill, bound, norms, iterations = cpu_solver.solve(
        images.numpy(), masks.numpy(), groups, 1e-3, 100
    )
    assert len(groups) == 8 and bound.max() <= 1e-3 and (norms > 100).any()
    assert iterations[:, :3].max() <= 12
    assert not fill[~masks[:, None].expand(-1, 3, -1, -1).numpy()].any()
    for i in (0, 6, 13):
        filled = torch.where(masks[i], torch.from_numpy(fill[i]), image)
        assert (filled - _reference_fill(image, masks[i])).abs().max().item() <= 1e-3


def test_float64_images_stay_float64() -> None:
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 20, 20, dtype=torch.float64, generator=g)
    removed = torch.zeros(2, 20, 20, dtype=torch.bool)
    removed[:, 5:12, 6:15] = True
    out = noisy_linear_impute(images, removed, noise=0.0)
    assert out.dtype == torch.float64
    expected = _reference_fill(images[0].float(), removed[0])  # the reference wants float32
    assert (out[0] - expected).abs().max().item() <= 1e-3


@pytest.mark.slow
def test_concurrent_imputations_match_one_at_a_time() -> None:
    """The CPU solver runs without the GIL (the app imputes in worker threads)."""
    from concurrent.futures import ThreadPoolExecutor

    g = torch.Generator().manual_seed(8)
    jobs = [
        (
            torch.rand(4, 3, 40, 40, generator=g),
            _road_masks(_smooth_random_map(40, 40, k))[k : k + 4],
        )
        for k in range(4)
    ]
    alone = [noisy_linear_impute(images, masks, noise=0.0) for images, masks in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda job: noisy_linear_impute(*job, noise=0.0), jobs))
    assert all(torch.equal(a, b) for a, b in zip(alone, together, strict=True))


def test_torch_threads_do_not_change_the_fill() -> None:
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    masks = _road_masks(_blob_map(32, 32, 10, 20, 6))[4:10]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = noisy_linear_impute(images, masks, noise=0.0)
        torch.set_num_threads(2)
        two = noisy_linear_impute(images, masks, noise=0.0)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_noise_is_added_to_removed_pixels_only_and_seeded() -> None:
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    removed = torch.zeros(2, 32, 32, dtype=torch.bool)
    removed[:, 4:28, 4:28] = True
    clean = noisy_linear_impute(images, removed, noise=0.0)
    a = noisy_linear_impute(images, removed, noise=0.01, generator=torch.Generator().manual_seed(5))
    b = noisy_linear_impute(images, removed, noise=0.01, generator=torch.Generator().manual_seed(5))
    c = noisy_linear_impute(images, removed, noise=0.01, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    keep = ~removed[:, None].expand_as(images)
    assert torch.equal(a[keep], images[keep])
    std = (a - clean)[~keep].std().item()
    assert 0.009 < std < 0.011


def test_degenerate_masks() -> None:
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    removed = torch.zeros(3, 16, 16, dtype=torch.bool)
    removed[1] = True  # everything removed
    removed[2, 5:9, 5:9] = True
    out = noisy_linear_impute(images, removed, noise=0.0)
    assert torch.equal(out[0], images[0])
    torch.testing.assert_close(out[1], images[1].mean((1, 2), keepdim=True).expand(3, 16, 16))
    expected = _reference_fill(images[2], removed[2])
    assert (out[2] - expected).abs().max().item() <= 1e-3
    noisy = noisy_linear_impute(images[:1], removed[:1], noise=0.5)
    assert torch.equal(noisy, images[:1])


def test_single_removed_pixel_is_the_weighted_mean_of_its_neighbours() -> None:
    image = torch.arange(9.0).reshape(1, 1, 3, 3).expand(1, 3, 3, 3) / 10
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 1, 1] = True
    out = noisy_linear_impute(image, removed, noise=0.0)
    neighbours = image[0, 0].flatten()[[0, 1, 2, 3, 5, 6, 7, 8]]
    weights = torch.tensor([1, 2, 1, 2, 2, 1, 2, 1]) / 12
    assert out[0, 0, 1, 1].item() == pytest.approx((neighbours * weights).sum().item(), abs=1e-6)
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True  # 3 neighbours inside the image: weights renormalised to 1/6+1/6+1/12
    out = noisy_linear_impute(image, corner, noise=0.0)
    expected = (image[0, 0, 0, 1] / 6 + image[0, 0, 1, 0] / 6 + image[0, 0, 1, 1] / 12) / (5 / 12)
    assert out[0, 0, 0, 0].item() == pytest.approx(expected.item(), abs=1e-6)


def test_not_certified_warns() -> None:
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    removed = torch.ones(1, 32, 32, dtype=torch.bool)
    removed[0, 0, 0] = False
    with pytest.warns(RuntimeWarning, match="certify"):
        noisy_linear_impute(images, removed, noise=0.0, max_iter=1)


def test_removal_masks_counts_order_and_nesting() -> None:
    maps = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(0))
    fractions = (0.0, 0.1, 0.29, 0.5, 1.0)
    for order in ("MoRF", "LeRF"):
        masks = removal_masks(maps, fractions, order)
        assert masks.shape == (5, 3, 10, 10) and masks.dtype == torch.bool
        for f, fraction in enumerate(fractions):
            counts = masks[f].flatten(1).sum(1)
            assert counts.tolist() == [math.floor(fraction * 100 + 1e-6)] * 3
            for i in range(3):
                values = maps[i][masks[f, i]]
                rest = maps[i][~masks[f, i]]
                if len(values) and len(rest):
                    if order == "MoRF":
                        assert values.min() > rest.max()
                    else:
                        assert values.max() < rest.min()
        assert (masks[:-1] <= masks[1:]).all()


def test_removal_masks_break_ties_at_random() -> None:
    flat = torch.zeros(1, 20, 20)
    a = removal_masks(flat, [0.3], "MoRF", torch.Generator().manual_seed(0))
    b = removal_masks(flat, [0.3], "MoRF", torch.Generator().manual_seed(0))
    c = removal_masks(flat, [0.3], "MoRF", torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.sum().item() == 120
    with pytest.raises(ValueError):
        removal_masks(flat, [0.3], "morf")


def _bright_square_model(x: torch.Tensor) -> torch.Tensor:
    """Class 0 if some pixel is brighter than 0.5, else class 1."""
    top = x.amax((1, 2, 3)) - 0.5
    return torch.stack([top, torch.zeros_like(top)], 1)


def _square_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Black 16x16 images with a white square of 16 (image 0) or 64 pixels (image 1)."""
    images = torch.zeros(2, 3, 16, 16)
    images[0, :, 2:6, 3:7] = 1.0
    images[1, :, 8:16, 0:8] = 1.0
    return images, images.mean(1)


def test_road_scores_on_a_known_model() -> None:
    images, maps = _square_images()
    fractions = (0.05, 0.1, 0.2, 0.3)  # floor(f * 256) = 12, 25, 51, 76 pixels removed
    scores = road_scores(_bright_square_model, images, maps, fractions=fractions)
    # MoRF removes the square first: the prediction survives while part of the square is left
    # (12 < 16; 12, 25, 51 < 64); the imputed pixels are near 0, far below the threshold.
    assert scores["MoRF"]["accuracy"] == [1.0, 0.5, 0.5, 0.0]
    assert scores["MoRF"]["mean"] == pytest.approx(0.5)
    assert scores["MoRF"]["correct"].tolist() == [
        [True, True],
        [False, True],
        [False, True],
        [False, False],
    ]
    # LeRF removes black pixels only: the square is always there.
    assert scores["LeRF"]["accuracy"] == [1.0] * 4
    assert scores["labels"].tolist() == [0, 0]
    assert scores["fractions"] == list(fractions)
    flipped = road_scores(
        _bright_square_model, images, maps, fractions=fractions, labels=torch.tensor([1, 1])
    )
    assert flipped["MoRF"]["accuracy"] == [0.0, 0.5, 0.5, 1.0]


def test_road_scores_are_deterministic_and_independent_of_batching() -> None:
    images, maps = _square_images()
    maps = maps + torch.rand(maps.shape, generator=torch.Generator().manual_seed(0))
    kwargs = dict(fractions=(0.2, 0.6), return_images=True, seed=3)
    a = road_scores(_bright_square_model, images, maps, batch_size=3, **kwargs)
    b = road_scores(_bright_square_model, images, maps, batch_size=64, **kwargs)
    c = road_scores(
        _bright_square_model,
        images,
        maps,
        batch_size=64,
        fractions=(0.2, 0.6),
        return_images=True,
        seed=4,
    )
    for order in ("MoRF", "LeRF"):
        assert a["images"][order].shape == (2, 2, 3, 16, 16)
        # Same noise and masks; the fills agree within the solver's tolerance.
        assert (a["images"][order] - b["images"][order]).abs().max().item() <= 2e-3
        assert (a["images"][order] - c["images"][order]).abs().max().item() > 1e-2
        assert torch.equal(a[order]["correct"], b[order]["correct"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fill_on_gpu_matches_cpu() -> None:
    _, images, removed = _cases()[4]
    cpu = noisy_linear_impute(images, removed, noise=0.0)
    gpu = noisy_linear_impute(images.cuda(), removed.cuda(), noise=0.0)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max().item() <= 2e-3
