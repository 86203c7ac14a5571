import json
import warnings

import pytest
import torch

from tests.helpers import tiny_explainer
from ttame.errors import ClassIndexError, HeadError, ImageError, UntrainedHeadWarning
from ttame.explainer import Explainer, fresh_head
from ttame.hub.heads import save_head
from ttame.hub.load import load_head
from ttame.model.head import AttentionHead


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_vit"])
def test_maps_are_normalised_at_input_size_for_the_top1(name):
    explainer = tiny_explainer(name)
    images = torch.rand(3, 3, 32, 32)
    result = explainer.explain(images)
    assert result.maps.shape == (3, 32, 32)
    assert result.maps.min() >= 0 and result.maps.max() <= 1
    # docs/method.md: min-max normalise the class map, then upsample bilinearly.
    _, maps = explainer.backbone.forward_features(images)
    c = explainer.head(maps)[torch.arange(3), result.classes][:, None]
    low, high = c.amin((2, 3), keepdim=True), c.amax((2, 3), keepdim=True)
    c = (c - low) / (high - low)
    expected = torch.nn.functional.interpolate(c, size=(32, 32), mode="bilinear")[:, 0]
    assert torch.allclose(result.maps, expected, atol=1e-5)
    assert torch.equal(result.classes, result.probabilities.argmax(1))
    assert torch.allclose(result.scores, result.probabilities.max(1).values)


def test_one_backbone_pass_per_explain():
    explainer = tiny_explainer()
    calls = []
    explainer.backbone.model.register_forward_pre_hook(lambda *_: calls.append(1))
    explainer.explain(torch.rand(4, 3, 32, 32), [[0, 1, 2]] * 4)
    assert len(calls) == 1


def test_class_subsets_equal_rows_of_the_full_computation():
    explainer = tiny_explainer()
    images = torch.rand(2, 3, 32, 32)
    _, maps = explainer.backbone.forward_features(images)
    full = explainer.head(maps)  # B x K x h x w
    per_image = torch.tensor([[3, 7], [9, 0]])
    rows = full[torch.arange(2)[:, None], per_image]
    assert torch.allclose(explainer.head(maps, per_image), rows, atol=1e-5)
    shared = torch.tensor([5, 1])
    assert torch.allclose(explainer.head(maps, shared), full[:, shared], atol=1e-5)


def test_several_classes_per_image_and_one_for_all():
    explainer = tiny_explainer()
    images = torch.rand(2, 3, 32, 32)
    several = explainer.explain(images, [[1, 2, 3], [4, 5, 6]])
    assert several.maps.shape == (2, 3, 32, 32)
    single = explainer.explain(images, 2)
    assert torch.equal(single.classes, torch.tensor([2, 2]))
    assert torch.allclose(single.maps[0], several.maps[0, 1])


def test_top_k_explains_the_most_probable_classes_from_one_pass():
    explainer = tiny_explainer()
    images = torch.rand(2, 3, 32, 32)
    calls = []
    explainer.backbone.model.register_forward_pre_hook(lambda *_: calls.append(1))
    top = explainer.explain(images, top=3)
    assert len(calls) == 1
    ranked = top.probabilities.argsort(dim=1, descending=True)[:, :3]
    assert torch.equal(top.classes, ranked)
    assert torch.allclose(top.maps, explainer.explain(images, ranked).maps)
    assert torch.equal(explainer.explain(images, top=1).maps[:, 0], explainer.explain(images).maps)


@pytest.mark.parametrize("top", [0, 11])
def test_top_k_out_of_range_or_with_classes_is_refused(top):
    explainer = tiny_explainer()
    with pytest.raises(ClassIndexError, match="top"):
        explainer.explain(torch.rand(1, 3, 32, 32), top=top)
    with pytest.raises(ClassIndexError, match="not both"):
        explainer.explain(torch.rand(1, 3, 32, 32), 1, top=2)


@pytest.mark.parametrize("bad", [10, -1, [0, 11], 1.5])
def test_bad_class_indices_are_refused(bad):
    with pytest.raises(ClassIndexError):
        tiny_explainer().explain(torch.rand(2, 3, 32, 32), bad)


def test_class_names_resolve():
    explainer = tiny_explainer()
    assert explainer.class_index("Thing 3") == 3
    assert explainer.class_index("7") == 7
    with pytest.raises(ClassIndexError, match="Unknown class name"):
        explainer.class_index("zebra")


@pytest.mark.parametrize(
    "images",
    [
        torch.full((1, 3, 32, 32), float("nan")),
        torch.rand(1, 1, 32, 32),
        torch.rand(1, 3, 32, 32) * 5,
        torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
    ],
)
def test_bad_image_tensors_are_refused(images):
    with pytest.raises(ImageError):
        tiny_explainer().explain(images)


