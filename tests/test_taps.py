import pytest
import torch

from ttame.errors import BackboneError
from ttame.model.registry import get_spec
from ttame.model.taps import build_backbone, infer_grid, tokens_to_grid


@pytest.mark.parametrize(
    ("tokens", "image_hw", "grid"),
    [
        (196, (224, 224), (14, 14)),
        (280, (224, 320), (14, 20)),
        (280, (320, 224), (20, 14)),
        (24, (32, 48), (4, 6)),
        (7, (10, 70), (1, 7)),
    ],
)
def test_infer_grid_follows_the_aspect_ratio(tokens, image_hw, grid):
    assert infer_grid(tokens, image_hw) == grid


def test_adapter_drops_prefix_tokens_and_lays_out_row_major():
    batch, prefix, h, w, dim = 2, 5, 3, 4, 6
    patches = torch.arange(batch * h * w * dim, dtype=torch.float32).view(batch, h * w, dim)
    tokens = torch.cat([torch.full((batch, prefix, dim), -1.0), patches], dim=1)
    grid = tokens_to_grid(tokens, prefix, (30, 40))
    assert grid.shape == (batch, dim, h, w)
    assert torch.equal(grid[1, :, 2, 3], patches[1, 2 * w + 3])
    assert (grid >= 0).all()


def test_adapter_can_multiply_the_patches_by_the_class_token():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 3 + 12, 5, generator=generator)  # class, two registers, 3x4 patches
    grid = tokens_to_grid(tokens, 3, (30, 40), "patches_times_class")
    plain = tokens_to_grid(tokens, 3, (30, 40))
    assert torch.equal(grid, plain * tokens[:, 0, :, None, None])
    assert torch.equal(grid[1, :, 2, 3], tokens[1, 3 + 2 * 4 + 3] * tokens[1, 0])
    with pytest.raises(BackboneError, match="needs a class token"):
        tokens_to_grid(tokens, 0, (30, 40), "patches_times_class")


def test_vit_taps_become_maps_on_non_square_inputs():
    body = build_backbone(get_spec("tiny_vit"), pretrained=False)
    logits, maps = body.forward_features(torch.rand(2, 3, 32, 48))
    assert logits.shape == (2, 10)
    assert [tuple(m.shape) for m in maps] == [(2, 12, 4, 6)] * 3


def test_cnn_taps_and_logits_match_the_plain_forward():
    body = build_backbone(get_spec("tiny_cnn"), pretrained=False)
    images = torch.rand(2, 3, 32, 32)
    logits, maps = body.forward_features(images)
    assert [tuple(m.shape[1:]) for m in maps] == [(4, 16, 16), (6, 8, 8), (8, 4, 4)]
    assert torch.allclose(logits, body(images))


def test_unknown_layer_names_close_matches():
    with pytest.raises(BackboneError, match="stage2"):
        build_backbone(get_spec("tiny_cnn"), pretrained=False, layers=("stage_2",))


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(BackboneError, match=r"Unknown backbone 'mobilenet_v3'.*mobilenet_v2"):
        get_spec("mobilenet_v3")
