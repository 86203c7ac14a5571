import math

import pytest
import torch

from ttame.training.losses import AREA_EPS, TTameLoss, area_loss, smoothness_loss


def test_area_loss_hand_computed():
    masks = torch.tensor([0.0, 1.0, 0.5, 0.25]).view(1, 1, 2, 2)
    expected = sum((v + AREA_EPS) ** 0.3 for v in (0.0, 1.0, 0.5, 0.25)) / 4
    assert area_loss(masks).item() == pytest.approx(expected, rel=1e-6)


def test_area_loss_favours_sparse_masks():
    # Same total mass: one bright pixel costs less than the mass spread thinly (power < 1).
    sparse = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    spread = torch.full((1, 1, 2, 2), 0.25)
    assert area_loss(sparse) < area_loss(spread)


def test_smoothness_loss_hand_computed():
    # One bright corner in a 2x2 mask: two unit differences, the corner lies on two edges.
    masks = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    assert smoothness_loss(masks).item() == pytest.approx((1 + 1 + 0.3 * 2) / 2)


def test_smoothness_loss_3x3_centre_and_border_weight():
    masks = torch.zeros(1, 1, 3, 3)
    masks[0, 0, 1, 1] = 0.5
    # Four differences of 0.5 around the centre, nothing on the border.
    assert smoothness_loss(masks, border=0.3).item() == pytest.approx(4 * 0.25 / 2)
    assert smoothness_loss(masks, border=10.0).item() == pytest.approx(4 * 0.25 / 2)
    edge = torch.zeros(1, 1, 3, 3)
    edge[0, 0, 0, 1] = 1.0
    # Three differences of 1, one top-edge value of 1.
    assert smoothness_loss(edge, border=0.0).item() == pytest.approx(3 / 2)
    assert smoothness_loss(edge, border=1.0).item() == pytest.approx(4 / 2)


def test_smoothness_loss_sums_masks_and_divides_by_batch():
    one = torch.rand(1, 3, 5, 5)
    assert smoothness_loss(one.repeat(4, 1, 1, 1)).item() == pytest.approx(
        smoothness_loss(one).item(), rel=1e-5
    )
    two_masks = torch.cat([one[:, :1], one[:, :1]], dim=1)
    assert smoothness_loss(two_masks).item() == pytest.approx(
        2 * smoothness_loss(one[:, :1]).item(), rel=1e-5
    )


def test_total_is_the_weighted_sum():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    labels = torch.tensor([1, 1])
    masks = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2).repeat(2, 2, 1, 1)
    terms = TTameLoss()(logits, labels, masks)
    ce = (-math.log(0.75) - math.log(0.25)) / 2
    area = ((1 + AREA_EPS) ** 0.3 + 3 * AREA_EPS**0.3) / 4
    tv = 2 * 2 * 2.6 / (2 * 2)
    assert terms.ce.item() == pytest.approx(ce, rel=1e-6)
    assert terms.area.item() == pytest.approx(area, rel=1e-6)
    assert terms.tv.item() == pytest.approx(tv, rel=1e-6)
    assert terms.total.item() == pytest.approx(1.5 * ce + 2 * area + 0.01 * tv, rel=1e-6)
    custom = TTameLoss(ce_weight=1.0, area_weight=0.0, tv_weight=1.0)(logits, labels, masks)
    assert custom.total.item() == pytest.approx(ce + tv, rel=1e-6)


def test_area_gradient_is_finite_at_zero():
    masks = torch.zeros(1, 1, 2, 2, requires_grad=True)
    area_loss(masks).backward()
    assert torch.isfinite(masks.grad).all()
    assert (masks.grad > 0).all()