def test_works_under_bf16_autocast():
    explainer = tiny_explainer()
    images = torch.rand(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = explainer.explain(images)
    reference = explainer.explain(images, result.classes)
    assert result.maps.dtype == torch.float32
    assert (result.maps - reference.maps).abs().mean() < 0.05


def test_save_and_load_round_trip_is_bit_exact(tmp_path):
    explainer = tiny_explainer("tiny_vit")
    explainer.save_pretrained(tmp_path / "head")
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "head").iterdir()}
    loaded = Explainer.from_pretrained(tmp_path / "head", pretrained_backbone=False)
    assert loaded.trained and loaded.spec.name == "tiny_vit"
    for (name, a), (_, b) in zip(
        explainer.head.state_dict().items(), loaded.head.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(explainer.explain(images).maps, loaded.explain(images).maps)


def test_a_head_that_multiplies_by_the_class_token_keeps_it_through_its_file(tmp_path):
    explainer = tiny_explainer("tiny_vit", tokens="patches_times_class")
    assert explainer.head.tokens == "patches_times_class"
    explainer.save_pretrained(tmp_path / "head")
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["tokens"] == "patches_times_class"
    loaded = Explainer.from_pretrained(tmp_path / "head", pretrained_backbone=False)
    assert loaded.head.tokens == loaded.backbone.tokens == "patches_times_class"
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(explainer.explain(images).maps, loaded.explain(images).maps)
    _, product = loaded.backbone.forward_features(images)
    loaded.backbone.tokens = "patches"
    _, patches = loaded.backbone.forward_features(images)
    assert not torch.allclose(product[0], patches[0])  # the field changes what the head sees


def test_a_head_file_without_tokens_loads_as_before(tmp_path):
    explainer = tiny_explainer("tiny_vit")
    explainer.save_pretrained(tmp_path / "head")
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert set(config) == {"backbone", "layers", "in_channels", "num_classes", "max_size"}
    loaded = Explainer.from_pretrained(tmp_path / "head", pretrained_backbone=False)
    assert loaded.head.tokens == loaded.backbone.tokens == "patches"
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(explainer.explain(images).maps, loaded.explain(images).maps)


def test_a_cnn_head_that_multiplies_by_the_class_token_is_refused(tmp_path):
    layers = ["stage1", "stage2", "stage3"]
    head = AttentionHead("tiny_cnn", layers, [4, 6, 8], 10, tokens="patches_times_class")
    save_head(head, tmp_path / "head")
    with pytest.raises(HeadError, match="not token layers with a class token"):
        Explainer.from_pretrained(tmp_path / "head", pretrained_backbone=False)
    model = tiny_explainer("tiny_cnn").backbone.model
    with pytest.raises(HeadError, match="not token layers with a class token"):
        Explainer.for_model(model, layers, name="tiny_cnn", head=head)
    with pytest.raises(HeadError, match="Unknown tokens 'class_only'"):
        AttentionHead("tiny_cnn", layers, [4, 6, 8], 10, tokens="class_only")  # type: ignore[arg-type]


def test_a_head_for_another_backbone_is_refused(tmp_path):
    tiny_explainer("tiny_cnn").save_pretrained(tmp_path / "head")
    with pytest.raises(HeadError, match="trained for backbone 'tiny_cnn'"):
        Explainer.from_pretrained(tmp_path / "head", backbone="tiny_vit", pretrained_backbone=False)


def test_a_head_whose_shapes_do_not_fit_is_refused():
    explainer = tiny_explainer()
    explainer.head = AttentionHead("tiny_cnn", ["stage1", "stage2", "stage3"], [4, 6, 9], 10)
    with pytest.raises(HeadError, match="does not fit"):
        explainer.explain(torch.rand(1, 3, 32, 32))


def test_missing_or_malformed_head_sources(tmp_path):
    with pytest.raises(HeadError, match="lacks"):
        load_head(tmp_path)
    with pytest.raises(HeadError, match="neither a head folder nor"):
        load_head("not a repo id!")


def test_an_untrained_head_warns_loudly():
    explainer = Explainer.from_pretrained(backbone="tiny_cnn", pretrained_backbone=False)
    assert not explainer.trained
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explainer.explain(torch.rand(1, 3, 32, 32))
    assert any(issubclass(w.category, UntrainedHeadWarning) for w in caught)


def test_fused_size_is_the_largest_map_capped():
    body = tiny_explainer().backbone
    head = fresh_head(body)
    maps = [torch.rand(1, 4, 80, 60), torch.rand(1, 6, 10, 10), torch.rand(1, 8, 5, 5)]
    assert head.fused_size(maps) == (56, 56)
    assert head(maps).shape == (1, 10, 56, 56)


def test_head_equals_resize_concatenate_fuse():
    """The method's order (docs/method.md): branch, resize to the fused size, concatenate,
    fuse. The head projects onto the requested classes first and resizes only their maps,
    which must give the same maps."""
    head = fresh_head(tiny_explainer().backbone).eval()
    torch.nn.init.normal_(head.fuser.weight)
    torch.nn.init.normal_(head.fuser.bias)
    maps = [torch.rand(2, 4, 80, 60), torch.rand(2, 6, 10, 10), torch.rand(2, 8, 5, 5)]
    size = head.fused_size(maps)
    features = torch.cat(
        [
            torch.nn.functional.interpolate(branch(x), size=size, mode="bilinear")
            for branch, x in zip(head.branches, maps, strict=True)
        ],
        1,
    )
    expected = head.fuser(features)
    with torch.no_grad():
        assert torch.allclose(head(maps), expected, atol=1e-4)
        assert torch.allclose(head(maps, torch.tensor([3, 1])), expected[:, [3, 1]], atol=1e-4)
        per_image = torch.tensor([[0, 9], [5, 5]])
        assert torch.allclose(
            head(maps, per_image), expected[torch.arange(2)[:, None], per_image], atol=1e-4
        )
