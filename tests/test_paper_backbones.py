"""The paper's backbones (random weights): tap shapes, head shapes, weights from local files."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from safetensors.torch import save_file

from ttame.errors import WeightsUnavailableError
from ttame.model.backbones import build_classifier
from ttame.model.head import AttentionHead
from ttame.model.registry import get_spec
from ttame.model.taps import build_backbone, probe_spec
from ttame.model.weights import WeightsSource, resolve_state_dict

pytestmark = pytest.mark.slow  # the real networks (random or real weights)

PAPER_TAPS = {
    "vgg16": [(256, 28, 28), (512, 14, 14), (512, 7, 7)],
    "resnet50": [(512, 28, 28), (1024, 14, 14), (2048, 7, 7)],
    "vit_b_16": [(768, 14, 14)] * 3,
}


@pytest.mark.parametrize("name", list(PAPER_TAPS))
def test_paper_backbone_taps_and_head_shapes(name):
    spec = get_spec(name)
    torch.manual_seed(0)
    body = build_backbone(spec, pretrained=False)
    with torch.no_grad():
        logits, maps = body.forward_features(torch.rand(1, 3, 224, 224))
    assert [tuple(m.shape[1:]) for m in maps] == PAPER_TAPS[name]
    assert logits.shape == (1, 1000)
    channels = [c for c, _, _ in PAPER_TAPS[name]]
    shapes = probe_spec(spec)  # the weightless (meta) dry run agrees
    assert (shapes.channels, shapes.num_classes) == (channels, 1000)

    head = AttentionHead(name, list(spec.taps), channels, 1000).eval()
    side = PAPER_TAPS[name][0][1]
    with torch.no_grad():
        assert head(maps).shape == (1, 1000, side, side)
        assert head(maps, torch.tensor([[3, 7]])).shape == (1, 2, side, side)


@pytest.fixture(scope="module")
def resnet50_state():
    torch.manual_seed(1)
    return build_classifier(get_spec("resnet50"), pretrained=False).state_dict()


def _assert_same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_resnet50_weights_from_safetensors_and_pth(tmp_path, resnet50_state):
    spec = get_spec("resnet50")
    save_file(resnet50_state, tmp_path / "resnet50.safetensors")
    _assert_same(build_classifier(spec, tmp_path / "resnet50.safetensors"), resnet50_state)

    torch.save(resnet50_state, tmp_path / "resnet50.pth")
    _assert_same(build_classifier(spec, tmp_path / "resnet50.pth"), resnet50_state)


def test_wrapped_and_prefixed_checkpoints_load(tmp_path, resnet50_state):
    spec = get_spec("resnet50")
    ddp = {f"module.{k}": v for k, v in resnet50_state.items()}
    torch.save({"state_dict": ddp, "epoch": 3}, tmp_path / "ddp.pth")
    _assert_same(build_classifier(spec, tmp_path / "ddp.pth"), resnet50_state)

    compiled = {f"_orig_mod.{k}": v for k, v in resnet50_state.items()}
    save_file(compiled, tmp_path / "compiled.safetensors")
    _assert_same(build_classifier(spec, tmp_path / "compiled.safetensors"), resnet50_state)

    # A training checkpoint that keeps the frozen backbone beside a head, under its own prefix.
    lightning = {f"generic.body.{k}": v for k, v in resnet50_state.items()}
    lightning["generic.attn_mech.fuser.weight"] = torch.zeros(4, 3584, 1, 1)
    torch.save({"state_dict": lightning, "hyper_parameters": {"lr": 1e-3}}, tmp_path / "x.ckpt")
    _assert_same(build_classifier(spec, tmp_path / "x.ckpt"), resnet50_state)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    save_file({"conv.weight": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(WeightsUnavailableError, match="do not fit backbone 'resnet50'"):
        build_classifier(get_spec("resnet50"), tmp_path / "other.safetensors")


def test_missing_weights_name_both_ways_quickly(tmp_path):
    def offline() -> dict:
        raise OSError("network unreachable")

    spec = dataclasses.replace(get_spec("vgg16"), weights=WeightsSource(download=offline))
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_state_dict(spec.name, spec.weights)
    message = str(caught.value)
    assert "--weights PATH" in message and "connect to the network" in message
    assert "network unreachable" in message
    assert time.perf_counter() - start < 1
    with pytest.raises(WeightsUnavailableError, match="not found"):
        build_classifier(spec, tmp_path / "absent.pth")


def _register_tokens_vit(monkeypatch: pytest.MonkeyPatch) -> None:
    """``timm/vit_tiny_patch16_224`` built with a class token, 4 registers, any input size."""
    import timm

    create = timm.create_model

    def with_registers(name: str, **kwargs: object) -> torch.nn.Module:
        if name == "vit_tiny_patch16_224":
            kwargs = {"reg_tokens": 4, "dynamic_img_size": True, **kwargs}
        return create(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", with_registers)


def test_timm_vit_with_register_tokens_default_taps(monkeypatch):
    _register_tokens_vit(monkeypatch)
    spec = get_spec("timm/vit_tiny_patch16_224")
    assert spec.kind == "vit" and spec.num_prefix_tokens == 5
    assert spec.taps == ("blocks.9.norm1", "blocks.10.norm1", "blocks.11.norm1")
    torch.manual_seed(0)
    body = build_backbone(spec, pretrained=False)
    head = AttentionHead(spec.name, list(spec.taps), [192] * 3, 1000).eval()
    captured = {}
    body.model.blocks[11].norm1.register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("tokens", out)
    )
    for height, width, grid in [(224, 224, (14, 14)), (160, 224, (10, 14))]:
        with torch.no_grad():
            _, maps = body.forward_features(torch.rand(2, 3, height, width))
            class_maps = head(maps, torch.tensor([[1, 2], [3, 4]]))
        assert [tuple(m.shape) for m in maps] == [(2, 192, *grid)] * 3
        # The map is the patch tokens laid on the grid: the 5 prefix tokens are gone.
        patches = captured["tokens"][:, 5:].transpose(1, 2).reshape(2, 192, *grid)
        assert torch.equal(maps[2], patches)
        assert class_maps.shape == (2, 2, *grid)


def test_timm_registered_model_with_a_register_and_no_class_token():
    spec = get_spec("timm/test_vit2")
    assert spec.kind == "vit" and spec.num_prefix_tokens == 1
    body = build_backbone(spec, pretrained=False)
    with torch.no_grad():
        _, maps = body.forward_features(torch.rand(1, 3, 96, 160))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 6, 10)] * 3
