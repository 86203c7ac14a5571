import math

import numpy as np
import pytest
import torch

from tests.helpers import tiny_explainer
from ttame.evaluation.sanity import cascade, cascading_randomization, randomized, spearman
from ttame.evaluation.summary import bootstrap_interval
from ttame.methods.registry import METHODS
from ttame.metrics.localisation import box_mask, coverage, energy_in_mask, pointing_game
from ttame.metrics.perturbation import (
    average_drop,
    increase_in_confidence,
    keep_top,
    masked_confidence,
    masked_images,
)

# A 4 x 4 map whose 16 values are 0, 1/15, ..., 15/15 in raster order.
RAMP = (torch.arange(16, dtype=torch.float32) / 15).reshape(1, 4, 4)


def mean_classifier(images: torch.Tensor) -> torch.Tensor:
    """Two classes: logit 0 is 4 x the image's mean pixel, logit 1 is the constant 2."""
    mean = images.mean(dim=(1, 2, 3))
    return torch.stack([4 * mean, torch.full_like(mean, 2.0)], dim=1)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_keep_top_zeroes_below_the_percentile_and_keeps_soft_values():
    # 50 % kept: the median of 0..15 (/15) interpolates to 7.5/15, so 8/15..15/15 survive.
    kept = keep_top(RAMP, 50)
    expected = torch.where(RAMP >= 7.5 / 15, RAMP, torch.zeros(()))
    assert torch.allclose(kept, expected)
    assert torch.allclose(keep_top(RAMP, 100), RAMP)  # everything kept, soft
    assert int((keep_top(RAMP, 25) > 0).sum()) == 4


def test_keep_top_normalises_the_map_first():
    squeezed = 0.2 + 0.4 * RAMP  # values in [0.2, 0.6]
    assert torch.allclose(keep_top(squeezed, 100), RAMP, atol=1e-6)


def test_masked_images_multiply_the_raw_image_once_per_percentage():
    images = torch.full((1, 3, 4, 4), 0.5)
    out = masked_images(images, RAMP, (100, 50))
    assert out.shape == (2, 1, 3, 4, 4)
    assert torch.allclose(out[0, 0, 1], 0.5 * RAMP[0])


def test_ad_and_ic_match_a_hand_computation():
    # Image A (all ones): class 0, Y = sigmoid(4 - 2). Kept 100 %: mean 8/16 -> O = sigmoid(0).
    # Kept 50 %: mean (8 + ... + 15) / 15 / 16 = 92/240 -> O = sigmoid(4 * 92/240 - 2).
    # Image B (all 0.4): class 1, Y = sigmoid(2 - 1.6); masking lowers the mean, so O > Y.
    images = torch.stack([torch.ones(3, 4, 4), torch.full((3, 4, 4), 0.4)])
    maps = RAMP.expand(2, 4, 4)
    classes = mean_classifier(images).argmax(1)
    assert classes.tolist() == [0, 1]
    clean = mean_classifier(images).softmax(1).gather(1, classes[:, None])[:, 0]
    masked = masked_confidence(mean_classifier, images, maps, classes, (100, 50))
    y_a, y_b = sigmoid(2.0), sigmoid(0.4)
    o_a = [sigmoid(0.0), sigmoid(4 * 92 / 240 - 2)]
    o_b = [sigmoid(2 - 4 * 0.4 * 0.5), sigmoid(2 - 4 * 0.4 * 92 / 240)]
    assert masked.flatten().tolist() == pytest.approx(o_a + o_b, abs=1e-6)
    drop = average_drop(clean, masked)
    assert drop.tolist() == pytest.approx([100 * (y_a - o) / y_a / 2 for o in o_a], abs=1e-4)
    assert increase_in_confidence(clean, masked).tolist() == [50.0, 50.0]
    assert y_b < o_b[0]


