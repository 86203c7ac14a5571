import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import tiny_explainer
from ttame.errors import ClassIndexError, UnknownMethodError
from ttame.explanation import normalize_maps
from ttame.methods.cam import GradCAM, ScoreCAM
from ttame.methods.floors import CentreGaussian, RandomMap
from ttame.methods.registry import METHODS, MapMaker, MethodOptions, build_method, parse_methods
from ttame.methods.rise import RISE
from ttame.model.backbones import BackboneSpec
from ttame.model.taps import Backbone

FAST = MethodOptions(rise_masks=40, batch_size=32)


def _spec(name: str, build, taps: tuple[str, ...]) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        build=build,
        taps=taps,
        kind="cnn",
        categories=lambda: [f"c{i}" for i in range(10)],
        input_size=32,
        resize_size=36,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )


class SharedActivation(nn.Module):
    """One ReLU module called twice per pass, like EfficientNet-Lite's ``_swish``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, 2, 1)
        self.conv2 = nn.Conv2d(4, 6, 3, 2, 1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class TopLeftModel(nn.Module):
    """Class 0's logit is 8 x the mean of the top-left quarter; class 1's is the constant 4."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = self.body(x)[:, :, :16, :16].mean(dim=(1, 2, 3))
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 8 * region
        logits[:, 1] = 4.0
        return logits


def _library_scaling(cam: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's output: min-max, bilinear upsampling to 32 x 32, min-max again."""
    up = normalize_maps(cam[:, None], (32, 32))[:, 0]
    low, high = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    return (up - low) / (high - low)


def _frozen(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("backbone", ["tiny_cnn", "tiny_vit"])
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_answers_the_same_interface(backbone, name):
    explainer = tiny_explainer(backbone)
    maker = build_method(name, explainer, FAST)
    assert isinstance(maker, MapMaker)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    result = maker.explain(images)
    assert result.maps.shape == (3, 32, 32)
    assert result.maps.dtype == torch.float32 and result.maps.device == images.device
    assert float(result.maps.min()) >= 0.0 and float(result.maps.max()) <= 1.0
    logits = explainer.backbone(images)
    assert torch.equal(result.classes, logits.argmax(1))
    assert torch.allclose(result.probabilities, logits.softmax(1), atol=1e-5)
    several = maker.explain(images, [[1, 2], [3, 4], [5, 6]])
    assert several.maps.shape == (3, 2, 32, 32)
    assert several.classes.tolist() == [[1, 2], [3, 4], [5, 6]]
    with pytest.raises(ClassIndexError):
        maker.explain(images, 10)


def test_gradcam_uses_the_last_tap():
    # tiny_cnn: logits = fc(mean(stage3)); d logit_c / d A_k = W[c, k] / (h w) everywhere, so
    # Grad-CAM's channel weights are W[c] / (h w) and the map is relu(sum_k W[c, k] A_k) up to
    # a positive factor.
    explainer = tiny_explainer()
    body = explainer.backbone
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    result = GradCAM(body).explain(images, [3, 7])
    _, maps = body.forward_features(images)
    weights = body.model.fc.weight[torch.tensor([3, 7])]
    cam = F.relu(torch.einsum("bk,bkhw->bhw", weights, maps[-1]))
    assert torch.allclose(result.maps, _library_scaling(cam), atol=1e-5)


def test_gradcam_uses_the_last_call_of_a_module_called_twice():
    model = _frozen(SharedActivation())
    body = Backbone(model, _spec("shared", SharedActivation, ("conv1", "act")))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    result = GradCAM(body).explain(images, [0, 5])
    last = model.act(model.conv2(model.act(model.conv1(images))))  # 6 x 8 x 8
    weights = model.fc.weight[torch.tensor([0, 5])]
    cam = F.relu(torch.einsum("bk,bkhw->bhw", weights, last))
    assert torch.allclose(result.maps, _library_scaling(cam), atol=1e-5)


def test_gradcam_leaves_the_backbone_frozen_and_hook_free():
    body = tiny_explainer().backbone
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in body.model.modules()]
    with torch.no_grad():
        GradCAM(body).explain(torch.rand(1, 3, 32, 32))
    assert [
        len(m._forward_hooks) + len(m._forward_pre_hooks) for m in body.model.modules()
    ] == hooks
    assert not any(p.requires_grad for p in body.parameters())


def test_rise_finds_the_region_the_model_reads_and_repeats_with_its_seed():
    body = Backbone(_frozen(TopLeftModel()), _spec("top_left", TopLeftModel, ("body",)))
    images = torch.ones(1, 3, 32, 32)
    saliency = RISE(body, n_masks=300, seed=0, batch_size=100).explain(images).maps[0]
    assert float(saliency[:16, :16].mean()) > float(saliency[16:, 16:].mean()) + 0.3
    again = RISE(body, n_masks=300, seed=0, batch_size=7).explain(images).maps[0]
    assert torch.allclose(saliency, again, atol=1e-5)  # same masks whatever the batching
    other = RISE(body, n_masks=300, seed=1, batch_size=100).explain(images).maps[0]
    assert not torch.allclose(saliency, other)


def test_rise_rejects_bad_settings():
    body = tiny_explainer().backbone
    with pytest.raises(ValueError):
        RISE(body, n_masks=0)
    with pytest.raises(ValueError):
        RISE(body, p=1.0)


def test_floors_random_repeats_with_its_seed_and_centre_peaks_in_the_middle():
    body = tiny_explainer().backbone
    images = torch.rand(2, 3, 32, 32)
    first = RandomMap(body, seed=4).explain(images).maps
    assert torch.equal(first, RandomMap(body, seed=4).explain(images).maps)
    assert not torch.equal(first[0], first[1])
    centre = CentreGaussian(body).explain(images).maps[0]
    assert float(centre[15:17, 15:17].min()) == pytest.approx(1.0)
    assert float(centre[0, 0]) == pytest.approx(0.0)
    assert torch.allclose(centre, centre.flip(0)) and torch.allclose(centre, centre.T)


def test_scorecam_prints_no_progress_bars(capsys):
    ScoreCAM(tiny_explainer().backbone).explain(torch.rand(2, 3, 32, 32))
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_registry_names_and_errors():
    assert parse_methods("ttame, gradcam,ttame") == ["ttame", "gradcam"]
    with pytest.raises(UnknownMethodError, match="gradcam"):
        parse_methods("gradcm")
    with pytest.raises(UnknownMethodError):
        parse_methods(" , ")
    explainer = tiny_explainer()
    assert build_method("ttame", explainer) is explainer