def test_all_percentages_go_through_one_classifier_call():
    calls = []

    def counting(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return mean_classifier(images)

    images = torch.rand(3, 3, 4, 4)
    masked_confidence(counting, images, RAMP.expand(3, 4, 4), torch.zeros(3, dtype=torch.long))
    assert calls == [9]  # 3 images x 3 default percentages


def test_pointing_game_on_hand_made_maps():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True  # top-left quarter
    inside = torch.zeros(1, 4, 4)
    inside[0, 1, 1] = 1.0
    outside = torch.zeros(1, 4, 4)
    outside[0, 3, 3] = 1.0
    assert pointing_game(inside, mask).tolist() == [1.0]
    assert pointing_game(outside, mask).tolist() == [0.0]
    # A flat map: every pixel is a maximum, a quarter of them inside.
    assert pointing_game(torch.ones(1, 4, 4), mask).tolist() == [0.25]
    assert coverage(mask).tolist() == [0.25]


def test_energy_in_mask_on_hand_made_maps():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2] = True  # top half
    left = torch.zeros(1, 4, 4)
    left[0, :, :2] = 1.0  # mass in the left half: half of it in the top half
    assert energy_in_mask(left, mask).tolist() == [0.5]
    top = torch.zeros(1, 4, 4)
    top[0, 0] = 0.3
    top[0, 3] = 0.1
    assert energy_in_mask(top, mask).tolist() == pytest.approx([0.75])
    assert energy_in_mask(torch.zeros(1, 4, 4), mask).tolist() == [0.5]  # flat: chance


def test_box_mask_has_exclusive_ends_and_clips():
    mask = box_mask((1, 0, 3, 2), (4, 4))
    assert mask.sum() == 4 and mask[0, 1] and mask[1, 2] and not mask[2, 1] and not mask[0, 3]
    assert box_mask((-5, -5, 99, 99), (4, 4)).all()


def test_localisation_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        pointing_game(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5, dtype=torch.bool))


def test_spearman_of_identical_reversed_and_flat_maps():
    a = torch.rand(2, 8, 8)
    assert spearman(a, a).tolist() == pytest.approx([1.0, 1.0])
    assert spearman(a, 1 - a).tolist() == pytest.approx([-1.0, -1.0])
    assert spearman(a, 3 * a**2).tolist() == pytest.approx([1.0, 1.0])  # ranks only
    assert math.isnan(float(spearman(a[:1], torch.zeros(1, 8, 8))[0]))


def test_cascade_steps_follow_the_taps():
    steps = cascade(tiny_explainer().backbone)
    assert [(s.name, s.modules) for s in steps] == [
        ("classifier", ("fc",)),
        ("last stage", ("stage3.0", "fc")),
        ("last two stages", ("stage2.0", "stage3.0", "fc")),
    ]


def test_randomized_copy_changes_only_the_named_modules():
    body = tiny_explainer().backbone
    before = {k: v.clone() for k, v in body.model.state_dict().items()}
    copy = randomized(body, ("fc",), seed=1)
    for key, value in body.model.state_dict().items():
        assert torch.equal(value, before[key])  # the original is untouched
    after = copy.model.state_dict()
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    assert torch.equal(after["stage3.0.weight"], before["stage3.0.weight"])
    assert not any(p.requires_grad for p in copy.parameters())


def test_sanity_separates_model_dependent_maps_from_a_prior():
    explainer = tiny_explainer()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ttame = cascading_randomization(explainer, METHODS["ttame"], images)
    # The head reads the taps, not the classifier: classifier randomisation cannot move it ...
    assert ttame["classifier"].tolist() == pytest.approx([1.0] * 3)
    # ... but randomising the stages it taps does.
    assert float(ttame["last two stages"].mean()) < 0.99
    centre = cascading_randomization(explainer, METHODS["centre"], images)
    assert all(rho.tolist() == pytest.approx([1.0] * 3) for rho in centre.values())


def test_bootstrap_interval_brackets_the_mean_and_repeats():
    values = np.random.default_rng(0).normal(5.0, 1.0, size=40)
    low, high = bootstrap_interval(values, resamples=500, seed=3)
    assert low < values.mean() < high
    assert high - low < 1.5  # about 4 standard errors wide at most
    assert (low, high) == bootstrap_interval(values, resamples=500, seed=3)
    assert bootstrap_interval(np.full(10, 2.0)) == (2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_interval(np.array([])))
